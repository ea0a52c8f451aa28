//! Decisions about named limits shared by every worker: what a limit allows, which limit
//! governs a key, the keys a task holds (its key templates filled from its input), whether an
//! attempt may start under them, and the reason a waiting task shows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Longest limit name or key.
pub const MAX_KEY_LEN: usize = 200;

/// A limit as stored: how many attempts holding its key may run at once, and how many may start
/// in any `per`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// The key it limits, or `prefix*`: the default of every key with that prefix.
    pub name: String,
    /// Most attempts holding the key running at once; `None` for no cap.
    pub concurrency: Option<u32>,
    /// Most attempts holding the key that start in any `per`; `None` for no rate.
    pub rate: Option<u32>,
    /// The window of `rate`.
    pub per: Duration,
}

impl Limit {
    /// A checked limit; the message names the bad value and what is allowed.
    pub fn new(
        name: &str,
        concurrency: Option<i64>,
        rate: Option<i64>,
        per: f64,
    ) -> Result<Self, String> {
        check_name(name)?;
        let count = |what: &str, value: Option<i64>| -> Result<Option<u32>, String> {
            match value {
                None => Ok(None),
                Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Ok(Some(n as u32)),
                Some(n) => Err(format!(
                    "{what}={n} is not allowed; give a whole number of at least 1, or None for no {what}"
                )),
            }
        };
        let concurrency = count("concurrency", concurrency)?;
        let rate = count("rate", rate)?;
        if !per.is_finite() || per <= 0.0 || per > MAX_PER.as_secs_f64() {
            return Err(format!(
                "per={per} is not allowed; give the rate's window in seconds, more than 0 and at most {}",
                MAX_PER.as_secs()
            ));
        }
        Ok(Self {
            name: name.to_string(),
            concurrency,
            rate,
            per: Duration::from_secs_f64(per),
        })
    }

    /// Whether this limit is the default of the keys starting with its name's prefix.
    pub fn is_default(&self) -> bool {
        self.name.ends_with('*')
    }

    /// The time between two starts its rate allows: starts are spaced evenly, so at most
    /// `rate` start in any `per`.
    pub fn spacing(&self) -> Option<Duration> {
        // Rounded up, so `rate` spacings never add up to less than `per`.
        self.rate
            .map(|rate| Duration::from_nanos(self.per.as_nanos().div_ceil(u128::from(rate)) as u64))
    }
}

/// Longest window a rate may have: a week.
pub const MAX_PER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks a limit name or a filled key: not empty, at most [`MAX_KEY_LEN`] bytes, no control
/// characters, and `*` only as the last character.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a limit name may not be empty".to_string());
    }
    if name.len() > MAX_KEY_LEN {
        return Err(format!(
            "limit name {:?}... is {} bytes long; at most {MAX_KEY_LEN} are allowed",
            name.chars().take(40).collect::<String>(),
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("limit name {name:?} contains a control character"));
    }
    if name[..name.len() - 1].contains('*') {
        return Err(format!(
            "limit name {name:?} has a '*' before its end; only a trailing '*' (\"tenant:*\") is allowed"
        ));
    }
    Ok(())
}

/// The limit that governs `key`: its own, else the default (`prefix*`) with the longest prefix
/// `key` starts with; `None` when `key` is unlimited.
pub fn governing<'a>(key: &str, limits: &'a [Limit]) -> Option<&'a Limit> {
    limits.iter().find(|l| l.name == key).or_else(|| {
        limits
            .iter()
            .filter(|l| l.is_default() && key.starts_with(&l.name[..l.name.len() - 1]))
            .max_by_key(|l| l.name.len())
    })
}

/// A key a task holds while an attempt runs: text with `{name}` parts filled from the task's
/// input context when it becomes ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    text: String,
    parts: Vec<Part>,
    /// Held by the whole execution (`Workflow(limits=...)`), from its first start to its end.
    whole_execution: bool,
    /// What its messages call it: "limit key" or "event key".
    noun: &'static str,
}

/// Marks a filled key the whole execution holds, in a task's stored keys and in a stored plan
/// (a control character: never part of a limit's name).
const EXECUTION_MARK: char = '\u{1}';

/// The key an execution holds, when the filled `key` is one; `None` for a task's own key.
pub fn held_by_execution(key: &str) -> Option<&str> {
    key.strip_prefix(EXECUTION_MARK)
}

/// The limit's name a filled key counts against (its mark taken off).
pub fn key_name(key: &str) -> &str {
    held_by_execution(key).unwrap_or(key)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl KeyTemplate {
    /// Parses `text`; `{{` and `}}` stand for braces. The message names the bad template.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_as(text, "limit key", "tenant:{tenant_id}")
    }

    /// Parses the key of an event a task waits for, as [`KeyTemplate::parse`] a limit's.
    pub fn parse_event(text: &str) -> Result<Self, String> {
        Self::parse_as(text, "event key", "approve:{order_id}")
    }

    fn parse_as(text: &str, noun: &'static str, example: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "{noun} {text:?} {why}; write text with {{name}} parts filled from the task's input, such as \"{example}\""
            ))
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut field = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => return bad("has an unclosed '{'"),
                            Some(c) => field.push(c),
                        }
                    }
                    if field.trim().is_empty() {
                        return bad("has an empty {} part");
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(field));
                }
                '}' => return bad("has a '}' with no '{'"),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if parts.is_empty() {
            return bad("is empty");
        }
        if let [Part::Text(only)] = parts.as_slice() {
            if noun == "limit key" {
                check_name(only)?;
            }
        }
        Ok(Self {
            text: text.to_string(),
            parts,
            whole_execution: false,
            noun,
        })
    }

    /// The same key, held by the whole execution instead of each attempt.
    pub fn for_execution(self) -> Self {
        Self {
            whole_execution: true,
            ..self
        }
    }

    /// Whether the whole execution holds it.
    pub fn is_for_execution(&self) -> bool {
        self.whole_execution
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The template as a stored plan keeps it (marked when the execution holds it).
    pub fn stored(&self) -> String {
        if self.whole_execution {
            format!("{EXECUTION_MARK}{}", self.text)
        } else {
            self.text.clone()
        }
    }

    /// Reads [`KeyTemplate::stored`] text back.
    pub fn from_stored(text: &str) -> Result<Self, String> {
        match held_by_execution(text) {
            Some(text) => Self::parse(text).map(Self::for_execution),
            None => Self::parse(text),
        }
    }

    /// Whether filling it needs the task's input (it has `{name}` parts).
    pub fn needs_input(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field(_)))
    }

    /// The key for a task whose input context is `input`; the task's error when a part's key
    /// is missing or holds a value that is not a string, number or boolean.
    pub fn render(&self, input: &Value) -> Result<String, String> {
        let mut key = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => key.push_str(text),
                Part::Field(field) => match input.get(field) {
                    Some(Value::String(s)) => key.push_str(s),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => key.push_str(&v.to_string()),
                    Some(other) => {
                        return Err(format!(
                        "{} {:?}: context key '{field}' holds {}, not a string, number or boolean",
                        self.noun,
                        self.text,
                        super::map::json_type(other)
                    ))
                    }
                    None => {
                        return Err(format!(
                            "{} {:?}: context key '{field}' is not in the task's input context",
                            self.noun, self.text
                        ))
                    }
                },
            }
        }
        if self.noun == "limit key" {
            check_name(&key).map_err(|e| format!("limit key {:?} filled in: {e}", self.text))?;
        } else if key.is_empty() {
            return Err(format!("{} {:?} filled in is empty", self.noun, self.text));
        }
        if self.whole_execution {
            key.insert(0, EXECUTION_MARK);
        }
        Ok(key)
    }
}

/// How a key is used now, as stored beside its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Attempts holding the key running now.
    pub running: u32,
    /// The earliest instant the next attempt holding the key may start (its rate).
    pub next_start: Option<DateTime<Utc>>,
}

/// Why an attempt may not start under one key now.
#[derive(Debug, Clone, PartialEq)]
pub enum Blocked {
    /// The key's cap is reached.
    Full { key: String, running: u32, cap: u32 },
    /// The key's rate allows the next start at `at`.
    Rate { key: String, at: DateTime<Utc> },
}

/// How the reason of a task waiting for a limit begins.
pub const WAITING_FOR: &str = "waiting for limit '";

/// The key a waiting task's `reason` names, if it waits for a limit.
pub fn waited_key(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix(WAITING_FOR)?;
    rest.rfind("' (").map(|end| &rest[..end])
}

impl Blocked {
    /// The reason a waiting task shows.
    pub fn reason(&self) -> String {
        match self {
            Blocked::Full { key, running, cap } => {
                format!("{WAITING_FOR}{key}' ({running} of {cap} running)")
            }
            Blocked::Rate { key, at } => format!(
                "{WAITING_FOR}{key}' (rate: next start at {})",
                at.format("%Y-%m-%dT%H:%M:%S%.3fZ")
            ),
        }
    }
}

/// Whether an attempt holding `key`, governed by `limit` and used as `usage`, may start at
/// `now`; what blocks it if not.
pub fn admit(key: &str, limit: &Limit, usage: Usage, now: DateTime<Utc>) -> Result<(), Blocked> {
    if let Some(cap) = limit.concurrency {
        if usage.running >= cap {
            return Err(Blocked::Full {
                key: key.to_string(),
                running: usage.running,
                cap,
            });
        }
    }
    match usage.next_start {
        Some(at) if limit.rate.is_some() && at > now => Err(Blocked::Rate {
            key: key.to_string(),
            at,
        }),
        _ => Ok(()),
    }
}

/// The usage of a key after an attempt holding it started at `now`.
pub fn started(limit: &Limit, usage: Usage, now: DateTime<Utc>) -> Usage {
    let next_start = limit.spacing().map(|spacing| {
        let from = usage.next_start.map_or(now, |at| at.max(now));
        let at = from + chrono::Duration::from_std(spacing).unwrap_or(chrono::Duration::MAX);
        // Whole microseconds, rounded up: what the databases store, never earlier.
        let sub_micro = i64::from(at.timestamp_subsec_nanos() % 1_000);
        if sub_micro == 0 {
            at
        } else {
            at + chrono::Duration::nanoseconds(1_000 - sub_micro)
        }
    });
    Usage {
        running: usage.running + 1,
        next_start: next_start.or(usage.next_start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limit(name: &str, concurrency: Option<i64>, rate: Option<i64>, per: f64) -> Limit {
        Limit::new(name, concurrency, rate, per).unwrap()
    }

    #[test]
    fn a_reason_names_the_key_it_waits_for() {
        let full = Blocked::Full {
            key: "tenant:a' (b".into(),
            running: 2,
            cap: 2,
        };
        assert_eq!(waited_key(&full.reason()), Some("tenant:a' (b"));
        let at = DateTime::parse_from_rfc3339("2026-12-05T10:00:00Z")
            .unwrap()
            .to_utc();
        let rate = Blocked::Rate {
            key: "api".into(),
            at,
        };
        assert_eq!(
            rate.reason(),
            "waiting for limit 'api' (rate: next start at 2026-12-05T10:00:00.000Z)"
        );
        assert_eq!(waited_key(&rate.reason()), Some("api"));
        assert_eq!(waited_key("waiting for 2 upstream tasks"), None);
    }

    #[test]
    fn execution_keys_are_marked_and_count_against_their_name() {
        let key = KeyTemplate::parse("customer:{id}").unwrap().for_execution();
        let filled = key.render(&json!({"id": 7})).unwrap();
        assert_eq!(held_by_execution(&filled), Some("customer:7"));
        assert_eq!(key_name(&filled), "customer:7");
        assert_eq!(key_name("customer:7"), "customer:7");
        assert_eq!(KeyTemplate::from_stored(&key.stored()).unwrap(), key);
        assert!(!KeyTemplate::parse("x").unwrap().is_for_execution());
    }

    #[test]
    fn a_third_of_a_second_spaces_three_starts_a_full_second_apart() {
        let limit = limit("r", None, Some(3), 1.0);
        let t0 = DateTime::parse_from_rfc3339("2026-12-05T10:00:00.000000001Z")
            .unwrap()
            .to_utc();
        let mut usage = Usage::default();
        for _ in 0..3 {
            usage = started(&limit, usage, t0);
        }
        assert!(usage.next_start.unwrap() - t0 >= chrono::Duration::seconds(1));
        assert_eq!(
            usage.next_start.unwrap().timestamp_subsec_nanos() % 1_000,
            0
        );
    }

    #[test]
    fn bad_limits_name_the_value() {
        assert!(Limit::new("a", Some(0), None, 1.0)
            .unwrap_err()
            .contains("concurrency=0"));
        assert!(Limit::new("a", None, Some(-3), 1.0)
            .unwrap_err()
            .contains("rate=-3"));
        assert!(Limit::new("a", None, Some(3), 0.0)
            .unwrap_err()
            .contains("per=0"));
        assert!(Limit::new("a", None, Some(3), f64::NAN)
            .unwrap_err()
            .contains("per=NaN"));
        assert!(Limit::new("", None, None, 1.0).is_err());
        assert!(Limit::new("a*b", None, None, 1.0)
            .unwrap_err()
            .contains("trailing '*'"));
        assert!(Limit::new(&"x".repeat(201), None, None, 1.0).is_err());
    }

    #[test]
    fn a_key_is_governed_by_its_own_limit_else_the_longest_default() {
        let limits = vec![
            limit("tenant:*", Some(2), None, 1.0),
            limit("tenant:big*", Some(9), None, 1.0),
            limit("tenant:acme", Some(1), None, 1.0),
        ];
        assert_eq!(
            governing("tenant:acme", &limits).unwrap().concurrency,
            Some(1)
        );
        assert_eq!(
            governing("tenant:bigco", &limits).unwrap().concurrency,
            Some(9)
        );
        assert_eq!(governing("tenant:x", &limits).unwrap().concurrency, Some(2));
        assert!(governing("openai", &limits).is_none());
    }

    #[test]
    fn templates_fill_from_the_input_and_name_what_is_missing() {
        let t = KeyTemplate::parse("tenant:{tenant_id}/{{x}}").unwrap();
        assert_eq!(
            t.render(&json!({"tenant_id": "acme"})).unwrap(),
            "tenant:acme/{x}"
        );
        assert_eq!(t.render(&json!({"tenant_id": 7})).unwrap(), "tenant:7/{x}");
        assert!(t
            .render(&json!({}))
            .unwrap_err()
            .contains("'tenant_id' is not in the task's input context"));
        assert!(t
            .render(&json!({"tenant_id": [1]}))
            .unwrap_err()
            .contains("not a string, number or boolean"));
        assert!(KeyTemplate::parse("a{").is_err());
        assert!(KeyTemplate::parse("a{}").is_err());
        assert!(KeyTemplate::parse("a}").is_err());
        assert!(KeyTemplate::parse("").is_err());
        assert_eq!(KeyTemplate::parse("openai").unwrap().as_str(), "openai");
    }

    #[test]
    fn admission_holds_the_cap_and_spaces_starts_by_the_rate() {
        let now = DateTime::parse_from_rfc3339("2026-12-05T10:00:00.123456Z")
            .unwrap()
            .to_utc();
        let capped = limit("k", Some(2), None, 1.0);
        let mut usage = Usage::default();
        for _ in 0..2 {
            assert_eq!(admit("k", &capped, usage, now), Ok(()));
            usage = started(&capped, usage, now);
        }
        assert_eq!(
            admit("k", &capped, usage, now).unwrap_err().reason(),
            "waiting for limit 'k' (2 of 2 running)"
        );

        let rated = limit("r", None, Some(4), 2.0);
        let mut usage = Usage::default();
        assert_eq!(admit("r", &rated, usage, now), Ok(()));
        usage = started(&rated, usage, now);
        let next = now + chrono::Duration::milliseconds(500);
        assert_eq!(usage.next_start, Some(next));
        assert!(
            matches!(admit("r", &rated, usage, now), Err(Blocked::Rate { at, .. }) if at == next)
        );
        assert_eq!(admit("r", &rated, usage, next), Ok(()));
    }
}

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
        self.rate.map(|rate| self.per / rate)
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl KeyTemplate {
    /// Parses `text`; `{{` and `}}` stand for braces. The message names the bad template.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "limit key {text:?} {why}; write text with {{name}} parts filled from the task's input, such as \"tenant:{{tenant_id}}\""
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
            check_name(only)?;
        }
        Ok(Self {
            text: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
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
                            "limit key {:?}: context key '{field}' holds {}, not a string, number or boolean",
                            self.text,
                            super::map::json_type(other)
                        ))
                    }
                    None => {
                        return Err(format!(
                            "limit key {:?}: context key '{field}' is not in the task's input context",
                            self.text
                        ))
                    }
                },
            }
        }
        check_name(&key).map_err(|e| format!("limit key {:?} filled in: {e}", self.text))?;
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

impl Blocked {
    /// The reason a waiting task shows.
    pub fn reason(&self) -> String {
        match self {
            Blocked::Full { key, running, cap } => {
                format!("waiting for limit '{key}' ({running} of {cap} running)")
            }
            Blocked::Rate { key, at } => format!(
                "waiting for limit '{key}' (rate: next start at {})",
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
        from + chrono::Duration::from_std(spacing).unwrap_or(chrono::Duration::MAX)
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
        let now = Utc::now();
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

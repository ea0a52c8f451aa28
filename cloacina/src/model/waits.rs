//! Durable waits: what a sleep or event task waits for, and the reasons a waiting task shows.
//!
//! A waiting task is a row in status `Waiting` with the instant it becomes ready again
//! (`wake_at`) and/or the event key it waits for; nothing runs meanwhile. These are the pure
//! decisions around it; `database::waits` stores them and `executor::waits` runs wait tasks.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::limits::KeyTemplate;

/// How long a sent event is kept for waits that start after it.
pub const EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The shortest retry delay stored in the database (the attempt gives its claim back); shorter
/// delays are waited out in the process that ran the attempt.
pub const STORED_RETRY_DELAY: Duration = Duration::from_secs(1);

/// When a sleep task completes.
#[derive(Debug, Clone, PartialEq)]
pub enum SleepUntil {
    /// This long after the task became ready.
    After(Duration),
    /// At this instant.
    At(DateTime<Utc>),
    /// At the instant the task's input holds under this key (an ISO 8601 string).
    AtKey(String),
}

/// What an event task does when its timeout passes with no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// The task fails with a `TimeoutError` message.
    Fail,
    /// The task is skipped.
    Skip,
    /// The task completes with payload `null`.
    Continue,
}

impl OnTimeout {
    /// Every mode's name, as users write it.
    pub const NAMES: [&'static str; 3] = ["fail", "skip", "continue"];

    /// Parses a mode's name; the message names the choices.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "fail" => Ok(Self::Fail),
            "skip" => Ok(Self::Skip),
            "continue" => Ok(Self::Continue),
            other => Err(format!(
                "on_timeout={other:?} is not a choice; use \"fail\", \"skip\" or \"continue\""
            )),
        }
    }

    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// What a wait task waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitFor {
    /// A time.
    Sleep(SleepUntil),
    /// An event sent with this key (filled from the task's input), at most `timeout` long.
    Event {
        key: KeyTemplate,
        timeout: Option<Duration>,
        on_timeout: OnTimeout,
    },
}

impl WaitFor {
    /// The wait as a stored plan keeps it.
    pub fn to_json(&self) -> Value {
        match self {
            WaitFor::Sleep(SleepUntil::After(d)) => json!({"sleep": d.as_secs_f64()}),
            WaitFor::Sleep(SleepUntil::At(at)) => json!({"until": iso(*at)}),
            WaitFor::Sleep(SleepUntil::AtKey(key)) => json!({"until_key": key}),
            WaitFor::Event {
                key,
                timeout,
                on_timeout,
            } => json!({
                "event": key.as_str(),
                "timeout": timeout.map(|t| t.as_secs_f64()),
                "on_timeout": on_timeout.as_str(),
            }),
        }
    }

    /// Reads [`WaitFor::to_json`] back; None when unreadable.
    pub fn from_json(value: &Value) -> Option<Self> {
        if let Some(seconds) = value.get("sleep").and_then(Value::as_f64) {
            let after = Duration::try_from_secs_f64(seconds).ok()?;
            return Some(WaitFor::Sleep(SleepUntil::After(after)));
        }
        if let Some(at) = value.get("until").and_then(Value::as_str) {
            return Some(WaitFor::Sleep(SleepUntil::At(parse_instant(at).ok()?)));
        }
        if let Some(key) = value.get("until_key").and_then(Value::as_str) {
            return Some(WaitFor::Sleep(SleepUntil::AtKey(key.to_string())));
        }
        let key = KeyTemplate::parse_event(value.get("event")?.as_str()?).ok()?;
        let timeout = value
            .get("timeout")
            .and_then(Value::as_f64)
            .and_then(|s| Duration::try_from_secs_f64(s).ok());
        let on_timeout = value
            .get("on_timeout")
            .and_then(Value::as_str)
            .and_then(|m| OnTimeout::parse(m).ok())
            .unwrap_or(OnTimeout::Fail);
        Some(WaitFor::Event {
            key,
            timeout,
            on_timeout,
        })
    }
}

/// Parses an ISO 8601 instant with its offset (`Z` or `+02:00`); the message says what to write.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "{text:?} is not an ISO 8601 instant with a time zone ({e}); write one such as \"2026-12-24T09:00:00Z\""
            )
        })
}

/// An instant as reasons and plans show it: UTC, milliseconds, `Z`.
pub fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Why a task is Waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// A sleep task.
    Sleeping,
    /// An event task, for this (filled) key.
    Event(String),
    /// A task that snoozed.
    Snoozed,
    /// A failed task waiting for its retry.
    Retrying,
    /// A sub-workflow task waiting for its child execution; the reason as shown.
    Child(String),
}

impl WaitReason {
    /// The reason as the task's `reason` says it, for a wait that ends at `until` (None: only
    /// an event ends it).
    pub fn text(&self, until: Option<DateTime<Utc>>) -> String {
        let at = until.map(iso).unwrap_or_else(|| "an event".to_string());
        match self {
            WaitReason::Sleeping => format!("sleeping until {at}"),
            WaitReason::Event(key) => match until {
                None => format!("waiting for event '{key}'"),
                Some(_) => format!("waiting for event '{key}' until {at}"),
            },
            WaitReason::Snoozed => format!("snoozed until {at}"),
            WaitReason::Retrying => format!("retrying at {at}"),
            WaitReason::Child(reason) => reason.clone(),
        }
    }
}

/// The failure of an event task whose timeout passed.
pub fn timeout_message(key: &str, timeout: Duration) -> String {
    format!(
        "TimeoutError: no event '{key}' arrived within {} s",
        timeout.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        parse_instant(text).unwrap()
    }

    #[test]
    fn instants_need_a_time_zone() {
        assert_eq!(at("2026-12-24T10:00:00+01:00"), at("2026-12-24T09:00:00Z"));
        let naive = parse_instant("2026-12-24T09:00:00").unwrap_err();
        assert!(naive.contains("with a time zone"), "{naive}");
        assert!(parse_instant("tomorrow").is_err());
    }

    #[test]
    fn waits_round_trip_through_a_stored_plan() {
        let waits = [
            WaitFor::Sleep(SleepUntil::After(Duration::from_millis(1500))),
            WaitFor::Sleep(SleepUntil::At(at("2026-12-24T09:00:00.250Z"))),
            WaitFor::Sleep(SleepUntil::AtKey("remind_at".into())),
            WaitFor::Event {
                key: KeyTemplate::parse_event("approve:{order_id}").unwrap(),
                timeout: Some(Duration::from_secs(5)),
                on_timeout: OnTimeout::Skip,
            },
            WaitFor::Event {
                key: KeyTemplate::parse_event("go").unwrap(),
                timeout: None,
                on_timeout: OnTimeout::Fail,
            },
        ];
        for wait in waits {
            assert_eq!(WaitFor::from_json(&wait.to_json()), Some(wait));
        }
    }

    #[test]
    fn on_timeout_names_its_choices() {
        for name in OnTimeout::NAMES {
            assert_eq!(OnTimeout::parse(name).unwrap().as_str(), name);
        }
        let error = OnTimeout::parse("retry").unwrap_err();
        assert!(
            error.contains("\"retry\"") && error.contains("\"continue\""),
            "{error}"
        );
    }

    #[test]
    fn reasons_say_until_when_or_for_which_key() {
        let t = at("2026-12-24T09:00:00Z");
        let t = Some(t);
        assert_eq!(
            WaitReason::Sleeping.text(t),
            "sleeping until 2026-12-24T09:00:00.000Z"
        );
        assert_eq!(
            WaitReason::Event("approve:7".into()).text(None),
            "waiting for event 'approve:7'"
        );
        assert_eq!(
            WaitReason::Event("k".into()).text(t),
            "waiting for event 'k' until 2026-12-24T09:00:00.000Z"
        );
        assert_eq!(
            WaitReason::Snoozed.text(t),
            "snoozed until 2026-12-24T09:00:00.000Z"
        );
        assert_eq!(
            WaitReason::Retrying.text(t),
            "retrying at 2026-12-24T09:00:00.000Z"
        );
        assert_eq!(
            timeout_message("k", Duration::from_secs(5)),
            "TimeoutError: no event 'k' arrived within 5 s"
        );
    }
}

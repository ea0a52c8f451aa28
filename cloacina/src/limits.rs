//! The range of every numeric setting, one rule per setting, checked the same way for Rust
//! and Python callers (the Python layer reads its arguments with these rules in `python::args`).

use std::fmt::Display;
use std::time::Duration;

use crate::error::{Error, Result};

/// Longest duration any setting accepts, in seconds: one year. Well inside what tokio's timers,
/// `Instant` arithmetic and the stored timestamps handle.
pub const MAX_SECONDS: u64 = 365 * 24 * 60 * 60;

/// A setting measured in seconds: finite, at most [`MAX_SECONDS`], and above zero unless
/// `zero_allowed`.
#[derive(Debug, Clone, Copy)]
pub struct Seconds {
    /// The option's name as users write it.
    pub name: &'static str,
    /// Whether 0 is accepted (a delay) or not (a timeout).
    pub zero_allowed: bool,
}

/// A setting counted in whole units, within `min..=max`.
#[derive(Debug, Clone, Copy)]
pub struct Count {
    /// The option's name as users write it.
    pub name: &'static str,
    /// Smallest value accepted.
    pub min: u64,
    /// Largest value accepted.
    pub max: u64,
}

/// A setting that is a plain finite number within `min..=max`, such as a factor.
#[derive(Debug, Clone, Copy)]
pub struct Number {
    /// The option's name as users write it.
    pub name: &'static str,
    /// Smallest value accepted.
    pub min: f64,
    /// Largest value accepted.
    pub max: f64,
    /// What the number is, e.g. "a fraction".
    pub kind: &'static str,
}

/// `@task(timeout=)`: longest one attempt may run.
pub const TASK_TIMEOUT: Seconds = Seconds::positive("timeout");
/// `@task(retry_delay=)`: delay before the first retry.
pub const RETRY_DELAY: Seconds = Seconds::non_negative("retry_delay");
/// `@task(retry_max_delay=)`: upper bound of any retry delay.
pub const RETRY_MAX_DELAY: Seconds = Seconds::non_negative("retry_max_delay");
/// `submit(timeout=)` / `execute(timeout=)`: the execution is cancelled after this long.
pub const EXECUTION_TIMEOUT: Seconds = Seconds::positive("timeout");
/// `wait(timeout=)`: how long to wait for an execution to end.
pub const WAIT_TIMEOUT: Seconds = Seconds::positive("timeout");
/// `sleep(seconds=)`: how long a sleep task waits.
pub const SLEEP_SECONDS: Seconds = Seconds::non_negative("seconds");
/// `wait_for_event(timeout=)`: how long an event task waits before its `on_timeout`.
pub const EVENT_TIMEOUT: Seconds = Seconds::positive("timeout");
/// `Snooze(seconds)`: how long a snoozed task waits before it runs again.
pub const SNOOZE_SECONDS: Seconds = Seconds::non_negative("seconds");
/// `initialize(lease_timeout=)`: how long after its last heartbeat a worker is presumed dead.
pub const LEASE_TIMEOUT: Seconds = Seconds::positive("lease_timeout");

/// `@task(retries=)`: extra attempts after a failed one (attempts are stored as 32-bit ints).
pub const RETRIES: Count = Count::new("retries", 0, 10_000);
/// `@task(map_limit=)`: most instances of a mapped task running at once in one execution.
pub const MAP_LIMIT: Count = Count::new("map_limit", 1, 100_000);
/// `UnifiedExecutor(max_concurrency=)`: most tasks one executor runs at once.
pub const MAX_CONCURRENCY: Count = Count::new("max_concurrency", 1, 100_000);
/// `initialize(pool_size=)`: most database connections one executor opens.
pub const POOL_SIZE: Count = Count::new("pool_size", 1, 1_000);
/// `list_executions(limit=)`: most executions returned.
pub const LIST_LIMIT: Count = Count::new("limit", 1, 10_000);
/// `list_executions(offset=)`: how many of the newest executions to skip.
pub const LIST_OFFSET: Count = Count::new("offset", 0, 1_000_000_000);

/// `@task(retry_backoff=)`: factor applied to the delay before each later retry.
pub const RETRY_BACKOFF: Number = Number::new("retry_backoff", 1.0, 100.0, "a factor");
/// `@task(retry_jitter=)`: random spread of each delay as a fraction of it.
pub const RETRY_JITTER: Number = Number::new("retry_jitter", 0.0, 1.0, "a fraction");

impl Seconds {
    const fn positive(name: &'static str) -> Self {
        Self {
            name,
            zero_allowed: false,
        }
    }

    const fn non_negative(name: &'static str) -> Self {
        Self {
            name,
            zero_allowed: true,
        }
    }

    /// What a valid value is, e.g. "a finite number of seconds between 0 and 31536000 (one year)".
    pub fn expected(&self) -> String {
        let range = if self.zero_allowed {
            "between 0 and"
        } else {
            "greater than 0 and at most"
        };
        format!("a finite number of seconds {range} {MAX_SECONDS} (one year)")
    }

    /// The duration of `seconds`, or `None` when it is out of range (NaN, infinite, too large,
    /// negative, or zero where zero is refused, including values that round to 0 ns).
    pub fn duration(&self, seconds: f64) -> Option<Duration> {
        if !(seconds.is_finite() && (0.0..=MAX_SECONDS as f64).contains(&seconds)) {
            return None;
        }
        let duration = Duration::from_secs_f64(seconds);
        (self.zero_allowed || !duration.is_zero()).then_some(duration)
    }

    /// `duration` if it is in range, else a configuration error naming the option.
    pub fn check(&self, duration: Duration) -> Result<Duration> {
        let in_range = duration <= Duration::from_secs(MAX_SECONDS)
            && (self.zero_allowed || !duration.is_zero());
        if in_range {
            Ok(duration)
        } else {
            Err(Error::Configuration(
                self.out_of_range(duration.as_secs_f64()),
            ))
        }
    }

    /// The message for a value out of range, shown as `shown`.
    pub fn out_of_range(&self, shown: impl Display) -> String {
        out_of_range(self.name, shown, &self.expected())
    }
}

impl Count {
    const fn new(name: &'static str, min: u64, max: u64) -> Self {
        Self { name, min, max }
    }

    /// What a valid value is, e.g. "an int between 1 and 1000".
    pub fn expected(&self) -> String {
        format!("an int between {} and {}", self.min, self.max)
    }

    /// Whether `n` is in range.
    pub fn contains(&self, n: i128) -> bool {
        (i128::from(self.min)..=i128::from(self.max)).contains(&n)
    }

    /// `n` if it is in range, else a configuration error naming the option.
    pub fn check(&self, n: u64) -> Result<u64> {
        if self.contains(i128::from(n)) {
            Ok(n)
        } else {
            Err(Error::Configuration(self.out_of_range(n)))
        }
    }

    /// The message for a value out of range, shown as `shown`.
    pub fn out_of_range(&self, shown: impl Display) -> String {
        out_of_range(self.name, shown, &self.expected())
    }
}

impl Number {
    const fn new(name: &'static str, min: f64, max: f64, kind: &'static str) -> Self {
        Self {
            name,
            min,
            max,
            kind,
        }
    }

    /// What a valid value is, e.g. "a fraction between 0.0 and 1.0".
    pub fn expected(&self) -> String {
        format!("{} between {:?} and {:?}", self.kind, self.min, self.max)
    }

    /// Whether `value` is in range (never for NaN).
    pub fn contains(&self, value: f64) -> bool {
        (self.min..=self.max).contains(&value)
    }

    /// The message for a value out of range, shown as `shown`.
    pub fn out_of_range(&self, shown: impl Display) -> String {
        out_of_range(self.name, shown, &self.expected())
    }
}

fn out_of_range(name: &str, shown: impl Display, expected: &str) -> String {
    format!("{name}={shown} is out of range: must be {expected}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_refuse_what_timers_cannot_hold() {
        for bad in [
            f64::NAN,
            f64::INFINITY,
            -1.0,
            1e20,
            1e300,
            MAX_SECONDS as f64 + 1.0,
        ] {
            assert_eq!(TASK_TIMEOUT.duration(bad), None, "{bad}");
            assert_eq!(RETRY_DELAY.duration(bad), None, "{bad}");
        }
        assert_eq!(TASK_TIMEOUT.duration(0.0), None);
        assert_eq!(TASK_TIMEOUT.duration(1e-12), None, "rounds to 0 ns");
        assert_eq!(RETRY_DELAY.duration(0.0), Some(Duration::ZERO));
        assert_eq!(RETRY_DELAY.duration(-0.0), Some(Duration::ZERO));
        assert_eq!(
            TASK_TIMEOUT.duration(MAX_SECONDS as f64),
            Some(Duration::from_secs(MAX_SECONDS))
        );
        assert!(LEASE_TIMEOUT.check(Duration::MAX).is_err());
        assert!(LEASE_TIMEOUT.check(Duration::ZERO).is_err());
        assert!(RETRY_DELAY.check(Duration::ZERO).is_ok());
    }

    #[test]
    fn messages_name_the_option_and_the_range() {
        assert_eq!(
            TASK_TIMEOUT.out_of_range("1e+20"),
            "timeout=1e+20 is out of range: must be a finite number of seconds greater than 0 and at most 31536000 (one year)"
        );
        assert_eq!(
            RETRY_DELAY.out_of_range(-1),
            "retry_delay=-1 is out of range: must be a finite number of seconds between 0 and 31536000 (one year)"
        );
        assert_eq!(
            POOL_SIZE.out_of_range(0),
            "pool_size=0 is out of range: must be an int between 1 and 1000"
        );
        assert_eq!(
            RETRY_JITTER.out_of_range(2),
            "retry_jitter=2 is out of range: must be a fraction between 0.0 and 1.0"
        );
    }

    #[test]
    fn counts_hold_their_bounds() {
        assert!(MAX_CONCURRENCY.check(0).is_err());
        assert!(MAX_CONCURRENCY.check(1).is_ok());
        assert!(MAX_CONCURRENCY.check(100_001).is_err());
        assert!(RETRIES.contains(0));
        assert!(!RETRIES.contains(-1));
        assert!(RETRIES.max < i32::MAX as u64);
    }
}

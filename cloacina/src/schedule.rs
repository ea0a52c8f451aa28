//! Cron schedules: when a schedule fires, and which fires run after time no worker watched.
//!
//! Expressions are parsed by `croner` and evaluated in an IANA time zone from `chrono-tz`.
//! Daylight-saving rules are croner's (the Open Cron Pattern Specification, as Vixie cron):
//! a fixed-time fire that falls in a spring-forward gap runs once, at the first valid time
//! after the gap; one in a fall-back overlap runs once, at its first occurrence. Wildcard and
//! step fields (`*/5 * * * *`) follow real time: the gap has no fires, the overlap has both.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::error::{Error, Result};

/// A fire made more than this long after its time counts as missed (a suspended machine, an
/// unreachable database), even while a worker was running.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(60);

/// With catch-up `all`, at most this many missed fires run; older ones are skipped.
pub const CATCHUP_LIMIT: usize = 100;

/// The input context key that holds a fire's time (ISO 8601, UTC).
pub const FIRE_TIME_KEY: &str = "fire_time";

/// What happens to fires missed while no worker ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catchup {
    /// Skip them.
    None,
    /// Run the most recent of them once.
    Latest,
    /// Run each, oldest first, at most [`CATCHUP_LIMIT`].
    All,
}

impl Catchup {
    /// Every mode's name, as users write it.
    pub const NAMES: [&'static str; 3] = ["none", "latest", "all"];

    /// The mode named `name`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "none" => Ok(Self::None),
            "latest" => Ok(Self::Latest),
            "all" => Ok(Self::All),
            other => Err(Error::Configuration(format!(
                "catchup must be one of \"none\", \"latest\" or \"all\", got {other:?}"
            ))),
        }
    }

    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A cron expression in a time zone: the times a schedule fires.
#[derive(Debug, Clone)]
pub struct Cadence {
    cron: Cron,
    timezone: Tz,
}

impl Cadence {
    /// Parses a 5-field cron expression (an optional leading 6th field for seconds, or an alias
    /// such as `@hourly`) in the IANA time zone `timezone`.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self> {
        let fields = expression.split_whitespace().count();
        let alias = expression.trim_start().starts_with('@');
        if !alias && !(5..=6).contains(&fields) {
            return Err(Error::Configuration(format!(
                "cron expression {expression:?} has {fields} fields; expected 5 (minute hour \
                 day-of-month month day-of-week), 6 (seconds first) or an alias such as \"@hourly\""
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| {
                Error::Configuration(format!("cron expression {expression:?} is not valid: {e}"))
            })?;
        let timezone: Tz = timezone.parse().map_err(|_| {
            Error::Configuration(format!(
                "unknown time zone {timezone:?}; use an IANA name such as \"UTC\" or \
                 \"Europe/Berlin\""
            ))
        })?;
        let cadence = Self { cron, timezone };
        if cadence.next_after(Utc::now()).is_none() {
            return Err(Error::Configuration(format!(
                "cron expression {expression:?} never fires"
            )));
        }
        Ok(cadence)
    }

    /// The first fire strictly after `time`; None if there is none (before the year 5000).
    pub fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&time.with_timezone(&self.timezone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last fire at or before `time`.
    fn last_at_or_before(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&time.with_timezone(&self.timezone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last fire strictly before `time`.
    fn last_before(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&time.with_timezone(&self.timezone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The fires a worker makes now, and the schedule's next fire after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fires {
    /// Fire times to submit, oldest first.
    pub run: Vec<DateTime<Utc>>,
    /// The first fire after `now`; None if the expression fires no more.
    pub next: Option<DateTime<Utc>>,
}

/// Which of the fires due since `next_fire` run at `now`.
///
/// A due fire is on time if it fell due while this worker was watching (at or after
/// `watching_since`) and at most [`MISFIRE_GRACE`] ago: on-time fires always run. The others
/// were missed, and `catchup` decides which of them run.
pub fn due_fires(
    cadence: &Cadence,
    catchup: Catchup,
    next_fire: DateTime<Utc>,
    watching_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Fires {
    let next = cadence.next_after(now);
    if next_fire > now {
        return Fires {
            run: Vec::new(),
            next: Some(next_fire),
        };
    }
    let grace = chrono::Duration::from_std(MISFIRE_GRACE).expect("a minute fits");
    let on_time_from = watching_since.max(now - grace);
    let keep_missed = match catchup {
        Catchup::None => 0,
        Catchup::Latest => 1,
        Catchup::All => CATCHUP_LIMIT,
    };
    // Walk back from now, so a long outage costs no more than the fires that run.
    let mut on_time = Vec::new();
    let mut missed = Vec::new();
    let mut cursor = cadence.last_at_or_before(now);
    while let Some(fire) = cursor.filter(|&f| f >= next_fire) {
        if fire >= on_time_from {
            on_time.push(fire);
        } else if missed.len() < keep_missed {
            missed.push(fire);
        } else {
            break;
        }
        cursor = cadence.last_before(fire);
    }
    let run = missed
        .into_iter()
        .rev()
        .chain(on_time.into_iter().rev())
        .collect();
    Fires { run, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Every fire in `from..to`, in order.
    fn fires(cadence: &Cadence, from: &str, to: &str) -> Vec<DateTime<Utc>> {
        let (mut t, end) = (utc(from), utc(to));
        let mut out = Vec::new();
        while let Some(next) = cadence.next_after(t).filter(|n| *n < end) {
            out.push(next);
            t = next;
        }
        out
    }

    #[test]
    fn five_and_six_fields_and_aliases() {
        let minute = Cadence::parse("*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            minute.next_after(utc("2026-01-01T00:07:00Z")),
            Some(utc("2026-01-01T00:15:00Z"))
        );
        let seconds = Cadence::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            seconds.next_after(utc("2026-01-01T00:00:01Z")),
            Some(utc("2026-01-01T00:00:10Z"))
        );
        for (alias, next) in [
            ("@hourly", "2026-01-01T01:00:00Z"),
            ("@daily", "2026-01-02T00:00:00Z"),
            ("@weekly", "2026-01-04T00:00:00Z"),
            ("@monthly", "2026-02-01T00:00:00Z"),
            ("@yearly", "2027-01-01T00:00:00Z"),
        ] {
            let cadence = Cadence::parse(alias, "UTC").unwrap();
            assert_eq!(
                cadence.next_after(utc("2026-01-01T00:30:00Z")),
                Some(utc(next)),
                "{alias}"
            );
        }
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_by_name() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * *",
            "@often",
            "a b c d e",
        ] {
            let err = Cadence::parse(bad, "UTC").unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        let err = Cadence::parse("0 0 30 2 *", "UTC").unwrap_err().to_string();
        assert!(err.contains("never fires"), "{err}");
        let err = Cadence::parse("* * * * *", "Mars/Olympus")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"Mars/Olympus\""), "{err}");
    }

    #[test]
    fn time_zone_sets_the_wall_clock() {
        let cadence = Cadence::parse("30 2 * * *", "America/New_York").unwrap();
        assert_eq!(
            cadence.next_after(utc("2026-01-10T00:00:00Z")),
            Some(utc("2026-01-10T07:30:00Z"))
        );
        assert_eq!(
            cadence.next_after(utc("2026-07-10T00:00:00Z")),
            Some(utc("2026-07-10T06:30:00Z"))
        );
    }

    #[test]
    fn spring_forward_runs_a_fixed_time_once_after_the_gap() {
        // Europe/Berlin skips 02:00-03:00 on 2026-03-29.
        let cadence = Cadence::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let got = fires(&cadence, "2026-03-27T12:00:00Z", "2026-03-31T12:00:00Z");
        let berlin = chrono_tz::Europe::Berlin;
        let expected: Vec<_> = [
            berlin.with_ymd_and_hms(2026, 3, 28, 2, 30, 0).unwrap(),
            berlin.with_ymd_and_hms(2026, 3, 29, 3, 0, 0).unwrap(),
            berlin.with_ymd_and_hms(2026, 3, 30, 2, 30, 0).unwrap(),
            berlin.with_ymd_and_hms(2026, 3, 31, 2, 30, 0).unwrap(),
        ]
        .iter()
        .map(|t| t.with_timezone(&Utc))
        .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn fall_back_runs_a_fixed_time_once() {
        // Europe/Berlin repeats 02:00-03:00 on 2026-10-25: 02:30 happens twice.
        let cadence = Cadence::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let got = fires(&cadence, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z");
        // The first 02:30 (CEST, 00:30 UTC) only.
        assert_eq!(
            got,
            vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
    }

    #[test]
    fn hourly_follows_real_time_through_both_transitions() {
        let cadence = Cadence::parse("@hourly", "Europe/Berlin").unwrap();
        // The spring-forward day has 23 hours, the fall-back day 25.
        let spring = fires(&cadence, "2026-03-28T22:59:00Z", "2026-03-29T21:59:00Z");
        assert_eq!(spring.len(), 23);
        let autumn = fires(&cadence, "2026-10-24T21:59:00Z", "2026-10-25T22:59:00Z");
        assert_eq!(autumn.len(), 25);
    }

    #[test]
    fn backward_walk_matches_forward_walk_across_transitions() {
        let cadence = Cadence::parse("30 2 * * *", "Europe/Berlin").unwrap();
        for (from, to) in [
            ("2026-03-25T00:00:00Z", "2026-04-02T00:00:00Z"),
            ("2026-10-20T00:00:00Z", "2026-10-30T00:00:00Z"),
        ] {
            let forward = fires(&cadence, from, to);
            let mut backward = Vec::new();
            let mut cursor = cadence.last_before(utc(to));
            while let Some(f) = cursor.filter(|f| *f > utc(from)) {
                backward.push(f);
                cursor = cadence.last_before(f);
            }
            backward.reverse();
            assert_eq!(forward, backward);
        }
    }

    #[test]
    fn catchup_modes_after_downtime() {
        let every_second = Cadence::parse("* * * * * *", "UTC").unwrap();
        // The last fire made was 10:00:00; no worker ran until one started at 10:00:05.5.
        let next_fire = utc("2026-01-01T10:00:01Z");
        let since = utc("2026-01-01T10:00:05.500Z");
        let now = utc("2026-01-01T10:00:06.200Z");
        let run = |mode| due_fires(&every_second, mode, next_fire, since, now);

        let none = run(Catchup::None);
        assert_eq!(none.run, vec![utc("2026-01-01T10:00:06Z")]);
        assert_eq!(none.next, Some(utc("2026-01-01T10:00:07Z")));

        let latest = run(Catchup::Latest);
        assert_eq!(
            latest.run,
            vec![utc("2026-01-01T10:00:05Z"), utc("2026-01-01T10:00:06Z")]
        );

        let all = run(Catchup::All);
        let expected: Vec<_> = (1..=6)
            .map(|s| utc(&format!("2026-01-01T10:00:0{s}Z")))
            .collect();
        assert_eq!(all.run, expected);
    }

    #[test]
    fn a_late_worker_that_was_watching_misses_nothing() {
        let every_second = Cadence::parse("* * * * * *", "UTC").unwrap();
        let since = utc("2026-01-01T09:00:00Z");
        let fires = due_fires(
            &every_second,
            Catchup::None,
            utc("2026-01-01T10:00:01Z"),
            since,
            utc("2026-01-01T10:00:03.900Z"),
        );
        assert_eq!(fires.run.len(), 3);
    }

    #[test]
    fn a_suspended_machine_catches_up_within_the_limit() {
        let hourly = Cadence::parse("@hourly", "UTC").unwrap();
        let since = utc("2026-01-01T00:00:00Z");
        let next_fire = utc("2026-01-01T01:00:00Z");
        // Woken 30 days later, 30 s after a fire: that fire is on time, the rest were missed.
        let now = utc("2026-01-31T00:00:30Z");
        let latest = due_fires(&hourly, Catchup::Latest, next_fire, since, now);
        assert_eq!(
            latest.run,
            vec![utc("2026-01-30T23:00:00Z"), utc("2026-01-31T00:00:00Z")]
        );
        let all = due_fires(&hourly, Catchup::All, next_fire, since, now);
        assert_eq!(all.run.len(), CATCHUP_LIMIT + 1);
        assert!(all.run.windows(2).all(|w| w[0] < w[1]), "oldest first");
        let none = due_fires(&hourly, Catchup::None, next_fire, since, now);
        assert_eq!(none.run, vec![utc("2026-01-31T00:00:00Z")]);
    }

    #[test]
    fn nothing_due_keeps_the_next_fire() {
        let hourly = Cadence::parse("@hourly", "UTC").unwrap();
        let next_fire = utc("2026-01-01T01:00:00Z");
        let fires = due_fires(
            &hourly,
            Catchup::All,
            next_fire,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T00:59:59Z"),
        );
        assert_eq!(fires.run, Vec::<DateTime<Utc>>::new());
        assert_eq!(fires.next, Some(next_fire));
    }

    #[test]
    fn catchup_names_round_trip() {
        for name in Catchup::NAMES {
            assert_eq!(Catchup::parse(name).unwrap().as_str(), name);
        }
        assert!(Catchup::parse("some")
            .unwrap_err()
            .to_string()
            .contains("\"some\""));
    }
}

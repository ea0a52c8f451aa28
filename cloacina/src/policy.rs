//! How a task is run: retries with backoff, a per-attempt timeout, and the rule that decides
//! whether it runs at all once its upstream tasks are done.

use std::time::Duration;

/// When a task runs, given how its upstream tasks ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TriggerRule {
    /// Every upstream task completed.
    #[default]
    AllSuccess,
    /// Every upstream task finished, whatever its status (for cleanup).
    AllDone,
    /// At least one upstream task completed.
    OneSuccess,
    /// At least one upstream task failed.
    OneFailed,
    /// No upstream task failed (each completed or was skipped).
    NoneFailed,
}

/// How an upstream task ended, as trigger rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// It completed.
    Completed,
    /// It failed.
    Failed,
    /// It was skipped or cancelled.
    Skipped,
}

impl TriggerRule {
    /// Every rule's name, as users write it.
    pub const NAMES: [&'static str; 5] = [
        "all_success",
        "all_done",
        "one_success",
        "one_failed",
        "none_failed",
    ];

    /// The rule's name, e.g. `all_success`.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerRule::AllSuccess => "all_success",
            TriggerRule::AllDone => "all_done",
            TriggerRule::OneSuccess => "one_success",
            TriggerRule::OneFailed => "one_failed",
            TriggerRule::NoneFailed => "none_failed",
        }
    }

    /// Parses a rule's name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "all_success" => TriggerRule::AllSuccess,
            "all_done" => TriggerRule::AllDone,
            "one_success" => TriggerRule::OneSuccess,
            "one_failed" => TriggerRule::OneFailed,
            "none_failed" => TriggerRule::NoneFailed,
            _ => return None,
        })
    }

    /// Whether a task with this rule runs, once every upstream task has ended as `upstream`.
    /// A task without upstream tasks always runs.
    pub fn is_met(self, upstream: &[UpstreamOutcome]) -> bool {
        if upstream.is_empty() {
            return true;
        }
        let any = |o: UpstreamOutcome| upstream.contains(&o);
        match self {
            TriggerRule::AllSuccess => upstream.iter().all(|&o| o == UpstreamOutcome::Completed),
            TriggerRule::AllDone => true,
            TriggerRule::OneSuccess => any(UpstreamOutcome::Completed),
            TriggerRule::OneFailed => any(UpstreamOutcome::Failed),
            TriggerRule::NoneFailed => !any(UpstreamOutcome::Failed),
        }
    }
}

/// How often and how soon a failed attempt is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub retries: u32,
    /// Delay before the first retry.
    pub delay: Duration,
    /// Multiplier applied to the delay for each further retry.
    pub backoff: f64,
    /// Upper bound of any delay, before jitter.
    pub max_delay: Duration,
    /// Random spread as a fraction of the delay: 0.1 means ±10%.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 0,
            delay: Duration::from_secs(1),
            backoff: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: 0.0,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first retry); `unit_random` is in [-1, 1].
    pub fn delay_before(&self, retry: u32, unit_random: f64) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = (self.delay.as_secs_f64() * self.backoff.powi(exponent))
            .min(self.max_delay.as_secs_f64());
        let jittered = base * (1.0 + self.jitter * unit_random.clamp(-1.0, 1.0));
        Duration::try_from_secs_f64(jittered.max(0.0)).unwrap_or(self.max_delay)
    }
}

/// Everything about how one task is run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskOptions {
    /// Retries after failed attempts.
    pub retry: RetryPolicy,
    /// Longest one attempt may run; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Whether a timed-out attempt is retried (it is unless the task restricts which errors are).
    pub retry_timeouts: bool,
    /// When the task runs, given its upstream tasks' outcomes.
    pub trigger_rule: TriggerRule,
    /// Set when the task runs once per element of a list in its input (a map).
    pub map: Option<MapOptions>,
    /// The limit keys each attempt holds while it runs, filled from the task's input.
    pub limits: Vec<crate::model::limits::KeyTemplate>,
    /// Added to the execution's priority: ready tasks are claimed highest first.
    pub priority: i32,
    /// Set for a task that only waits (a sleep or an event), holding no worker meanwhile.
    pub wait: Option<crate::model::waits::WaitFor>,
    /// Set for a task that runs another workflow as a child execution.
    pub subworkflow: Option<crate::model::subworkflows::Subworkflow>,
    /// Set for a hook: a task that runs once the execution's outcome is decided.
    pub hook: Option<crate::model::hooks::HookKind>,
}

/// How a mapped task finds its list and hands on its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOptions {
    /// The context key (a dotted path reaches into nested objects) holding the list.
    pub over: String,
    /// The key under which each instance sees its element.
    pub item: String,
    /// Most instances of the task running at once within one execution.
    pub limit: Option<u32>,
    /// The key of the list of values the task outputs; the task's id when None.
    pub collect_as: Option<String>,
}

impl MapOptions {
    /// A map over `over`, each element seen as `item`, unlimited, collected under the task's id.
    pub fn over(over: impl Into<String>) -> Self {
        Self {
            over: over.into(),
            item: "item".to_string(),
            limit: None,
            collect_as: None,
        }
    }
}

impl TaskOptions {
    /// Options with the defaults: no retries, no timeout, `all_success`.
    pub fn new() -> Self {
        Self {
            retry_timeouts: true,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UpstreamOutcome::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            retries: 5,
            delay: Duration::from_millis(100),
            backoff: 2.0,
            max_delay: Duration::from_millis(300),
            jitter: 0.0,
        };
        let delays: Vec<u128> = (1..=4)
            .map(|r| policy.delay_before(r, 0.0).as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 300, 300]);
        let jittered = RetryPolicy {
            jitter: 0.5,
            ..policy
        };
        assert_eq!(jittered.delay_before(1, 1.0).as_millis(), 150);
        assert_eq!(jittered.delay_before(1, -1.0).as_millis(), 50);
    }

    #[test]
    fn trigger_rules() {
        let cases = [
            (TriggerRule::AllSuccess, vec![Completed, Completed], true),
            (TriggerRule::AllSuccess, vec![Completed, Skipped], false),
            (TriggerRule::AllDone, vec![Failed, Skipped], true),
            (TriggerRule::OneSuccess, vec![Failed, Completed], true),
            (TriggerRule::OneSuccess, vec![Failed, Skipped], false),
            (TriggerRule::OneFailed, vec![Completed, Failed], true),
            (TriggerRule::OneFailed, vec![Completed, Skipped], false),
            (TriggerRule::NoneFailed, vec![Completed, Skipped], true),
            (TriggerRule::NoneFailed, vec![Completed, Failed], false),
        ];
        for (rule, upstream, expected) in cases {
            assert_eq!(rule.is_met(&upstream), expected, "{rule:?} {upstream:?}");
        }
        for name in TriggerRule::NAMES {
            assert_eq!(
                TriggerRule::parse(name).map(TriggerRule::as_str),
                Some(name)
            );
        }
    }
}

//! What the facts of an execution decide: whether a task whose upstream tasks have all ended
//! may run or is skipped (and why), how an execution ends once nothing is left to run (and its
//! message), and the reasons shown while an execution waits. Pure functions: storage reads the
//! facts, these decide, storage writes what they decided.

use super::{ExecutionStatus, TaskStatus};
use crate::policy::{TriggerRule, UpstreamOutcome};

/// An ended upstream task, as a trigger rule sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upstream<'a> {
    pub task_id: &'a str,
    pub status: TaskStatus,
}

/// What a task's trigger rule decides once none of its upstream tasks is left to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// The rule is met: the task is ready to run.
    Ready,
    /// The rule is not met: the task is Skipped, for this reason.
    Skipped(String),
}

/// Whether a task with `rule` runs, given how its upstream tasks ended.
pub(crate) fn readiness(rule: TriggerRule, upstream: &[Upstream<'_>]) -> Readiness {
    let outcomes: Vec<UpstreamOutcome> = upstream.iter().map(|u| outcome(u.status)).collect();
    if rule.is_met(&outcomes) {
        return Readiness::Ready;
    }
    let described = upstream
        .iter()
        .map(|u| format!("'{}' {}", u.task_id, u.status))
        .collect::<Vec<_>>()
        .join(", ");
    Readiness::Skipped(format!(
        "trigger rule '{}' not met: {described}",
        rule.as_str()
    ))
}

/// How an ended task counts for the trigger rules of its dependents.
fn outcome(status: TaskStatus) -> UpstreamOutcome {
    match status {
        TaskStatus::Completed => UpstreamOutcome::Completed,
        TaskStatus::Failed => UpstreamOutcome::Failed,
        _ => UpstreamOutcome::Skipped,
    }
}

/// A task that ended Failed or Cancelled, in plan order, as an execution's end needs it.
#[derive(Debug, Clone)]
pub(crate) struct Unsuccessful {
    pub task_id: String,
    pub status: TaskStatus,
    pub error: Option<String>,
    pub reason: Option<String>,
}

/// How an execution ends once none of its tasks is Pending or Running: its status and error.
///
/// A cancel request wins; then the first failed task (counting the others); then a task
/// cancelled without a request (stopped from outside the engine: its event loop closed), which
/// cancels the execution; otherwise it completed.
pub(crate) fn execution_end(
    cancel_reason: Option<&str>,
    unsuccessful: &[Unsuccessful],
) -> (ExecutionStatus, Option<String>) {
    if let Some(reason) = cancel_reason {
        return (
            ExecutionStatus::Cancelled,
            Some(format!("cancelled: {reason}")),
        );
    }
    let mut failed = unsuccessful
        .iter()
        .filter(|t| t.status == TaskStatus::Failed);
    if let Some(first) = failed.next() {
        let mut message = format!(
            "task '{}' failed: {}",
            first.task_id,
            first.error.as_deref().unwrap_or("unknown error")
        );
        let more = failed.count();
        if more > 0 {
            message.push_str(&format!(" (and {more} more failed tasks)"));
        }
        return (ExecutionStatus::Failed, Some(message));
    }
    match unsuccessful
        .iter()
        .find(|t| t.status == TaskStatus::Cancelled)
    {
        Some(task) => (
            ExecutionStatus::Cancelled,
            Some(format!(
                "cancelled: task '{}': {}",
                task.task_id,
                task.reason.as_deref().unwrap_or("cancelled")
            )),
        ),
        None => (ExecutionStatus::Completed, None),
    }
}

/// Why an execution waits when no live worker has registered some of its ready tasks.
pub(crate) fn unregistered_reason(task_ids: &[String]) -> String {
    let listed = task_ids
        .iter()
        .take(5)
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "waiting: no live worker has registered ready task(s) {listed}; start a worker that imports them"
    )
}

/// The error of an attempt whose worker was presumed dead while running it.
pub(crate) fn lost_attempt_error(worker: &str, hostname: &str, pid: i32) -> String {
    format!("worker {worker} (host {hostname}, pid {pid}) was lost while running this attempt")
}

/// Why an execution past its deadline was cancelled.
pub(crate) fn timed_out_reason(seconds: f64) -> String {
    format!("execution timed out after {seconds} s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(task_id: &str, status: TaskStatus) -> Upstream<'_> {
        Upstream { task_id, status }
    }

    fn ended(task_id: &str, status: TaskStatus, error: Option<&str>) -> Unsuccessful {
        Unsuccessful {
            task_id: task_id.into(),
            status,
            error: error.map(Into::into),
            reason: None,
        }
    }

    #[test]
    fn a_met_rule_makes_the_task_ready() {
        let upstream = [
            up("a", TaskStatus::Completed),
            up("b", TaskStatus::Completed),
        ];
        assert_eq!(
            readiness(TriggerRule::AllSuccess, &upstream),
            Readiness::Ready
        );
        let upstream = [up("a", TaskStatus::Failed)];
        assert_eq!(readiness(TriggerRule::AllDone, &upstream), Readiness::Ready);
    }

    #[test]
    fn an_unmet_rule_skips_the_task_naming_each_upstream_task() {
        let upstream = [up("a", TaskStatus::Completed), up("b", TaskStatus::Failed)];
        assert_eq!(
            readiness(TriggerRule::AllSuccess, &upstream),
            Readiness::Skipped(
                "trigger rule 'all_success' not met: 'a' Completed, 'b' Failed".into()
            )
        );
    }

    #[test]
    fn skipped_and_cancelled_upstream_tasks_count_as_skipped() {
        for status in [TaskStatus::Skipped, TaskStatus::Cancelled] {
            let upstream = [up("a", status)];
            assert_ne!(
                readiness(TriggerRule::AllSuccess, &upstream),
                Readiness::Ready
            );
            assert_ne!(
                readiness(TriggerRule::OneFailed, &upstream),
                Readiness::Ready
            );
        }
    }

    #[test]
    fn nothing_unsuccessful_completes() {
        assert_eq!(execution_end(None, &[]), (ExecutionStatus::Completed, None));
    }

    #[test]
    fn a_cancel_request_wins_over_failures() {
        let tasks = [ended("a", TaskStatus::Failed, Some("boom"))];
        assert_eq!(
            execution_end(Some("stop"), &tasks),
            (ExecutionStatus::Cancelled, Some("cancelled: stop".into()))
        );
    }

    #[test]
    fn the_first_failure_names_the_task_and_counts_the_others() {
        let tasks = [
            ended("a", TaskStatus::Cancelled, None),
            ended("b", TaskStatus::Failed, Some("ValueError: bad")),
            ended("c", TaskStatus::Failed, None),
        ];
        assert_eq!(
            execution_end(None, &tasks),
            (
                ExecutionStatus::Failed,
                Some("task 'b' failed: ValueError: bad (and 1 more failed tasks)".into())
            )
        );
        let one = [ended("c", TaskStatus::Failed, None)];
        assert_eq!(
            execution_end(None, &one).1.as_deref(),
            Some("task 'c' failed: unknown error")
        );
    }

    #[test]
    fn a_task_cancelled_without_a_request_cancels_the_execution() {
        let mut task = ended("a", TaskStatus::Cancelled, None);
        task.reason = Some("event loop closed".into());
        assert_eq!(
            execution_end(None, &[task]),
            (
                ExecutionStatus::Cancelled,
                Some("cancelled: task 'a': event loop closed".into())
            )
        );
    }

    #[test]
    fn waiting_reasons_list_at_most_five_tasks() {
        let ids: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
        let reason = unregistered_reason(&ids);
        assert!(
            reason.contains("'t4'") && !reason.contains("'t5'"),
            "{reason}"
        );
        assert!(reason.starts_with("waiting: no live worker"), "{reason}");
    }
}

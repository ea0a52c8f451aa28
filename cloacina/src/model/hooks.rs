//! Hooks: tasks a workflow runs once its execution's outcome is decided, durably, on any
//! worker. The pure decisions: which hook an outcome runs, and why the other is skipped.

use super::ExecutionStatus;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// After the execution Completed.
    Success,
    /// After it Failed or was Cancelled.
    Failure,
}

impl HookKind {
    /// The name stored in the plan and in the task's row.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Success => "success",
            HookKind::Failure => "failure",
        }
    }

    /// Reads [`HookKind::as_str`] back.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "success" => Some(HookKind::Success),
            "failure" => Some(HookKind::Failure),
            _ => None,
        }
    }

    /// Whether an execution that ended `outcome` runs this hook.
    pub fn runs_after(self, outcome: ExecutionStatus) -> bool {
        match self {
            HookKind::Success => outcome == ExecutionStatus::Completed,
            HookKind::Failure => {
                matches!(
                    outcome,
                    ExecutionStatus::Failed | ExecutionStatus::Cancelled
                )
            }
        }
    }

    /// Why this hook is skipped after `outcome`.
    pub fn skip_reason(self, outcome: ExecutionStatus) -> String {
        let runs = match self {
            HookKind::Success => "Completed",
            HookKind::Failure => "Failed or Cancelled",
        };
        format!(
            "the execution ended {outcome}; this on_{} hook runs only when it ends {runs}",
            self.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_runs_after_completed_failure_after_failed_or_cancelled() {
        use ExecutionStatus::*;
        for (outcome, success, failure) in [
            (Completed, true, false),
            (Failed, false, true),
            (Cancelled, false, true),
        ] {
            assert_eq!(HookKind::Success.runs_after(outcome), success, "{outcome}");
            assert_eq!(HookKind::Failure.runs_after(outcome), failure, "{outcome}");
        }
        let reason = HookKind::Success.skip_reason(Failed);
        assert!(
            reason.contains("ended Failed") && reason.contains("on_success"),
            "{reason}"
        );
        for kind in [HookKind::Success, HookKind::Failure] {
            assert_eq!(HookKind::parse(kind.as_str()), Some(kind));
        }
    }
}

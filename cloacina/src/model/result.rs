//! What an execution produced: statuses and per-task results.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::ExecutionPlan;
use crate::context::{Context, StoredContext};

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The name stored in the database and shown to users.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant)),+
                }
            }

            /// Parses a stored name.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $(stringify!($variant) => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Every status name, for error messages.
            pub fn names() -> &'static [&'static str] {
                &[$(stringify!($variant)),+]
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum! {
    /// Where a workflow execution stands.
    ExecutionStatus {
        /// Submitted; no task has started yet.
        Pending,
        /// Started and not yet finished.
        Running,
        /// Every task completed.
        Completed,
        /// At least one task failed.
        Failed,
        /// Cancelled, or past its deadline, before every task finished.
        Cancelled,
    }
}

status_enum! {
    /// Where one task of an execution stands.
    TaskStatus {
        /// Waiting for its upstream tasks.
        Pending,
        /// Being executed.
        Running,
        /// Finished and its output is recorded.
        Completed,
        /// Raised an error.
        Failed,
        /// Not run: its trigger rule was not met, or it raised a skip.
        Skipped,
        /// Stopped or never started because the execution was cancelled.
        Cancelled,
        /// An attempt whose worker died while running it; seen only in a task's history.
        Lost,
        /// Not ready before a time or an event: sleeping, waiting for an event, snoozed or
        /// waiting out a retry's delay, holding no worker.
        Waiting,
        /// An attempt that asked to run again later; seen only in a task's history.
        Snoozed,
    }
}

impl ExecutionStatus {
    /// Whether the execution has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecutionStatus::Pending | ExecutionStatus::Running)
    }
}

impl TaskStatus {
    /// Whether the task will not change state again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Skipped
                | TaskStatus::Cancelled
        )
    }
}

/// One attempt at running a task.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// How the attempt ended: Completed, Failed, Skipped or Cancelled.
    pub status: TaskStatus,
    /// `Type: message` of the failure, or why it was skipped or cancelled.
    pub error: Option<String>,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// When the attempt ended.
    pub completed_at: DateTime<Utc>,
}

/// The record of one task within an execution.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// The task's id.
    pub task_id: String,
    /// Ids of the tasks it depends on.
    pub dependencies: Vec<String>,
    /// Final (or current) status.
    pub status: TaskStatus,
    /// How many attempts started.
    pub attempts: u32,
    /// `Type: message` of the failure, if it failed.
    pub error: Option<String>,
    /// Traceback of the failure, when known.
    pub traceback: Option<String>,
    /// Why the task was skipped or cancelled.
    pub reason: Option<String>,
    /// Every attempt, oldest first.
    pub history: Vec<AttemptRecord>,
    /// When the last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the task reached its final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// For a mapped task: how many instances it has in each status.
    pub map: Option<MapCounts>,
    /// For a sub-workflow task: the child execution it submitted.
    pub child_execution_id: Option<Uuid>,
}

/// How many instances a mapped task has, in each status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapCounts {
    /// Every instance made (0 until the task is expanded).
    pub count: u64,
    /// Not started yet.
    pub pending: u64,
    /// Running now.
    pub running: u64,
    /// Completed.
    pub completed: u64,
    /// Failed after their retries.
    pub failed: u64,
    /// Skipped by their own code.
    pub skipped: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl MapCounts {
    /// The names of the counts, in the order of [`MapCounts::values`].
    pub const NAMES: [&'static str; 7] = [
        "count",
        "pending",
        "running",
        "completed",
        "failed",
        "skipped",
        "cancelled",
    ];

    /// The counts in the order of [`MapCounts::NAMES`].
    pub fn values(self) -> [u64; 7] {
        [
            self.count,
            self.pending,
            self.running,
            self.completed,
            self.failed,
            self.skipped,
            self.cancelled,
        ]
    }

    /// The counts as stored on a node that has ended: seven numbers, comma-separated.
    pub(crate) fn to_text(self) -> String {
        self.values().map(|n| n.to_string()).join(",")
    }

    /// Counts stored by `to_text`; None if the text is not that.
    pub(crate) fn from_text(text: &str) -> Option<Self> {
        let n: Vec<u64> = text
            .split(',')
            .map(|part| part.parse().ok())
            .collect::<Option<_>>()?;
        let [count, pending, running, completed, failed, skipped, cancelled] = n[..] else {
            return None;
        };
        Some(Self {
            count,
            pending,
            running,
            completed,
            failed,
            skipped,
            cancelled,
        })
    }

    /// Adds `n` instances in `status`.
    pub fn add(&mut self, status: TaskStatus, n: u64) {
        self.count += n;
        match status {
            TaskStatus::Pending => self.pending += n,
            TaskStatus::Running => self.running += n,
            TaskStatus::Completed => self.completed += n,
            TaskStatus::Failed => self.failed += n,
            TaskStatus::Skipped => self.skipped += n,
            TaskStatus::Cancelled => self.cancelled += n,
            // Only an attempt is Lost or Snoozed; its instance is Pending again. A waiting
            // instance has not ended.
            TaskStatus::Lost | TaskStatus::Snoozed | TaskStatus::Waiting => self.pending += n,
        }
    }
}

/// One instance of a mapped task, as `list_task_instances` pages through them.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceResult {
    /// Its index in the list.
    pub map_index: u32,
    /// Its status.
    pub status: TaskStatus,
    /// How many attempts started.
    pub attempts: u32,
    /// `Type: message` of the failure, if it failed.
    pub error: Option<String>,
    /// When its last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// For an instance of a mapped sub-workflow task: the child execution it submitted.
    pub child_execution_id: Option<Uuid>,
}

impl TaskResult {
    pub(crate) fn pending(task_id: &str, dependencies: Vec<String>) -> Self {
        Self {
            task_id: task_id.to_string(),
            dependencies,
            status: TaskStatus::Pending,
            attempts: 0,
            error: None,
            traceback: None,
            reason: None,
            history: Vec::new(),
            started_at: None,
            completed_at: None,
            map: None,
            child_execution_id: None,
        }
    }
}

/// The record of one workflow execution, as stored in the database.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionResult {
    /// Unique id of the execution.
    pub execution_id: Uuid,
    /// Name of the workflow that ran.
    pub workflow_name: String,
    /// Version (graph digest) of the workflow that ran.
    pub workflow_version: String,
    /// Final (or current) status.
    pub status: ExecutionStatus,
    /// The context the execution started with.
    pub input_context: StoredContext,
    /// Input merged with every task's output; `None` while running.
    pub final_context: Option<StoredContext>,
    /// Why the execution failed.
    pub error: Option<String>,
    /// Why an unfinished execution is waiting, e.g. no live worker has its ready tasks.
    pub reason: Option<String>,
    /// When the execution was submitted.
    pub started_at: DateTime<Utc>,
    /// When the execution finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// One entry per task, in the workflow's topological order.
    pub task_results: Vec<TaskResult>,
    /// Added to each task's priority: ready tasks are claimed highest first.
    pub priority: i32,
    /// The execution whose sub-workflow task submitted this one, if any.
    pub parent_execution_id: Option<Uuid>,
    /// The row key of that task in its execution (`node[i]` for a map instance).
    pub parent_task_id: Option<String>,
    /// How many parents it has above it (0 for a top-level execution).
    pub depth: u32,
}

impl ExecutionResult {
    /// The record of a new Pending execution of `plan` with id `execution_id`.
    pub(crate) fn pending(
        execution_id: Uuid,
        workflow_name: &str,
        workflow_version: &str,
        input: Context,
        plan: &ExecutionPlan,
    ) -> Self {
        Self {
            execution_id,
            workflow_name: workflow_name.to_string(),
            workflow_version: workflow_version.to_string(),
            status: ExecutionStatus::Pending,
            input_context: input.into(),
            final_context: None,
            error: None,
            reason: None,
            started_at: now(),
            completed_at: None,
            task_results: plan
                .tasks()
                .iter()
                .map(|t| {
                    let upstream = t.dependencies.iter().map(|&d| plan.tasks()[d].id.clone());
                    TaskResult::pending(&t.id, upstream.collect())
                })
                .collect(),
            priority: 0,
            parent_execution_id: None,
            parent_task_id: None,
            depth: 0,
        }
    }
}

/// The current time, truncated to the microseconds every backend stores.
pub(crate) fn now() -> DateTime<Utc> {
    let now = Utc::now();
    let micros = now.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(now)
}

/// `text` as every backend stores it: PostgreSQL refuses NUL in text, so NUL becomes `\x00`.
pub(crate) fn storable_text(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\\x00")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::{storable_text, MapCounts};

    #[test]
    fn map_counts_read_back_as_stored_and_reject_other_text() {
        let counts = MapCounts {
            count: 7,
            pending: 0,
            running: 1,
            completed: 2,
            failed: 3,
            skipped: 1,
            cancelled: 0,
        };
        assert_eq!(counts.to_text(), "7,0,1,2,3,1,0");
        assert_eq!(MapCounts::from_text(&counts.to_text()), Some(counts));
        assert_eq!(MapCounts::from_text("1,2,3"), None);
        assert_eq!(MapCounts::from_text("a,0,0,0,0,0,0"), None);
    }

    #[test]
    fn nul_is_escaped_and_other_text_kept() {
        assert_eq!(storable_text("a\0b\0".into()), "a\\x00b\\x00");
        assert_eq!(storable_text("plain ünïcode".into()), "plain ünïcode");
    }
}

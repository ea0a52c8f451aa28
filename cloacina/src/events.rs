//! What the engine reports as it runs: executions submitted and ended, task attempts started,
//! ended and retried. An [`Observer`] turns these events into logs (the Python layer writes
//! them to `logging`) or traces.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::model::{ExecutionStatus, TaskStatus};

/// How much an event matters, numbered as Python's `logging` levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Task attempts starting and ending.
    Debug = 10,
    /// Executions submitted and ended.
    Info = 20,
    /// Failed attempts and scheduled retries.
    Warning = 30,
    /// Failed executions.
    Error = 40,
}

/// The task attempt an event is about.
#[derive(Debug, Clone, Copy)]
pub struct AttemptRef<'a> {
    /// The execution the task belongs to.
    pub execution_id: Uuid,
    /// The execution's workflow.
    pub workflow_name: &'a str,
    /// The task's id.
    pub task_id: &'a str,
    /// The attempt's number, from 1.
    pub attempt: u32,
}

/// One thing that happened.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// An execution was recorded.
    ExecutionSubmitted {
        execution_id: Uuid,
        workflow_name: &'a str,
    },
    /// An execution reached a final status (reported by the worker whose commit ended it).
    ExecutionEnded {
        execution_id: Uuid,
        workflow_name: &'a str,
        status: ExecutionStatus,
    },
    /// A task attempt began running.
    AttemptStarted(AttemptRef<'a>),
    /// A task attempt ended: Completed, Failed, Skipped or Cancelled.
    AttemptEnded {
        attempt: AttemptRef<'a>,
        status: TaskStatus,
        error: Option<&'a str>,
        seconds: f64,
    },
    /// A failed attempt will be retried after `delay`.
    RetryScheduled {
        attempt: AttemptRef<'a>,
        delay: Duration,
    },
    /// An attempt's result was thrown away: its claim had been given back while it ran.
    AttemptDiscarded {
        attempt: AttemptRef<'a>,
        reason: &'a str,
    },
}

impl Event<'_> {
    /// How much the event matters.
    pub fn level(&self) -> Level {
        match self {
            Event::ExecutionSubmitted { .. } => Level::Info,
            Event::ExecutionEnded { status, .. } if *status == ExecutionStatus::Failed => {
                Level::Error
            }
            Event::ExecutionEnded { .. } => Level::Info,
            Event::AttemptStarted(_) => Level::Debug,
            Event::AttemptEnded { status, .. } if *status == TaskStatus::Failed => Level::Warning,
            Event::AttemptEnded { .. } => Level::Debug,
            Event::RetryScheduled { .. } | Event::AttemptDiscarded { .. } => Level::Warning,
        }
    }

    /// The attempt the event is about, if it is about one.
    pub fn attempt(&self) -> Option<&AttemptRef<'_>> {
        match self {
            Event::AttemptStarted(a)
            | Event::AttemptEnded { attempt: a, .. }
            | Event::RetryScheduled { attempt: a, .. }
            | Event::AttemptDiscarded { attempt: a, .. } => Some(a),
            _ => None,
        }
    }

    /// The execution and workflow the event is about.
    pub fn execution(&self) -> (Uuid, &str) {
        match self {
            Event::ExecutionSubmitted {
                execution_id,
                workflow_name,
            }
            | Event::ExecutionEnded {
                execution_id,
                workflow_name,
                ..
            } => (*execution_id, workflow_name),
            Event::AttemptStarted(a)
            | Event::AttemptEnded { attempt: a, .. }
            | Event::RetryScheduled { attempt: a, .. }
            | Event::AttemptDiscarded { attempt: a, .. } => (a.execution_id, a.workflow_name),
        }
    }

    /// A one-line description for a log.
    pub fn message(&self) -> String {
        match self {
            Event::ExecutionSubmitted {
                execution_id,
                workflow_name,
            } => format!("execution {execution_id} of workflow '{workflow_name}' submitted"),
            Event::ExecutionEnded {
                execution_id,
                workflow_name,
                status,
            } => format!(
                "execution {execution_id} of workflow '{workflow_name}' ended {}",
                status.as_str()
            ),
            Event::AttemptStarted(a) => {
                format!("task '{}' attempt {} started", a.task_id, a.attempt)
            }
            Event::AttemptEnded {
                attempt: a,
                status,
                error,
                seconds,
            } => {
                let mut line = format!(
                    "task '{}' attempt {} {} after {seconds:.3} s",
                    a.task_id,
                    a.attempt,
                    status.as_str()
                );
                if let Some(error) = error {
                    line.push_str(": ");
                    line.push_str(error);
                }
                line
            }
            Event::RetryScheduled { attempt: a, delay } => format!(
                "task '{}' will run attempt {} in {:.3} s",
                a.task_id,
                a.attempt + 1,
                delay.as_secs_f64()
            ),
            Event::AttemptDiscarded { attempt: a, reason } => format!(
                "task '{}' attempt {} result discarded: {reason}",
                a.task_id, a.attempt
            ),
        }
    }
}

/// Receives the engine's events.
pub trait Observer: Send + Sync {
    /// Whether events of `level` are wanted; asked before each event, so it must be cheap.
    fn wants(&self, level: Level) -> bool;
    /// Handles one event; must not block for long.
    fn observe(&self, event: &Event<'_>);
}

/// An executor's observer, if it has one.
pub(crate) type Observers = Option<Arc<dyn Observer>>;

/// Hands `event` to `observer` if it wants events of its level.
pub(crate) fn report(observer: &Observers, event: Event<'_>) {
    if let Some(observer) = observer {
        if observer.wants(event.level()) {
            observer.observe(&event);
        }
    }
}

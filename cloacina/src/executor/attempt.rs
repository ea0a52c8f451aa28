//! Runs one task to its end: attempts, timeouts, retries with backoff, skips and cancellation,
//! recording every attempt as it finishes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as Poll, Poll as PollState};

use chrono::{DateTime, Utc};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::lineage::{share, SharedOutput};
use super::result::{now, AttemptRecord, TaskStatus};
use crate::context::Context;
use crate::database::records::{StartMarker, TaskBatch, TaskOutcome};
use crate::database::Database;
use crate::error::Result;
use crate::task::{Task, TaskError, TaskErrorKind};

/// Everything a task runner needs, detached from the scheduler.
pub(crate) struct TaskRunner {
    pub db: Database,
    pub execution_id: Uuid,
    pub task: Arc<dyn Task>,
    pub permits: Arc<Semaphore>,
    pub cancel: watch::Receiver<Option<String>>,
}

/// How a task ended, as the scheduler needs it; the scheduler stores it with its next batch.
pub(crate) struct TaskEnd {
    pub output: Option<SharedOutput>,
    pub history: Vec<AttemptRecord>,
    /// The final status and what to store for it.
    pub outcome: TaskOutcome,
    /// The last attempt, not yet stored (earlier attempts were stored when they failed).
    pub last_attempt: Option<AttemptRecord>,
}

/// How one attempt ended.
enum AttemptEnd {
    Output(Context),
    Error(TaskError),
    Cancelled(String),
}

/// Runs attempts until one succeeds, skips, fails for good or the execution is cancelled.
///
/// The first attempt's start (`first_start`) is recorded by the scheduler. A failed attempt that
/// will be retried, and each retry's start, are stored here, as they happen.
pub(crate) async fn run_task(
    mut runner: TaskRunner,
    context: Context,
    permit: OwnedSemaphorePermit,
    first_start: DateTime<Utc>,
) -> Result<TaskEnd> {
    let options = runner.task.options().clone();
    let task_id = runner.task.id().to_string();
    let mut history: Vec<AttemptRecord> = Vec::new();
    let mut permit = Some(permit);
    let mut context = Some(context);
    let mut started_at = first_start;
    loop {
        let attempt = history.len() as u32 + 1;
        let retries_left = attempt <= options.retry.retries;
        let attempt_context = if retries_left {
            context
                .clone()
                .expect("context is kept while retries are left")
        } else {
            context.take().expect("the last attempt takes the context")
        };
        let ended = tokio::select! {
            biased;
            reason = cancelled(&mut runner.cancel) => AttemptEnd::Cancelled(reason),
            result = run_attempt(&runner.task, attempt_context) => match result {
                Ok(output) => AttemptEnd::Output(output),
                Err(error) => AttemptEnd::Error(error),
            },
        };
        let completed_at = now();
        let record = |status: TaskStatus, error: Option<String>| AttemptRecord {
            attempt,
            status,
            error,
            started_at,
            completed_at,
        };
        let (end, attempt_record) = match ended {
            AttemptEnd::Output(output) => {
                let outcome = TaskOutcome {
                    attempts: 0,
                    started_at: None,
                    status: TaskStatus::Completed,
                    output_json: Some(output.to_json()),
                    error: None,
                    traceback: None,
                    reason: None,
                    completed_at,
                };
                (
                    Some((outcome, Some(share(output)))),
                    record(TaskStatus::Completed, None),
                )
            }
            AttemptEnd::Cancelled(reason) => {
                let outcome = ended_without_output(
                    TaskStatus::Cancelled,
                    None,
                    None,
                    Some(reason.clone()),
                    completed_at,
                );
                (
                    Some((outcome, None)),
                    record(TaskStatus::Cancelled, Some(reason)),
                )
            }
            AttemptEnd::Error(error) if error.kind == TaskErrorKind::Skip => {
                let outcome = ended_without_output(
                    TaskStatus::Skipped,
                    None,
                    None,
                    Some(error.message.clone()),
                    completed_at,
                );
                (
                    Some((outcome, None)),
                    record(TaskStatus::Skipped, Some(error.message)),
                )
            }
            AttemptEnd::Error(error) if error.kind == TaskErrorKind::Retryable && retries_left => {
                (None, record(TaskStatus::Failed, Some(error.message)))
            }
            AttemptEnd::Error(error) => {
                let outcome = ended_without_output(
                    TaskStatus::Failed,
                    Some(error.message.clone()),
                    error.traceback,
                    None,
                    completed_at,
                );
                (
                    Some((outcome, None)),
                    record(TaskStatus::Failed, Some(error.message)),
                )
            }
        };
        history.push(attempt_record.clone());
        if let Some((outcome, output)) = end {
            drop(permit);
            return Ok(TaskEnd {
                output,
                history,
                outcome,
                last_attempt: Some(attempt_record),
            });
        }
        let failed = TaskBatch {
            attempts: vec![(task_id.clone(), attempt_record)],
            ..TaskBatch::default()
        };
        runner.db.commit_batch(runner.execution_id, failed).await?;
        // Free the slot while waiting, so other tasks run during the delay.
        drop(permit.take());
        let delay = options.retry.delay_before(attempt, unit_random());
        let resumed = tokio::select! {
            biased;
            reason = cancelled(&mut runner.cancel) => Err(reason),
            () = tokio::time::sleep(delay) => Ok(()),
        };
        let reacquired = match resumed {
            Ok(()) => tokio::select! {
                biased;
                reason = cancelled(&mut runner.cancel) => Err(reason),
                permit = runner.permits.clone().acquire_owned() => Ok(permit.expect("the executor never closes its semaphore")),
            },
            Err(reason) => Err(reason),
        };
        match reacquired {
            Ok(p) => {
                permit = Some(p);
                started_at = now();
                let start = TaskBatch {
                    started: vec![StartMarker {
                        task_id: task_id.clone(),
                        attempt: attempt + 1,
                        started_at,
                    }],
                    ..TaskBatch::default()
                };
                runner.db.commit_batch(runner.execution_id, start).await?;
            }
            Err(reason) => {
                let outcome =
                    ended_without_output(TaskStatus::Cancelled, None, None, Some(reason), now());
                return Ok(TaskEnd {
                    output: None,
                    history,
                    outcome,
                    last_attempt: None,
                });
            }
        }
    }
}

fn ended_without_output(
    status: TaskStatus,
    error: Option<String>,
    traceback: Option<String>,
    reason: Option<String>,
    completed_at: DateTime<Utc>,
) -> TaskOutcome {
    TaskOutcome {
        attempts: 0,
        started_at: None,
        status,
        output_json: None,
        error,
        traceback,
        reason,
        completed_at,
    }
}

/// One attempt, bounded by the task's timeout; a panic in the task becomes a failure.
async fn run_attempt(task: &Arc<dyn Task>, context: Context) -> Result<Context, TaskError> {
    let runner = task.clone();
    let attempt = AbortOnDrop(tokio::spawn(async move { runner.execute(context).await }));
    let joined = match task.options().timeout {
        None => attempt.await,
        Some(limit) => match tokio::time::timeout(limit, attempt).await {
            Ok(joined) => joined,
            Err(_) => {
                let message = format!(
                    "TimeoutError: task '{}' timed out after {} s",
                    task.id(),
                    limit.as_secs_f64()
                );
                return Err(if task.options().retry_timeouts {
                    TaskError::new(message)
                } else {
                    TaskError::fatal(message)
                });
            }
        },
    };
    joined.unwrap_or_else(|e| Err(TaskError::new(format!("panic: {e}"))))
}

/// Resolves with the reason once the execution is cancelled.
async fn cancelled(cancel: &mut watch::Receiver<Option<String>>) -> String {
    let reason = cancel
        .wait_for(Option::is_some)
        .await
        .map(|reason| reason.clone());
    match reason {
        Ok(reason) => reason.unwrap_or_default(),
        Err(_) => std::future::pending().await,
    }
}

/// A uniformly distributed number in [-1, 1], from the OS random source behind UUIDs.
fn unit_random() -> f64 {
    let bits = (Uuid::new_v4().as_u128() >> 75) as u64; // 53 random bits
    (bits as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

/// A spawned task that is aborted when dropped, so an abandoned attempt stops.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Poll<'_>) -> PollState<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

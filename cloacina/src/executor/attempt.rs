//! Runs one task to its end: attempts, timeouts, retries with backoff, skips and cancellation,
//! recording every attempt as it finishes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::context::{Output, SharedInput};
use crate::database::claims::TaskOutcome;
use crate::database::Database;
use crate::events::{report, AttemptRef, Event, Observers};
use crate::model::{now, storable_text, AttemptRecord, TaskStatus};
use crate::policy::TaskOptions;
use crate::spawn::{panic_message, AbortOnDrop};
use crate::task::{Task, TaskError, TaskErrorKind};

/// Largest output JSON a task may return: SQLite's default limit on one value (PostgreSQL's
/// is slightly larger).
pub(crate) const MAX_OUTPUT_BYTES: usize = 1_000_000_000;

/// Everything a task runner needs, detached from the scheduler.
pub(crate) struct TaskRunner {
    pub db: Database,
    pub execution_id: Uuid,
    pub workflow_name: Arc<str>,
    pub worker_id: String,
    pub observer: Observers,
    pub task: Arc<dyn Task>,
    /// The options stored with the execution (they win over the function's current ones).
    pub options: TaskOptions,
    pub permits: Arc<Semaphore>,
    pub cancel: watch::Receiver<Option<String>>,
}

impl TaskRunner {
    /// Attempt `attempt` of this task, as events name it.
    fn attempt_ref(&self, attempt: u32) -> AttemptRef<'_> {
        AttemptRef {
            execution_id: self.execution_id,
            workflow_name: &self.workflow_name,
            task_id: self.task.id(),
            attempt,
        }
    }

    /// Reports the end of attempt `attempt`, begun at `started_at`.
    fn report_end(&self, attempt: u32, record: &AttemptRecord, started_at: DateTime<Utc>) {
        report(
            &self.observer,
            Event::AttemptEnded {
                attempt: self.attempt_ref(attempt),
                status: record.status,
                error: record.error.as_deref(),
                seconds: (record.completed_at - started_at)
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1e6,
            },
        );
    }

    /// What the task's code sees of its attempt number `attempt`.
    fn current(&self, attempt: u32) -> CurrentAttempt {
        CurrentAttempt {
            execution_id: self.execution_id,
            workflow_name: self.workflow_name.clone(),
            task_id: self.task.id().to_string(),
            attempt,
            permits: self.permits.clone(),
        }
    }
}

tokio::task_local! {
    static CURRENT: CurrentAttempt;
}

/// The task attempt running where this is called, seen from its task's code.
#[derive(Clone)]
pub struct CurrentAttempt {
    /// The execution the task belongs to.
    pub execution_id: Uuid,
    /// The execution's workflow.
    pub workflow_name: Arc<str>,
    /// The task's id.
    pub task_id: String,
    /// The attempt's number, from 1.
    pub attempt: u32,
    permits: Arc<Semaphore>,
}

impl CurrentAttempt {
    /// The attempt whose `Task::execute` call this is inside, if any.
    pub fn get() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `work` with this attempt's concurrency slot lent to other tasks of its worker, so a
    /// task that waits for a nested execution does not hold the slot the nested tasks need.
    pub async fn lending_slot<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        self.permits.add_permits(1);
        let mut lent = SlotLent(Some(self.permits.clone()));
        let result = work.await;
        if let Some(permits) = lent.0.take() {
            take_back(permits).await;
        }
        result
    }
}

/// Removes the slot a waiting task lent, once one is free.
async fn take_back(permits: Arc<Semaphore>) {
    if let Ok(permit) = permits.acquire().await {
        permit.forget();
    }
}

/// Takes a lent slot back in the background if the borrowing wait is dropped.
struct SlotLent(Option<Arc<Semaphore>>);

impl Drop for SlotLent {
    fn drop(&mut self) {
        if let Some(permits) = self.0.take() {
            tokio::spawn(take_back(permits));
        }
    }
}

/// How a task ended, as the scheduler needs it; the scheduler stores it with its next batch.
pub(crate) struct TaskEnd {
    pub output: Option<Output>,
    /// The task's attempt number as this runner last stored it: the fencing token of its claim.
    pub fence: u32,
    /// The final status and what to store for it.
    pub outcome: TaskOutcome,
    /// The last attempt, not yet stored (earlier attempts were stored when they failed).
    pub last_attempt: Option<AttemptRecord>,
    /// The slot the task ran in, kept so the commit can claim the next task into it.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Why a stale attempt's result is thrown away, as the log says it.
pub(crate) const GIVEN_BACK: &str = "its claim was given back while it ran (this worker was presumed dead, paused or cut off for longer than the lease); the task runs again under a new claim";

/// How one attempt ended.
enum AttemptEnd {
    /// The output and its JSON.
    Output(Output, String),
    Error(TaskError),
    Cancelled(String),
}

/// Runs attempts from `first_attempt` (claimed at `first_start`) until one succeeds, skips,
/// fails for good or the execution is cancelled. A failed attempt that will be retried is
/// stored as it happens; the rest is stored by the scheduler. None if this worker lost the
/// task meanwhile (it was presumed dead and the task given to another worker).
pub(crate) async fn run_task(
    mut runner: TaskRunner,
    input: SharedInput,
    permit: OwnedSemaphorePermit,
    first_attempt: u32,
    first_start: DateTime<Utc>,
) -> Option<TaskEnd> {
    let options = runner.options.clone();
    let task_id = runner.task.id().to_string();
    let mut failures = 0u32;
    let mut attempt = first_attempt;
    let mut fence = first_attempt;
    let mut permit = Some(permit);

    let mut started_at = first_start;
    loop {
        let retries_left = failures < options.retry.retries;
        // Each attempt gets the input afresh; its values are shared, not copied.
        let attempt_input = input.clone();
        let current = runner.current(attempt);
        report(
            &runner.observer,
            Event::AttemptStarted(runner.attempt_ref(attempt)),
        );
        let ended = tokio::select! {
            biased;
            reason = cancelled(&mut runner.cancel) => AttemptEnd::Cancelled(reason),
            result = run_attempt(&runner.task, &options, attempt_input, current) => match result {
                Ok(output) => stored_output(&task_id, output),
                Err(error) if error.kind == TaskErrorKind::Cancelled => {
                    AttemptEnd::Cancelled(storable_text(error.message))
                }
                Err(error) => AttemptEnd::Error(TaskError {
                    message: storable_text(error.message),
                    traceback: error.traceback.map(storable_text),
                    ..error
                }),
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
        let outcome = |status, output_json, error, traceback, reason| TaskOutcome {
            output_json,
            error,
            traceback,
            reason,
            ..TaskOutcome::new(status, attempt, started_at, completed_at)
        };
        let (end, attempt_record) = match ended {
            AttemptEnd::Output(output, json) => (
                Some((
                    outcome(TaskStatus::Completed, Some(json), None, None, None),
                    Some(output),
                )),
                record(TaskStatus::Completed, None),
            ),
            AttemptEnd::Cancelled(reason) => (
                Some((
                    outcome(
                        TaskStatus::Cancelled,
                        None,
                        None,
                        None,
                        Some(reason.clone()),
                    ),
                    None,
                )),
                record(TaskStatus::Cancelled, Some(reason)),
            ),
            AttemptEnd::Error(error) if error.kind == TaskErrorKind::Skip => (
                Some((
                    outcome(
                        TaskStatus::Skipped,
                        None,
                        None,
                        None,
                        Some(error.message.clone()),
                    ),
                    None,
                )),
                record(TaskStatus::Skipped, Some(error.message)),
            ),
            AttemptEnd::Error(error) if error.kind == TaskErrorKind::Retryable && retries_left => {
                (None, record(TaskStatus::Failed, Some(error.message)))
            }
            AttemptEnd::Error(error) => (
                Some((
                    outcome(
                        TaskStatus::Failed,
                        None,
                        Some(error.message.clone()),
                        error.traceback,
                        None,
                    ),
                    None,
                )),
                record(TaskStatus::Failed, Some(error.message)),
            ),
        };
        runner.report_end(attempt, &attempt_record, started_at);
        if let Some((outcome, output)) = end {
            return Some(TaskEnd {
                output,
                fence,
                outcome,
                last_attempt: Some(attempt_record),
                permit,
            });
        }
        failures += 1;
        // A database error here only loses this attempt's history row (the fence stays as it
        // was); ownership is checked again when the task's outcome is committed.
        let owned = runner
            .db
            .record_retry(
                runner.execution_id,
                runner.worker_id.clone(),
                fence,
                task_id.clone(),
                attempt_record,
            )
            .await;
        match owned {
            Ok(true) => fence = attempt + 1,
            Ok(false) => {
                report(
                    &runner.observer,
                    Event::AttemptDiscarded {
                        attempt: runner.attempt_ref(attempt),
                        reason: GIVEN_BACK,
                    },
                );
                return None;
            }
            Err(_) => {}
        }
        // Free the slot while waiting, so other tasks run during the delay.
        drop(permit.take());
        let delay = options.retry.delay_before(failures, unit_random());
        report(
            &runner.observer,
            Event::RetryScheduled {
                attempt: runner.attempt_ref(attempt),
                delay,
            },
        );
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
        attempt += 1;
        match reacquired {
            Ok(p) => {
                permit = Some(p);
                started_at = now();
                let _ = runner
                    .db
                    .record_retry_start(
                        runner.execution_id,
                        runner.worker_id.clone(),
                        fence,
                        task_id.clone(),
                        started_at,
                    )
                    .await;
            }
            Err(reason) => {
                return Some(TaskEnd {
                    output: None,
                    fence,
                    outcome: TaskOutcome {
                        reason: Some(reason),
                        ..TaskOutcome::new(TaskStatus::Cancelled, attempt - 1, started_at, now())
                    },
                    last_attempt: None,
                    permit: None,
                });
            }
        }
    }
}

/// One attempt, bounded by the task's timeout; a panic in the task becomes a failure.
async fn run_attempt(
    task: &Arc<dyn Task>,
    options: &TaskOptions,
    input: SharedInput,
    current: CurrentAttempt,
) -> Result<Output, TaskError> {
    let runner = task.clone();
    let attempt = AbortOnDrop(tokio::spawn(
        CURRENT.scope(current, async move { runner.execute_shared(input).await }),
    ));
    let joined = match options.timeout {
        None => attempt.await,
        Some(limit) => match tokio::time::timeout(limit, attempt).await {
            Ok(joined) => joined,
            Err(_) => {
                let message = format!(
                    "TimeoutError: task '{}' timed out after {} s",
                    task.id(),
                    limit.as_secs_f64()
                );
                return Err(if options.retry_timeouts {
                    TaskError::new(message)
                } else {
                    TaskError::fatal(message)
                });
            }
        },
    };
    joined.unwrap_or_else(|e| Err(TaskError::new(panic_message(e))))
}

/// A task's output as stored, or a failure if it is larger than a database stores.
fn stored_output(task_id: &str, output: Output) -> AttemptEnd {
    let json = output.to_json();
    if json.len() <= MAX_OUTPUT_BYTES {
        return AttemptEnd::Output(output, json);
    }
    AttemptEnd::Error(TaskError::fatal(format!(
        "ValueError: task '{task_id}' returned {} bytes of JSON; a task's output is stored in one database value of at most {MAX_OUTPUT_BYTES} bytes",
        json.len()
    )))
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

//! Runs one task to its end: attempts, timeouts, retries with backoff, skips and cancellation,
//! recording every attempt as it finishes. What an attempt's end means for its task is decided
//! by [`conclude`], a pure function; the rest is the waiting around it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::subworkflows::run_subworkflow;
use super::waits::run_wait;
use super::worker::{Backoff, WorkerHandle};
use crate::context::{Output, SharedInput};
use crate::database::claims::EndedTask;
use crate::database::waits::{Carried, Park, Parked, Wake};
use crate::events::{report, AttemptRef, Event};
use crate::model::waits::{WaitReason, STORED_RETRY_DELAY};
use crate::model::{now, storable_text, AttemptRecord, TaskStatus};
use crate::policy::TaskOptions;
use crate::spawn::CatchUnwind;
use crate::task::{EngineFailure, Task, TaskError, TaskErrorKind};

/// Largest output JSON a task may return: SQLite's default limit on one value (PostgreSQL's
/// is slightly larger).
pub(crate) const MAX_OUTPUT_BYTES: usize = 1_000_000_000;

/// Everything a task runner needs, detached from the scheduler.
pub(crate) struct TaskRunner {
    /// The worker running the task, as the task's execution sees it.
    pub worker: WorkerHandle,
    /// The task's place in its execution's plan.
    pub position: usize,
    /// The name of the execution's workflow, as events give it.
    pub workflow_name: Arc<str>,
    /// The task's function.
    pub task: Arc<dyn Task>,
    /// The options stored with the execution (they win over the function's current ones).
    pub options: TaskOptions,
    /// Holds the reason once the execution is cancelled.
    pub cancel: watch::Receiver<Option<String>>,
    /// The instance's index, when this runs an instance of a mapped task.
    pub map_index: Option<u32>,
    /// How many times the task snoozed before this claim.
    pub snoozes: u32,
}

impl TaskRunner {
    /// The key of the task's row: its id, or its instance's.
    pub(super) fn row_id(&self) -> String {
        match self.map_index {
            Some(index) => crate::model::map::instance_key(self.task.id(), index),
            None => self.task.id().to_string(),
        }
    }

    /// Attempt `attempt` of this task, as events name it.
    fn attempt_ref(&self, attempt: u32) -> AttemptRef<'_> {
        AttemptRef {
            execution_id: self.worker.execution(),
            workflow_name: &self.workflow_name,
            task_id: self.task.id(),
            attempt,
        }
    }

    /// Reports the end of an attempt.
    fn report_end(&self, record: &AttemptRecord) {
        report(
            self.worker.observer(),
            Event::AttemptEnded {
                attempt: self.attempt_ref(record.attempt),
                status: record.status,
                error: record.error.as_deref(),
                seconds: (record.completed_at - record.started_at)
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1e6,
            },
        );
    }

    /// Runs attempt `attempt` on `input` until it ends or the execution is cancelled; how it
    /// ended, and its output if it completed.
    async fn attempt(&mut self, input: SharedInput, attempt: u32) -> (AttemptEnd, Option<Output>) {
        let current = self.current(attempt);
        report(
            self.worker.observer(),
            Event::AttemptStarted(self.attempt_ref(attempt)),
        );
        let result = tokio::select! {
            biased;
            reason = cancelled(&mut self.cancel) => return (AttemptEnd::Cancelled(reason), None),
            result = run_attempt(&self.task, &self.options, input, current) => result,
        };
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                let error = TaskError {
                    message: storable_text(error.message),
                    traceback: error.traceback.map(storable_text),
                    ..error
                };
                return (AttemptEnd::Failed(error), None);
            }
        };
        match stored_json(self.task.id(), &output) {
            Ok(json) => (AttemptEnd::Completed(json), Some(output)),
            Err(error) => (AttemptEnd::Failed(error), None),
        }
    }

    /// Stores a failed attempt that will be retried; the claim's new fence, or None (reported)
    /// if the claim fenced by `fence` was given back meanwhile.
    async fn store_failed(&self, fence: u32, failed: AttemptRecord) -> Option<u32> {
        let attempt = failed.attempt;
        let owned = self
            .worker
            .db()
            .record_retry(
                self.worker.execution(),
                self.worker.worker_id().to_string(),
                fence,
                self.row_id(),
                failed,
            )
            .await;
        match owned {
            Ok(true) => Some(attempt + 1),
            Ok(false) => {
                self.report_given_back(attempt);
                None
            }
            // This only loses the attempt's history row (the fence stays as it was); ownership
            // is checked again when the task's end is committed.
            Err(_) => Some(fence),
        }
    }

    /// The end, now, of attempt `attempt` (started at `started_at`) of a task the engine runs
    /// itself (a wait, a sub-workflow task), with `status` and `error`, kept in its history.
    pub(super) fn engine_end(
        &self,
        attempt: u32,
        status: TaskStatus,
        error: Option<String>,
        started_at: DateTime<Utc>,
    ) -> EndedTask {
        let completed_at = now();
        EndedTask {
            error: error.clone().filter(|_| status == TaskStatus::Failed),
            last_attempt: Some(AttemptRecord {
                attempt,
                status,
                error,
                started_at,
                completed_at,
            }),
            ..EndedTask::new(
                self.position,
                attempt,
                status,
                attempt,
                started_at,
                completed_at,
            )
        }
    }

    /// Reports that attempt `attempt`'s result is thrown away: its claim was given back.
    fn report_given_back(&self, attempt: u32) {
        report(
            self.worker.observer(),
            Event::AttemptDiscarded {
                attempt: self.attempt_ref(attempt),
                reason: GIVEN_BACK,
            },
        );
    }

    /// Reports that attempt `attempt` will be retried after `delay`.
    fn report_retry(&self, attempt: u32, delay: std::time::Duration) {
        report(
            self.worker.observer(),
            Event::RetryScheduled {
                attempt: self.attempt_ref(attempt),
                delay,
            },
        );
    }

    /// Gives up the task's slot, waits out `delay` and takes a slot again; `Err` with the
    /// reason if the execution is cancelled meanwhile.
    async fn wait_to_retry(
        &mut self,
        delay: std::time::Duration,
        slot: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), String> {
        // Free the slot while waiting, so other tasks run during the delay.
        drop(slot.take());
        tokio::select! {
            biased;
            reason = cancelled(&mut self.cancel) => return Err(reason),
            () = tokio::time::sleep(delay) => {}
        }
        let permit = tokio::select! {
            biased;
            reason = cancelled(&mut self.cancel) => return Err(reason),
            permit = self.worker.permits().clone().acquire_owned() => permit.expect("the executor never closes its semaphore"),
        };
        *slot = Some(permit);
        Ok(())
    }

    /// Stores when a retry started, fenced as `store_failed`.
    async fn store_retry_start(&self, fence: u32, started_at: DateTime<Utc>) {
        let _ = self
            .worker
            .db()
            .record_retry_start(
                self.worker.execution(),
                self.worker.worker_id().to_string(),
                fence,
                self.row_id(),
                started_at,
            )
            .await;
    }

    /// What the task's code sees of its attempt number `attempt`.
    fn current(&self, attempt: u32) -> CurrentAttempt {
        CurrentAttempt {
            execution_id: self.worker.execution(),
            workflow_name: self.workflow_name.clone(),
            task_id: self.task.id().to_string(),
            attempt,
            map_index: self.map_index,
            snoozes: self.snoozes,
            permits: self.worker.permits().clone(),
        }
    }

    /// What the task's row carries from earlier claims (nothing, when it cannot be read).
    pub(super) async fn carried(&self) -> Carried {
        let db = self.worker.db();
        db.carried(self.worker.execution(), self.row_id())
            .await
            .unwrap_or_default()
    }

    /// A park of this task's claim at `fence` until `wake`, recording `attempt` if given.
    pub(super) fn to_park(
        &self,
        fence: u32,
        wake: Wake,
        reason: WaitReason,
        attempt: Option<AttemptRecord>,
    ) -> Park {
        Park {
            execution: self.worker.execution(),
            worker: self.worker.worker_id().to_string(),
            fence,
            task_id: self.row_id(),
            wake,
            reason,
            attempt,
            retry: false,
            snooze: false,
            holds_units: !self.options.limits.is_empty(),
        }
    }

    /// Parks the task after attempt `ended` (its claim at `fence`) snoozed or failed with a
    /// stored retry (as `reason` says), to run again after `delay`; `base` is its end should
    /// parking find the execution cancelled.
    async fn park_attempt(
        &self,
        fence: u32,
        delay: std::time::Duration,
        reason: WaitReason,
        ended: AttemptRecord,
        base: EndedTask,
    ) -> Option<(EndedTask, Option<Output>)> {
        let park = Park {
            retry: reason == WaitReason::Retrying,
            snooze: reason == WaitReason::Snoozed,
            ..self.to_park(fence, Wake::After(delay), reason, Some(ended))
        };
        let base = EndedTask {
            last_attempt: park.attempt.clone(),
            ..base
        };
        self.park(park, base, None).await
    }

    /// Parks the task as `park` says (retrying while the database fails); the task's end when
    /// it was not parked: completed (a sleep already due, with `due`), or cancelled.
    pub(super) async fn park(
        &self,
        park: Park,
        ended: EndedTask,
        due: Option<String>,
    ) -> Option<(EndedTask, Option<Output>)> {
        let attempt = ended.attempt;
        let mut backoff = Backoff::default();
        let parked = loop {
            match self.worker.db().park(park.clone()).await {
                Ok(parked) => break parked,
                // Left Running under this worker: given back once it stops.
                Err(_) if self.worker.is_closed() => return None,
                Err(_) => backoff.wait().await,
            }
        };
        self.parked(parked, ended, due, attempt)
    }

    /// The task's end after parking it ended as `parked` (see [`TaskRunner::park`]).
    pub(super) fn parked(
        &self,
        parked: Parked,
        ended: EndedTask,
        due: Option<String>,
        attempt: u32,
    ) -> Option<(EndedTask, Option<Output>)> {
        match parked {
            Parked::Waiting(_) => None,
            Parked::Lost => {
                self.report_given_back(attempt);
                None
            }
            Parked::Due => Some((
                EndedTask {
                    output_json: due,
                    ..ended
                },
                None,
            )),
            Parked::Cancelled(reason) => Some((
                EndedTask {
                    status: TaskStatus::Cancelled,
                    reason: Some(reason),
                    output_json: None,
                    last_attempt: ended
                        .last_attempt
                        .filter(|a| a.status != TaskStatus::Completed),
                    ..ended
                },
                None,
            )),
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
    /// The instance's index, when the task runs once per element of a list.
    pub map_index: Option<u32>,
    /// How many times the task snoozed before this attempt.
    pub snoozes: u32,
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

/// Why a stale attempt's result is thrown away, as the log says it.
pub(crate) const GIVEN_BACK: &str = "its claim was given back while it ran (this worker was presumed dead, paused or cut off for longer than the lease); the task runs again under a new claim";

/// How one attempt of a task ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AttemptEnd {
    /// It returned an output, stored as this JSON.
    Completed(String),
    /// It failed, asked to be skipped or said it was cancelled, timed out, or returned more
    /// than a database stores.
    Failed(TaskError),
    /// Its execution was cancelled, for this reason.
    Cancelled(String),
}

/// An attempt after which its task runs again: the attempt's record, to store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Again {
    /// It failed retryably with retries left.
    Retry(AttemptRecord),
    /// It snoozed: the task runs again after this long, using no retry.
    Snooze(AttemptRecord, std::time::Duration),
}

/// What attempt `attempt` of the task at `position` ending as `ended` means for the task (its
/// claim fenced by `fence`, the attempt run from `started_at` to `completed_at`): `Ok` with
/// the task's end to store, this attempt its last; `Err` when the task runs again (it failed
/// retryably and `retries_left`, or it snoozed), with the attempt to store first.
pub(crate) fn conclude(
    ended: AttemptEnd,
    retries_left: bool,
    position: usize,
    fence: u32,
    attempt: u32,
    started_at: DateTime<Utc>,
    completed_at: DateTime<Utc>,
) -> Result<EndedTask, Again> {
    let record = |status, error| AttemptRecord {
        attempt,
        status,
        error,
        started_at,
        completed_at,
    };
    let end = |status, error: Option<&String>| EndedTask {
        last_attempt: Some(record(status, error.cloned())),
        ..EndedTask::new(position, fence, status, attempt, started_at, completed_at)
    };
    let cancelled = |reason: String| EndedTask {
        reason: Some(reason.clone()),
        ..end(TaskStatus::Cancelled, Some(&reason))
    };
    Ok(match ended {
        AttemptEnd::Completed(json) => EndedTask {
            output_json: Some(json),
            ..end(TaskStatus::Completed, None)
        },
        AttemptEnd::Cancelled(reason) => cancelled(reason),
        AttemptEnd::Failed(error) => match error.kind {
            // A task that says it was cancelled ends as a cancellation from outside does.
            TaskErrorKind::Cancelled => cancelled(error.message),
            TaskErrorKind::Skip => EndedTask {
                reason: Some(error.message.clone()),
                ..end(TaskStatus::Skipped, Some(&error.message))
            },
            TaskErrorKind::Snooze(delay) => {
                return Err(Again::Snooze(
                    record(TaskStatus::Snoozed, Some(error.message)),
                    delay,
                ))
            }
            TaskErrorKind::Retryable if retries_left => {
                return Err(Again::Retry(record(
                    TaskStatus::Failed,
                    Some(error.message),
                )))
            }
            TaskErrorKind::Retryable | TaskErrorKind::Fatal => EndedTask {
                error: Some(error.message.clone()),
                traceback: error.traceback,
                ..end(TaskStatus::Failed, Some(&error.message))
            },
        },
    })
}

/// Runs attempts from `first_attempt` (claimed at `first_start`) until one succeeds, skips,
/// fails for good, the execution is cancelled, or the task parks (it snoozed, its retry waits
/// [`STORED_RETRY_DELAY`] or more, or it is a wait task); `slot` holds the task's concurrency
/// slot, given up while it waits to retry. A failed attempt that will be retried is stored as
/// it happens; the rest is stored by the scheduler. Returns the task's end with its output, or
/// None when there is nothing to store: the task parked, or this worker lost it meanwhile (its
/// claim was given back).
pub(crate) async fn run_task(
    mut runner: TaskRunner,
    input: SharedInput,
    slot: &mut Option<OwnedSemaphorePermit>,
    first_attempt: u32,
    first_start: DateTime<Utc>,
) -> Option<(EndedTask, Option<Output>)> {
    let wait = runner.options.wait.clone();
    // What earlier claims used; a first claim used nothing.
    let carried = if first_attempt > 1 || wait.is_some() {
        runner.carried().await
    } else {
        Carried::default()
    };
    runner.snoozes = carried.snoozes;
    if let Some(wait) = wait {
        return run_wait(&runner, wait, input, carried, first_attempt, first_start).await;
    }
    if let Some(subworkflow) = runner.options.subworkflow.clone() {
        return run_subworkflow(&runner, subworkflow, input, first_attempt, first_start).await;
    }
    let retries = runner.options.retry.retries;
    let mut failures = carried.retries_used;
    let mut attempt = first_attempt;
    // The attempt number as last stored: the fencing token of every write about this claim.
    let mut fence = first_attempt;
    let mut started_at = first_start;
    loop {
        // Each attempt gets the input afresh; its values are shared, not copied.
        let (ended, output) = runner.attempt(input.clone(), attempt).await;
        let (retries_left, position, ended_at) = (failures < retries, runner.position, now());
        let concluded = conclude(
            ended,
            retries_left,
            position,
            fence,
            attempt,
            started_at,
            ended_at,
        );
        let base = EndedTask::new(
            position,
            fence,
            TaskStatus::Cancelled,
            attempt,
            started_at,
            ended_at,
        );
        let failed = match concluded {
            Ok(end) => {
                if let Some(last) = &end.last_attempt {
                    runner.report_end(last);
                }
                return Some((end, output));
            }
            Err(Again::Snooze(snoozed, delay)) => {
                runner.report_end(&snoozed);
                return runner
                    .park_attempt(fence, delay, WaitReason::Snoozed, snoozed, base)
                    .await;
            }
            Err(Again::Retry(failed)) => failed,
        };
        runner.report_end(&failed);
        failures += 1;
        let delay = runner.options.retry.delay_before(failures, unit_random());
        runner.report_retry(attempt, delay);
        if delay >= STORED_RETRY_DELAY {
            // A long delay is stored: the claim is given back and any worker runs the retry.
            return runner
                .park_attempt(fence, delay, WaitReason::Retrying, failed, base)
                .await;
        }
        fence = runner.store_failed(fence, failed).await?;
        if let Err(reason) = runner.wait_to_retry(delay, slot).await {
            return Some((
                EndedTask {
                    reason: Some(reason),
                    ..EndedTask::new(
                        position,
                        fence,
                        TaskStatus::Cancelled,
                        attempt,
                        started_at,
                        now(),
                    )
                },
                None,
            ));
        }
        attempt += 1;
        started_at = now();
        runner.store_retry_start(fence, started_at).await;
    }
}

/// One attempt, bounded by the task's timeout; a panic in the task becomes a failure.
async fn run_attempt(
    task: &Arc<dyn Task>,
    options: &TaskOptions,
    input: SharedInput,
    current: CurrentAttempt,
) -> Result<Output, TaskError> {
    // Run in place: dropping it (timeout, cancellation) stops it, as aborting a task would.
    // The task's future is made inside the scope: making it may read the current attempt.
    let runner = task.clone();
    let attempt = CatchUnwind(Box::pin(
        CURRENT.scope(current, async move { runner.execute_shared(input).await }),
    ));
    let joined = match options.timeout {
        None => attempt.await,
        Some(limit) => match tokio::time::timeout(limit, attempt).await {
            Ok(joined) => joined,
            Err(_) => {
                let message = format_args!(
                    "task '{}' timed out after {} s",
                    task.id(),
                    limit.as_secs_f64()
                );
                let error = TaskError::engine(EngineFailure::TimedOut, message);
                return Err(if options.retry_timeouts {
                    TaskError {
                        kind: TaskErrorKind::Retryable,
                        ..error
                    }
                } else {
                    error
                });
            }
        },
    };
    joined.unwrap_or_else(|message| Err(TaskError::new(message)))
}

/// A task's output as the JSON stored, or a failure if it is larger than a database stores.
fn stored_json(task_id: &str, output: &Output) -> Result<String, TaskError> {
    let json = output.to_json();
    if json.len() <= MAX_OUTPUT_BYTES {
        return Ok(json);
    }
    Err(TaskError::engine(
        EngineFailure::InvalidOutput,
        format_args!(
            "task '{task_id}' returned {} bytes of JSON; a task's output is stored in one database value of at most {MAX_OUTPUT_BYTES} bytes",
            json.len()
        ),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    const POSITION: usize = 3;
    const FENCE: u32 = 2;
    const ATTEMPT: u32 = 4;

    /// `conclude` for attempt [`ATTEMPT`] of the task at [`POSITION`] under fence [`FENCE`].
    fn conclude_now(ended: AttemptEnd, retries_left: bool) -> Result<EndedTask, Again> {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        conclude(ended, retries_left, POSITION, FENCE, ATTEMPT, at, at)
    }

    /// The record of attempt [`ATTEMPT`] as `conclude_now` makes it.
    fn record(status: TaskStatus, error: Option<&str>) -> AttemptRecord {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        AttemptRecord {
            attempt: ATTEMPT,
            status,
            error: error.map(String::from),
            started_at: at,
            completed_at: at,
        }
    }

    /// The end `conclude_now` makes with `status`, its attempt recorded with `error`.
    fn ended(status: TaskStatus, error: Option<&str>) -> EndedTask {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        EndedTask {
            last_attempt: Some(record(status, error)),
            ..EndedTask::new(POSITION, FENCE, status, ATTEMPT, at, at)
        }
    }

    fn error(kind: TaskErrorKind) -> TaskError {
        TaskError {
            message: "ValueError: boom".into(),
            traceback: Some("Traceback: here".into()),
            kind,
        }
    }

    #[test]
    fn an_output_completes_the_task_with_its_json() {
        let end = conclude_now(AttemptEnd::Completed("{\"a\":1}".into()), true);
        let expected = EndedTask {
            output_json: Some("{\"a\":1}".into()),
            ..ended(TaskStatus::Completed, None)
        };
        assert_eq!(end, Ok(expected));
    }

    #[test]
    fn a_retryable_failure_with_retries_left_is_stored_and_retried() {
        let end = conclude_now(AttemptEnd::Failed(error(TaskErrorKind::Retryable)), true);
        assert_eq!(
            end,
            Err(Again::Retry(record(
                TaskStatus::Failed,
                Some("ValueError: boom")
            )))
        );
    }

    #[test]
    fn a_failure_not_retried_fails_the_task_with_its_traceback() {
        for (kind, retries_left) in [
            (TaskErrorKind::Retryable, false),
            (TaskErrorKind::Fatal, true),
            (TaskErrorKind::Fatal, false),
        ] {
            let end = conclude_now(AttemptEnd::Failed(error(kind)), retries_left);
            let expected = EndedTask {
                error: Some("ValueError: boom".into()),
                traceback: Some("Traceback: here".into()),
                ..ended(TaskStatus::Failed, Some("ValueError: boom"))
            };
            assert_eq!(end, Ok(expected), "{kind:?}, retries left: {retries_left}");
        }
    }

    #[test]
    fn a_snooze_runs_the_task_again_using_no_retry() {
        let delay = std::time::Duration::from_secs(30);
        for retries_left in [true, false] {
            let end = conclude_now(AttemptEnd::Failed(TaskError::snooze(delay)), retries_left);
            let snoozed = record(TaskStatus::Snoozed, Some("snoozed for 30 s"));
            assert_eq!(end, Err(Again::Snooze(snoozed, delay)));
        }
    }

    #[test]
    fn a_skip_ends_the_task_skipped_with_its_message_as_reason_even_with_retries_left() {
        let end = conclude_now(AttemptEnd::Failed(error(TaskErrorKind::Skip)), true);
        let expected = EndedTask {
            reason: Some("ValueError: boom".into()),
            ..ended(TaskStatus::Skipped, Some("ValueError: boom"))
        };
        assert_eq!(end, Ok(expected));
    }

    #[test]
    fn a_cancellation_from_outside_or_from_the_task_ends_it_cancelled_with_the_reason() {
        let expected = EndedTask {
            reason: Some("ValueError: boom".into()),
            ..ended(TaskStatus::Cancelled, Some("ValueError: boom"))
        };
        let outside = conclude_now(AttemptEnd::Cancelled("ValueError: boom".into()), true);
        assert_eq!(outside, Ok(expected.clone()));
        let inside = conclude_now(AttemptEnd::Failed(error(TaskErrorKind::Cancelled)), true);
        assert_eq!(inside, Ok(expected), "the task's traceback is not kept");
    }
}

//! Runs one execution: starts each task the moment its upstream tasks are done and its trigger
//! rule allows, until every task has ended or the execution is cancelled.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::attempt::{run_task, TaskEnd, TaskRunner};
use super::lineage::{share, Lineage, INPUT};
use super::result::{now, ExecutionResult, ExecutionStatus, TaskResult, TaskStatus};
use crate::context::Context;
use crate::database::records::{NewTask, StartMarker, TaskBatch, TaskOutcome};
use crate::database::Database;
use crate::error::Result;
use crate::policy::UpstreamOutcome;
use crate::workflow::Workflow;

/// Sends the reason an execution must stop; every task runner of the execution listens.
pub(crate) type CancelSender = watch::Sender<Option<String>>;

/// What a finished task runner hands back to the scheduler.
struct Finished {
    position: usize,
    end: Result<TaskEnd>,
}

/// The state of one execution while it runs.
struct Run<'a> {
    db: &'a Database,
    workflow: &'a Workflow,
    permits: Arc<Semaphore>,
    record: ExecutionResult,
    /// Lineage of each ended task whose dependents have not all taken their input yet.
    lineages: Vec<Option<Lineage>>,
    /// Input lineage of each running task, kept to build its own lineage when it ends.
    inputs: Vec<Option<Lineage>>,
    /// Upstream tasks of each task that have not ended yet.
    waiting_on: Vec<usize>,
    /// Dependents of each task that have not taken their input yet.
    unconsumed: Vec<usize>,
    input: Lineage,
    final_context: Lineage,
    ready: VecDeque<usize>,
    running: JoinSet<Finished>,
    cancel: Arc<CancelSender>,
    cancelled: Option<String>,
    /// Task changes not yet written; one transaction writes them all.
    batch: TaskBatch,
    /// Tasks made ready by the changes in `batch`: they start once it is committed.
    batch_ready: Vec<usize>,
    /// Batches being committed, each yielding the tasks it unblocks.
    commits: JoinSet<Result<Vec<usize>>>,
    /// When to write the start markers of tasks still running, so the database shows them Running.
    starts_due: Option<tokio::time::Instant>,
}

/// How long a start marker may wait for the next batch before it is written on its own.
const START_MARKER_DELAY: Duration = Duration::from_millis(100);

/// Records a new execution of `workflow` on `input`, runs it and records how it ended.
pub(crate) async fn execute(
    db: &Database,
    permits: Arc<Semaphore>,
    workflow: &Workflow,
    record: ExecutionResult,
    cancel: Arc<CancelSender>,
    timeout: Option<Duration>,
) -> Result<ExecutionResult> {
    let mut input = Lineage::default();
    input.absorb(INPUT, &share(record.input_context.clone()));
    let new_tasks = workflow
        .tasks()
        .iter()
        .map(|t| NewTask {
            task_id: t.id().to_string(),
            dependencies: t.dependencies().to_vec(),
        })
        .collect();
    db.create_execution(&record, new_tasks).await?;

    let n = workflow.len();
    let mut run = Run {
        db,
        workflow,
        permits,
        record,
        lineages: vec![None; n],
        inputs: vec![None; n],
        waiting_on: (0..n).map(|i| workflow.dependencies_of(i).len()).collect(),
        unconsumed: (0..n).map(|i| workflow.dependents_of(i).len()).collect(),
        final_context: input.clone(),
        input,
        ready: (0..n)
            .filter(|&i| workflow.dependencies_of(i).is_empty())
            .collect(),
        running: JoinSet::new(),
        cancel,
        cancelled: None,
        batch: TaskBatch::default(),
        batch_ready: Vec::new(),
        commits: JoinSet::new(),
        starts_due: None,
    };
    let outcome = run.drive(timeout).await;
    run.finish(outcome).await
}

impl Run<'_> {
    /// Starts ready tasks as permits allow and reacts to completions and cancellation.
    ///
    /// Tasks that finish together are written in one transaction, committed in the background
    /// while other tasks go on; the dependents they unblock start only once it has committed, so
    /// every result is durable before it is used.
    async fn drive(&mut self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut cancel_requests = self.cancel.subscribe();
        while !(self.ready.is_empty() && self.running.is_empty() && self.commits.is_empty()) {
            let accepting = self.cancelled.is_none();
            tokio::select! {
                biased;
                Ok(()) = cancel_requests.changed(), if accepting => {
                    let reason = cancel_requests.borrow_and_update().clone();
                    if let Some(reason) = reason {
                        self.cancel_remaining(reason);
                    }
                }
                () = sleep_until(deadline), if accepting && deadline.is_some() => {
                    let limit = timeout.unwrap_or_default().as_secs_f64();
                    self.cancel_remaining(format!("execution timed out after {limit} s"));
                }
                Some(committed) = self.commits.join_next(), if !self.commits.is_empty() => {
                    let unblocked = committed.expect("commits are never aborted while the run drives")?;
                    if self.cancelled.is_none() {
                        self.ready.extend(unblocked);
                    }
                    self.flush();
                }
                Some(joined) = self.running.join_next(), if !self.running.is_empty() => {
                    self.on_finished(joined.expect("task runners are never aborted and catch task panics"))?;
                    while let Some(joined) = self.running.try_join_next() {
                        self.on_finished(joined.expect("task runners are never aborted and catch task panics"))?;
                    }
                    self.flush();
                }
                () = sleep_until(self.starts_due), if self.starts_due.is_some() => {
                    self.flush();
                }
                permit = self.permits.clone().acquire_owned(), if accepting && !self.ready.is_empty() => {
                    let position = self.ready.pop_front().expect("ready is not empty");
                    self.start(position, permit.expect("the executor never closes its semaphore"));
                }
            }
        }
        Ok(())
    }

    /// Starts committing the pending task changes in one transaction, in the background.
    /// One commit is in flight at a time (so transactions never wait on each other's rows);
    /// changes made meanwhile form the next batch, flushed when it lands.
    fn flush(&mut self) {
        self.starts_due = None;
        if !self.commits.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let unblocked = std::mem::take(&mut self.batch_ready);
        if batch.is_empty() {
            self.ready.extend(unblocked);
            return;
        }
        let db = self.db.clone();
        let execution_id = self.record.execution_id;
        self.commits.spawn(async move {
            db.commit_batch(execution_id, batch).await?;
            Ok(unblocked)
        });
    }

    /// Takes a task's input: its upstream lineages merged (the workflow input for a root task).
    fn take_input(&mut self, position: usize) -> Lineage {
        let deps = self.workflow.dependencies_of(position);
        let input = if deps.is_empty() {
            self.input.clone()
        } else {
            Lineage::union(deps.iter().filter_map(|&d| self.lineages[d].as_ref()))
        };
        for &dep in deps {
            self.unconsumed[dep] -= 1;
            if self.unconsumed[dep] == 0 {
                self.lineages[dep] = None;
            }
        }
        input
    }

    fn start(&mut self, position: usize, permit: OwnedSemaphorePermit) {
        let input = self.take_input(position);
        let context = input.to_context();
        if !self.workflow.dependents_of(position).is_empty() {
            self.inputs[position] = Some(input);
        }
        let started_at = now();
        let result = &mut self.record.task_results[position];
        result.status = TaskStatus::Running;
        self.batch.started.push(StartMarker {
            task_id: result.task_id.clone(),
            attempt: 1,
            started_at,
        });
        self.starts_due
            .get_or_insert_with(|| tokio::time::Instant::now() + START_MARKER_DELAY);
        let runner = TaskRunner {
            db: self.db.clone(),
            execution_id: self.record.execution_id,
            task: self.workflow.tasks()[position].clone(),
            permits: self.permits.clone(),
            cancel: self.cancel.subscribe(),
        };
        self.running.spawn(async move {
            let end = run_task(runner, context, permit, started_at).await;
            Finished { position, end }
        });
    }

    /// Takes in a finished task: its result joins the batch, its dependents are settled.
    fn on_finished(&mut self, finished: Finished) -> Result<()> {
        let Finished { position, end } = finished;
        let end = end?;
        if let Some(output) = &end.output {
            self.final_context.absorb(position as i64, output);
        }
        if let Some(mut lineage) = self.inputs[position].take() {
            if let Some(output) = &end.output {
                lineage.absorb(position as i64, output);
            }
            self.lineages[position] = Some(lineage);
        }
        let result = &mut self.record.task_results[position];
        let mut outcome = end.outcome;
        outcome.attempts = end.history.len() as u32;
        outcome.started_at = end.history.last().map(|a| a.started_at);
        result.status = outcome.status;
        result.error = outcome.error.clone();
        result.traceback = outcome.traceback.clone();
        result.reason = outcome.reason.clone();
        result.attempts = outcome.attempts;
        result.started_at = outcome.started_at;
        result.completed_at = Some(outcome.completed_at);
        result.history = end.history;
        let task_id = result.task_id.clone();
        if let Some(attempt) = end.last_attempt {
            self.batch.attempts.push((task_id.clone(), attempt));
        }
        self.batch.ended.push((task_id, outcome));
        self.settle_dependents(position);
        Ok(())
    }

    /// Queues or skips each dependent of an ended task whose upstream tasks have all ended.
    fn settle_dependents(&mut self, ended: usize) {
        let mut settled = vec![ended];
        while let Some(position) = settled.pop() {
            for &next in self.workflow.dependents_of(position) {
                self.waiting_on[next] -= 1;
                if self.waiting_on[next] > 0
                    || self.record.task_results[next].status != TaskStatus::Pending
                {
                    continue;
                }
                let upstream: Vec<UpstreamOutcome> = self
                    .workflow
                    .dependencies_of(next)
                    .iter()
                    .map(|&d| upstream_outcome(self.record.task_results[d].status))
                    .collect();
                let rule = self.workflow.tasks()[next].options().trigger_rule;
                if rule.is_met(&upstream) {
                    self.batch_ready.push(next);
                    continue;
                }
                let reason = format!(
                    "trigger rule '{}' not met: {}",
                    rule.as_str(),
                    self.describe_upstream(next)
                );
                let lineage = self.take_input(next);
                if !self.workflow.dependents_of(next).is_empty() {
                    self.lineages[next] = Some(lineage);
                }
                let result = &mut self.record.task_results[next];
                result.status = TaskStatus::Skipped;
                result.reason = Some(reason.clone());
                result.completed_at = Some(now());
                self.batch
                    .ended
                    .push((result.task_id.clone(), unstarted_outcome(result)));
                settled.push(next);
            }
        }
    }

    fn describe_upstream(&self, position: usize) -> String {
        self.workflow
            .dependencies_of(position)
            .iter()
            .map(|&d| {
                let upstream = &self.record.task_results[d];
                format!("'{}' {}", upstream.task_id, upstream.status)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Stops starting tasks, tells running ones to stop and marks every unstarted task Cancelled.
    fn cancel_remaining(&mut self, reason: String) {
        self.cancel.send_replace(Some(reason.clone()));
        self.cancelled = Some(reason.clone());
        self.ready.clear();
        let completed_at = now();
        for result in &mut self.record.task_results {
            if result.status == TaskStatus::Pending {
                result.status = TaskStatus::Cancelled;
                result.reason = Some(reason.clone());
                result.completed_at = Some(completed_at);
                self.batch
                    .ended
                    .push((result.task_id.clone(), unstarted_outcome(result)));
            }
        }
        self.batch_ready.clear();
        self.flush();
    }

    /// Records the execution's final state; on an engine error, records it as failed and returns the error.
    async fn finish(mut self, outcome: Result<()>) -> Result<ExecutionResult> {
        if outcome.is_err() {
            self.cancel.send_replace(Some("the engine failed".into()));
            while self.running.join_next().await.is_some() {}
            while self.commits.join_next().await.is_some() {}
        }
        let failures: Vec<&TaskResult> = self
            .record
            .task_results
            .iter()
            .filter(|t| t.status == TaskStatus::Failed)
            .collect();
        let (status, error) = match (&outcome, &self.cancelled, failures.first()) {
            (Err(engine_error), _, _) => (
                ExecutionStatus::Failed,
                Some(format!("execution aborted: {engine_error}")),
            ),
            (Ok(()), Some(reason), _) => (
                ExecutionStatus::Cancelled,
                Some(format!("cancelled: {reason}")),
            ),
            (Ok(()), None, None) => (ExecutionStatus::Completed, None),
            (Ok(()), None, Some(first)) => {
                let mut message = format!(
                    "task '{}' failed: {}",
                    first.task_id,
                    first.error.as_deref().unwrap_or("unknown error")
                );
                if failures.len() > 1 {
                    message.push_str(&format!(" (and {} more failed tasks)", failures.len() - 1));
                }
                (ExecutionStatus::Failed, Some(message))
            }
        };
        self.record.status = status;
        self.record.error = error;
        self.record.final_context = Some(self.final_context.to_context());
        self.record.completed_at = Some(now());
        let stored = self.db.finish_execution(&self.record).await;
        outcome?;
        stored?;
        Ok(self.record)
    }
}

fn upstream_outcome(status: TaskStatus) -> UpstreamOutcome {
    match status {
        TaskStatus::Completed => UpstreamOutcome::Completed,
        TaskStatus::Failed => UpstreamOutcome::Failed,
        _ => UpstreamOutcome::Skipped,
    }
}

fn unstarted_outcome(result: &TaskResult) -> TaskOutcome {
    TaskOutcome {
        attempts: 0,
        started_at: None,
        status: result.status,
        output_json: None,
        error: None,
        traceback: None,
        reason: result.reason.clone(),
        completed_at: result.completed_at.unwrap_or_else(now),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A fresh record for an execution about to start.
pub(crate) fn new_record(
    workflow: &Workflow,
    input: Context,
    execution_id: uuid::Uuid,
) -> ExecutionResult {
    ExecutionResult {
        execution_id,
        workflow_name: workflow.name().to_string(),
        workflow_version: workflow.version().to_string(),
        status: ExecutionStatus::Running,
        input_context: input,
        final_context: None,
        error: None,
        started_at: now(),
        completed_at: None,
        task_results: workflow.task_ids().map(TaskResult::pending).collect(),
    }
}

//! Runs one execution: starts each task the moment its upstream tasks are done.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::lineage::{share, Lineage, SharedOutput, INPUT};
use super::result::{now, ExecutionResult, ExecutionStatus, TaskResult, TaskStatus};
use crate::context::Context;
use crate::database::records::{NewTask, TaskOutcome};
use crate::database::Database;
use crate::error::Result;
use crate::task::TaskError;
use crate::workflow::Workflow;

/// What a finished task hands back to the scheduler.
struct Finished {
    position: usize,
    result: Result<(Result<SharedOutput, TaskError>, DateTime<Utc>)>,
}

/// The state of one execution while it runs.
struct Run<'a> {
    db: &'a Database,
    workflow: &'a Workflow,
    record: ExecutionResult,
    /// Lineage of each completed task that still has dependents waiting to start.
    lineages: Vec<Option<Lineage>>,
    /// Input lineage of each running task, kept to build its own lineage when it completes.
    inputs: Vec<Option<Lineage>>,
    /// Upstream tasks of each task that have not finished yet.
    waiting_on: Vec<usize>,
    /// Dependents of each task that have not started (or been skipped) yet.
    unconsumed: Vec<usize>,
    input: Lineage,
    final_context: Lineage,
    ready: VecDeque<usize>,
    running: JoinSet<Finished>,
}

/// Executes `workflow` on `input`, recording every step in `db`.
pub(crate) async fn execute(
    db: &Database,
    permits: &Arc<Semaphore>,
    workflow: &Workflow,
    input: Context,
) -> Result<ExecutionResult> {
    let mut input_lineage = Lineage::default();
    input_lineage.absorb(INPUT, &share(input.clone()));
    let record = ExecutionResult {
        execution_id: Uuid::new_v4(),
        workflow_name: workflow.name().to_string(),
        workflow_version: workflow.version().to_string(),
        status: ExecutionStatus::Running,
        input_context: input,
        final_context: None,
        error: None,
        started_at: now(),
        completed_at: None,
        task_results: workflow.task_ids().map(TaskResult::pending).collect(),
    };
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
        record,
        lineages: vec![None; n],
        inputs: vec![None; n],
        waiting_on: (0..n).map(|i| workflow.dependencies_of(i).len()).collect(),
        unconsumed: (0..n).map(|i| workflow.dependents_of(i).len()).collect(),
        final_context: input_lineage.clone(),
        input: input_lineage,
        ready: (0..n)
            .filter(|&i| workflow.dependencies_of(i).is_empty())
            .collect(),
        running: JoinSet::new(),
    };
    let outcome = run.drive(permits).await;
    run.finish(outcome).await
}

impl Run<'_> {
    /// Starts ready tasks as permits allow and reacts to each completion until nothing is left.
    async fn drive(&mut self, permits: &Arc<Semaphore>) -> Result<()> {
        while !(self.ready.is_empty() && self.running.is_empty()) {
            tokio::select! {
                permit = permits.clone().acquire_owned(), if !self.ready.is_empty() => {
                    let position = self.ready.pop_front().expect("ready is not empty");
                    self.start(position, permit.expect("the executor never closes its semaphore"));
                }
                Some(joined) = self.running.join_next(), if !self.running.is_empty() => {
                    let finished = joined.expect("task runners catch task panics and are never aborted");
                    self.on_finished(finished).await?;
                }
            }
        }
        Ok(())
    }

    fn start(&mut self, position: usize, permit: OwnedSemaphorePermit) {
        let deps = self.workflow.dependencies_of(position);
        let input = if deps.is_empty() {
            self.input.clone()
        } else {
            Lineage::union(deps.iter().map(|&d| {
                self.lineages[d]
                    .as_ref()
                    .expect("completed upstream keeps its lineage")
            }))
        };
        for &dep in deps {
            self.release(dep);
        }
        let context = input.to_context();
        if !self.workflow.dependents_of(position).is_empty() {
            self.inputs[position] = Some(input);
        }
        let task = self.workflow.tasks()[position].clone();
        let db = self.db.clone();
        let execution_id = self.record.execution_id;
        let started_at = now();
        let result = &mut self.record.task_results[position];
        result.status = TaskStatus::Running;
        result.attempts += 1;
        result.started_at = Some(started_at);
        self.running.spawn(async move {
            let result = async {
                db.start_task(execution_id, task.id().to_string(), started_at)
                    .await?;
                // A separate tokio task turns a panicking task into a failure instead of a crash.
                let runner = task.clone();
                let outcome = match tokio::spawn(async move { runner.execute(context).await }).await
                {
                    Ok(outcome) => outcome,
                    Err(join_error) => Err(TaskError::new(format!("panic: {join_error}"))),
                };
                drop(permit);
                let (status, output, output_json, error, traceback) = match outcome {
                    Ok(output) => {
                        let json = output.to_json();
                        (
                            TaskStatus::Completed,
                            Ok(share(output)),
                            Some(json),
                            None,
                            None,
                        )
                    }
                    Err(e) => (
                        TaskStatus::Failed,
                        Err(e.clone()),
                        None,
                        Some(e.message),
                        e.traceback,
                    ),
                };
                let completed_at = now();
                let outcome = TaskOutcome {
                    status,
                    output_json,
                    error,
                    traceback,
                    completed_at,
                };
                db.finish_task(execution_id, task.id().to_string(), outcome)
                    .await?;
                Ok((output, completed_at))
            }
            .await;
            Finished { position, result }
        });
    }

    /// Drops an upstream lineage once its last dependent has taken what it needs.
    fn release(&mut self, position: usize) {
        self.unconsumed[position] -= 1;
        if self.unconsumed[position] == 0 {
            self.lineages[position] = None;
        }
    }

    async fn on_finished(&mut self, finished: Finished) -> Result<()> {
        let Finished { position, result } = finished;
        let (output, completed_at) = result?;
        let task_result = &mut self.record.task_results[position];
        task_result.completed_at = Some(completed_at);
        match output {
            Ok(output) => {
                task_result.status = TaskStatus::Completed;
                self.final_context.absorb(position as i64, &output);
                if let Some(mut lineage) = self.inputs[position].take() {
                    lineage.absorb(position as i64, &output);
                    self.lineages[position] = Some(lineage);
                }
            }
            Err(error) => {
                task_result.status = TaskStatus::Failed;
                task_result.error = Some(error.message);
                task_result.traceback = error.traceback;
                self.inputs[position] = None;
            }
        }
        self.settle_dependents(position).await
    }

    /// Starts or skips the dependents of a finished task whose upstream tasks are now all done.
    async fn settle_dependents(&mut self, finished: usize) -> Result<()> {
        let mut skipped = Vec::new();
        let mut settled = vec![finished];
        while let Some(position) = settled.pop() {
            for &next in self.workflow.dependents_of(position) {
                self.waiting_on[next] -= 1;
                if self.waiting_on[next] > 0 {
                    continue;
                }
                let upstream_completed = self
                    .workflow
                    .dependencies_of(next)
                    .iter()
                    .all(|&d| self.record.task_results[d].status == TaskStatus::Completed);
                if upstream_completed {
                    self.ready.push_back(next);
                } else {
                    for &dep in self.workflow.dependencies_of(next) {
                        if self.record.task_results[dep].status == TaskStatus::Completed {
                            self.release(dep);
                        }
                    }
                    self.record.task_results[next].status = TaskStatus::Skipped;
                    skipped.push(self.workflow.tasks()[next].id().to_string());
                    settled.push(next);
                }
            }
        }
        self.db.skip_tasks(self.record.execution_id, skipped).await
    }

    /// Records the execution's final state; on an engine error, records it as failed and returns the error.
    async fn finish(mut self, outcome: Result<()>) -> Result<ExecutionResult> {
        self.running.abort_all();
        let failures: Vec<&TaskResult> = self
            .record
            .task_results
            .iter()
            .filter(|t| t.status == TaskStatus::Failed)
            .collect();
        let (status, error) = match (&outcome, failures.first()) {
            (Err(engine_error), _) => (
                ExecutionStatus::Failed,
                Some(format!("execution aborted: {engine_error}")),
            ),
            (Ok(()), None) => (ExecutionStatus::Completed, None),
            (Ok(()), Some(first)) => {
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

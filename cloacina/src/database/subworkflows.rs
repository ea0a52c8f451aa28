//! Sub-workflows in storage: a node's step, in one transaction, submits its child execution
//! (once: the child's idempotency key names the parent and the node), or reads how the child
//! ended, resumes it for a retry, or parks the node until the child's end wakes it.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use uuid::Uuid;

use super::connection::{Conn, RunOn};
use super::schema::{task_executions, workflow_executions};
use super::waits::{Park, Parked, Wake};
use super::Database;
use crate::context::Context;
use crate::error::Result;
use crate::model::subworkflows::{
    child_key, child_wait_key, failure_message, timeout_message, waiting_reason, Subworkflow,
    MAX_DEPTH,
};
use crate::model::waits::WaitReason;
use crate::model::{now, AttemptRecord, ExecutionResult, ExecutionStatus, TaskStatus};

/// What a node's step found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ChildStep {
    /// The node waits for its child (or could not be parked, as `Parked` says).
    Parked(Parked),
    /// The child completed with this final context's JSON.
    Completed(String),
    /// The node fails with this message (its child failed with no retry left, ran past its
    /// timeout, or could not be submitted).
    Failed(String),
}

/// A node's child: what to submit, and how the node retries it.
#[derive(Debug, Clone)]
pub(crate) struct ChildRun {
    pub subworkflow: Subworkflow,
    /// The child's input.
    pub input: Context,
    /// How many times a failed child is resumed.
    pub retries: u32,
    /// The lease of the worker running the node (to explain a child no live worker runs).
    pub lease: Duration,
    /// The attempt the node's claim runs, recorded as Failed when its child is resumed.
    pub attempt: AttemptRecord,
}

/// What the node's row says of its child and its wait.
type NodeRow = (Option<String>, Option<String>, Option<NaiveDateTime>, i32);

impl Conn<'_> {
    /// The node's step; see `Database::child_step`.
    fn child_step(&mut self, park: &Park, run: &ChildRun) -> Result<ChildStep> {
        let id = park.execution.to_string();
        // Shared: the steps of one parent's nodes (a mapped sub-workflow's children) run side
        // by side; a cancel or a commit of the parent, which lock it exclusively, still waits
        // for them (and they for it), so no child is submitted after a cancel returns.
        let Some(locked) = self.lock_execution_shared(&id)? else {
            return Ok(ChildStep::Parked(Parked::Lost));
        };
        if let Some(reason) = locked.cancel_reason {
            return Ok(ChildStep::Parked(Parked::Cancelled(reason)));
        }
        let (linked, waited, wake_at, retries_used): NodeRow = task_executions::table
            .find((&id, &park.task_id))
            .select((
                task_executions::child_execution_id,
                task_executions::wait_key,
                task_executions::wake_at,
                task_executions::retries_used,
            ))
            .get_result_on(self)?;
        let sub = &run.subworkflow;
        let child = match linked.as_deref().and_then(|c| Uuid::parse_str(c).ok()) {
            Some(child) => child,
            None => match self.submit_child(park, run)? {
                Ok(child) => child,
                Err(message) => return Ok(ChildStep::Failed(message)),
            },
        };
        // Locked, so the child's end either commits first (and is read here) or waits for
        // this park (and wakes it): a child commit locks its execution's row first.
        let child_id = child.to_string();
        let Some(child_locked) = self.lock_execution(&child_id)? else {
            return Ok(ChildStep::Failed(format!(
                "SubworkflowError: child execution {child} of workflow '{}' is no longer in the database",
                run.subworkflow.workflow_name
            )));
        };
        let status = child_locked.status;
        let (error, final_context): (Option<String>, Option<String>) = workflow_executions::table
            .find(&child_id)
            .select((
                workflow_executions::error,
                workflow_executions::final_context,
            ))
            .get_result_on(self)?;
        let clock = self.lease_clock()?;
        let reason = WaitReason::Child(waiting_reason(child, &sub.workflow_name));
        let mut park = Park {
            reason,
            ..park.clone()
        };
        // The node's wait in this run: set once it parked on the child (a resume of the
        // parent, or a stored retry of the node, starts a new run).
        let parked_before = waited.is_some();
        match status {
            ExecutionStatus::Completed => {
                return Ok(ChildStep::Completed(
                    final_context.unwrap_or_else(|| "{}".into()),
                ))
            }
            ExecutionStatus::Pending | ExecutionStatus::Running => {
                if let (true, Some(at), Some(timeout)) = (parked_before, wake_at, sub.timeout) {
                    if at <= clock {
                        self.cancel_tree(
                            child,
                            &timeout_message(child, &sub.workflow_name, timeout),
                            now().naive_utc(),
                        )?;
                        return Ok(ChildStep::Failed(timeout_message(
                            child,
                            &sub.workflow_name,
                            timeout,
                        )));
                    }
                }
            }
            ExecutionStatus::Failed | ExecutionStatus::Cancelled => {
                if parked_before && retries_used as u32 >= run.retries {
                    let message =
                        failure_message(child, &sub.workflow_name, status, error.as_deref());
                    return Ok(ChildStep::Failed(message));
                }
                if parked_before {
                    // A retry: the failed run is recorded, and the same child resumed.
                    park.attempt = Some(AttemptRecord {
                        status: TaskStatus::Failed,
                        error: Some(failure_message(
                            child,
                            &sub.workflow_name,
                            status,
                            error.as_deref(),
                        )),
                        completed_at: now(),
                        ..run.attempt.clone()
                    });
                    park.retry = true;
                }
                self.resume_execution(child, now().naive_utc())?;
            }
        }
        park.wake = match (parked_before, wake_at, sub.timeout) {
            (true, Some(at), _) if park.attempt.is_none() => Wake::At(at.and_utc()),
            (_, _, Some(timeout)) => Wake::After(timeout),
            _ => Wake::Never,
        };
        let key = child_wait_key(child);
        Ok(ChildStep::Parked(self.park_locked(&park, Some(&key))?))
    }

    /// Submits the node's child and links it to the node; the child's id, or why the node
    /// fails instead.
    fn submit_child(
        &mut self,
        park: &Park,
        run: &ChildRun,
    ) -> Result<std::result::Result<Uuid, String>> {
        let id = park.execution.to_string();
        let depth: i32 = workflow_executions::table
            .find(&id)
            .select(workflow_executions::depth)
            .get_result_on(self)?;
        let depth = depth.max(0) as u32 + 1;
        let sub = &run.subworkflow;
        if depth > MAX_DEPTH {
            return Ok(Err(format!(
                "SubworkflowError: workflow '{}' would run {depth} levels below its top-level execution; at most {MAX_DEPTH} are allowed",
                sub.workflow_name
            )));
        }
        let mut record = ExecutionResult::pending(
            Uuid::new_v4(),
            &sub.workflow_name,
            &sub.workflow_version,
            run.input.clone(),
            &sub.plan,
        );
        record.parent_execution_id = Some(park.execution);
        record.parent_task_id = Some(park.task_id.clone());
        record.depth = depth;
        let key = child_key(park.execution, &park.task_id);
        let submitted = self.submit_new(&record, &sub.plan, Some(key), None, None, run.lease)?;
        diesel::update(task_executions::table.find((&id, &park.task_id)))
            .set(task_executions::child_execution_id.eq(Some(submitted.execution_id.to_string())))
            .execute_on(self)?;
        Ok(Ok(submitted.execution_id))
    }
}

impl Database {
    /// A sub-workflow node's step for its claim `park`: submits its child the first time, and
    /// then each time it is claimed reads how the child ended (resuming it for a retry, or
    /// when the node runs again after its execution was resumed) or parks the node again.
    pub(crate) async fn child_step(&self, park: Park, run: ChildRun) -> Result<ChildStep> {
        self.run(move |pool| pool.write_transaction(|conn| conn.child_step(&park, &run)))
            .await
    }
}

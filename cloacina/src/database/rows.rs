//! Rows as stored: an execution, its tasks and their attempts, and schedules; and the rows
//! that record a newly submitted execution.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::cached::{Bind, Cached};
use super::schema::{schedules, task_attempts, task_executions, workflow_executions};
use crate::model::{AttemptRecord, ExecutionPlan, ExecutionResult, ExecutionStatus, TaskStatus};

/// The queue every task is in until named queues arrive.
pub(crate) const DEFAULT_QUEUE: &str = "default";

/// An execution's row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = workflow_executions)]
pub(crate) struct ExecutionRow {
    pub(crate) id: String,
    pub(crate) workflow_name: String,
    pub(crate) workflow_version: String,
    pub(crate) status: String,
    pub(crate) input_context: String,
    pub(crate) final_context: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) started_at: NaiveDateTime,
    pub(crate) completed_at: Option<NaiveDateTime>,
    pub(crate) plan: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) deadline: Option<NaiveDateTime>,
    pub(crate) cancel_reason: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) priority: i32,
    pub(crate) parent_execution_id: Option<String>,
    pub(crate) parent_task_id: Option<String>,
    pub(crate) depth: i32,
    pub(crate) hook_outcome: Option<String>,
    pub(crate) hooks: i32,
}

/// A task's row as inserted and read back, without its output: that can be large, and only
/// `load_outputs` reads it.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = task_executions)]
pub(crate) struct TaskRow {
    pub(crate) execution_id: String,
    pub(crate) task_id: String,
    pub(crate) position: i32,
    pub(crate) dependencies: String,
    pub(crate) status: String,
    pub(crate) attempt: i32,
    pub(crate) error: Option<String>,
    pub(crate) traceback: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) started_at: Option<NaiveDateTime>,
    pub(crate) completed_at: Option<NaiveDateTime>,
    pub(crate) ready_at: Option<NaiveDateTime>,
    pub(crate) waiting_on: i32,
    pub(crate) worker_id: Option<String>,
    pub(crate) map_index: i32,
    pub(crate) map_task: Option<String>,
    pub(crate) map_element: Option<String>,
    pub(crate) map_count: Option<i32>,
    pub(crate) map_counts: Option<String>,
    pub(crate) priority: i32,
    pub(crate) limit_keys: Option<String>,
    pub(crate) child_execution_id: Option<String>,
    pub(crate) hook: Option<String>,
}

impl TaskRow {
    /// A task's row as made: Pending, not ready, waiting on nothing, not a map's.
    pub(crate) fn new(execution_id: &str, task_id: String, position: usize) -> Self {
        Self {
            execution_id: execution_id.to_string(),
            task_id,
            position: position as i32,
            dependencies: "[]".to_string(),
            status: TaskStatus::Pending.as_str().to_string(),
            attempt: 0,
            error: None,
            traceback: None,
            reason: None,
            started_at: None,
            completed_at: None,
            ready_at: None,
            waiting_on: 0,
            worker_id: None,
            map_index: -1,
            map_task: None,
            map_element: None,
            map_count: None,
            map_counts: None,
            priority: 0,
            limit_keys: None,
            child_execution_id: None,
            hook: None,
        }
    }
}

/// One finished attempt of a task.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = task_attempts)]
pub(crate) struct AttemptRow {
    pub(crate) execution_id: String,
    pub(crate) task_id: String,
    pub(crate) attempt: i32,
    pub(crate) status: String,
    pub(crate) error: Option<String>,
    pub(crate) started_at: NaiveDateTime,
    pub(crate) completed_at: NaiveDateTime,
}

impl AttemptRow {
    /// The INSERT storing this row, as a statement prepared once per connection (diesel
    /// prepares an INSERT with a NULL in it anew each time).
    pub(crate) fn insert(&self) -> Cached<'_> {
        Cached::new(
            &[
                "INSERT INTO task_attempts (execution_id, task_id, attempt, status, error, \
                 started_at, completed_at) VALUES (",
                ", ",
                ", ",
                ", ",
                ", ",
                ", ",
                ", ",
                ")",
            ],
            vec![
                Bind::Text(Some(&self.execution_id)),
                Bind::Text(Some(&self.task_id)),
                Bind::Int(self.attempt),
                Bind::Text(Some(&self.status)),
                Bind::Text(self.error.as_deref()),
                Bind::Time(Some(self.started_at)),
                Bind::Time(Some(self.completed_at)),
            ],
        )
    }

    /// The row storing `attempt` of a task.
    pub(crate) fn new(execution_id: &str, task_id: &str, attempt: &AttemptRecord) -> Self {
        Self {
            execution_id: execution_id.to_string(),
            task_id: task_id.to_string(),
            attempt: attempt.attempt as i32,
            status: attempt.status.as_str().to_string(),
            error: attempt.error.clone(),
            started_at: attempt.started_at.naive_utc(),
            completed_at: attempt.completed_at.naive_utc(),
        }
    }
}

/// A schedule as stored.
#[derive(Queryable, Selectable)]
#[diesel(table_name = schedules)]
pub(crate) struct ScheduleRow {
    pub(crate) name: String,
    pub(crate) workflow_name: String,
    pub(crate) workflow_version: String,
    pub(crate) plan: String,
    pub(crate) cron: String,
    pub(crate) timezone: String,
    pub(crate) context: String,
    pub(crate) catchup: String,
    pub(crate) paused: bool,
    pub(crate) next_fire_at: Option<NaiveDateTime>,
    pub(crate) last_fire_at: Option<NaiveDateTime>,
    pub(crate) last_execution_id: Option<String>,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

/// The rows that record a newly submitted execution: Pending, its root tasks ready.
pub(crate) fn new_execution_rows(
    record: &ExecutionResult,
    plan: &ExecutionPlan,
    idempotency_key: Option<String>,
    deadline: Option<DateTime<Utc>>,
) -> (ExecutionRow, Vec<TaskRow>) {
    let id = record.execution_id.to_string();
    let submitted = record.started_at.naive_utc();
    let execution = ExecutionRow {
        id: id.clone(),
        workflow_name: record.workflow_name.clone(),
        workflow_version: record.workflow_version.clone(),
        status: ExecutionStatus::Pending.as_str().to_string(),
        input_context: record.input_context.to_json(),
        final_context: None,
        error: None,
        started_at: submitted,
        completed_at: None,
        plan: Some(plan.to_json()),
        idempotency_key,
        deadline: deadline.map(|d| d.naive_utc()),
        cancel_reason: None,
        reason: None,
        priority: record.priority,
        parent_execution_id: record.parent_execution_id.map(|p| p.to_string()),
        parent_task_id: record.parent_task_id.clone(),
        depth: record.depth as i32,
        hook_outcome: None,
        hooks: plan
            .tasks()
            .iter()
            .filter(|t| t.options.hook.is_some())
            .count() as i32,
    };
    let tasks = plan
        .tasks()
        .iter()
        .enumerate()
        .map(|(position, task)| TaskRow {
            dependencies: serde_json::to_string(
                &task
                    .dependencies
                    .iter()
                    .map(|&d| plan.tasks()[d].id.as_str())
                    .collect::<Vec<_>>(),
            )
            .expect("strings serialise"),
            // A root node is expanded, not claimed (see `Conn::start_nodes`).
            ready_at: (plan.is_root(position) && task.options.map.is_none()).then_some(submitted),
            hook: task.options.hook.map(|h| h.as_str().to_string()),
            waiting_on: task.dependencies.len() as i32,
            // -1: a node not expanded yet.
            map_count: task.options.map.as_ref().map(|_| -1),
            priority: record.priority.saturating_add(task.options.priority),
            ..TaskRow::new(&id, task.id.clone(), position)
        })
        .collect();
    (execution, tasks)
}

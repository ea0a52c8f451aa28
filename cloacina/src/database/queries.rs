//! Reading executions back: rows, `get_execution` and `list_executions`, written once for all backends.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use std::collections::HashMap;

use super::cached::{Bind, Cached};
use super::schema::{task_attempts, task_executions, workflow_executions};
use super::{with_connection, Database};
use crate::context::{Context, StoredContext};
use crate::error::{Error, Result};
use crate::model::{
    AttemptRecord, ExecutionPlan, ExecutionResult, ExecutionStatus, TaskResult, TaskStatus,
};

/// Rows per multi-row INSERT, well under every backend's bound-parameter limit.
const INSERT_CHUNK: usize = 1_000;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = workflow_executions)]
pub(crate) struct ExecutionRow {
    pub id: String,
    workflow_name: String,
    workflow_version: String,
    status: String,
    input_context: String,
    final_context: Option<String>,
    error: Option<String>,
    started_at: NaiveDateTime,
    completed_at: Option<NaiveDateTime>,
    pub plan: Option<String>,
    pub idempotency_key: Option<String>,
    pub deadline: Option<NaiveDateTime>,
    pub cancel_reason: Option<String>,
    reason: Option<String>,
}

/// A task's row as inserted and read back, without its output: that can be large, and only
/// `load_outputs` reads it.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = task_executions)]
pub(crate) struct TaskRow {
    execution_id: String,
    task_id: String,
    position: i32,
    dependencies: String,
    status: String,
    attempt: i32,
    error: Option<String>,
    traceback: Option<String>,
    reason: Option<String>,
    started_at: Option<NaiveDateTime>,
    completed_at: Option<NaiveDateTime>,
    ready_at: Option<NaiveDateTime>,
    waiting_on: i32,
    worker_id: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = task_attempts)]
pub(crate) struct AttemptRow {
    execution_id: String,
    task_id: String,
    attempt: i32,
    status: String,
    error: Option<String>,
    started_at: NaiveDateTime,
    completed_at: NaiveDateTime,
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

/// Which executions `list_executions` returns.
#[derive(Debug, Clone)]
pub struct ExecutionFilter {
    /// Only executions of this workflow.
    pub workflow_name: Option<String>,
    /// Only executions in this status.
    pub status: Option<ExecutionStatus>,
    /// At most this many, newest first.
    pub limit: i64,
    /// Skips this many of the newest first (for pages).
    pub offset: i64,
}

impl Default for ExecutionFilter {
    fn default() -> Self {
        Self {
            workflow_name: None,
            status: None,
            limit: 50,
            offset: 0,
        }
    }
}

/// Loads the rows of `$table` (as `$row`) that belong to the executions `$ids`, on any backend.
macro_rules! load_for_executions {
    ($conn:expr, $ids:expr, $table:ident, $row:ty) => {{
        let mut rows: Vec<$row> = Vec::new();
        for chunk in $ids.chunks(INSERT_CHUNK) {
            rows.extend(
                $table::table
                    .filter($table::execution_id.eq_any(chunk))
                    .select(<$row>::as_select())
                    .load::<$row>($conn)?,
            );
        }
        rows
    }};
}

impl Database {
    /// Reads one execution, its tasks and their attempts back.
    pub async fn get_execution(&self, execution_id: Uuid) -> Result<Option<ExecutionResult>> {
        let id = execution_id.to_string();
        let mut found = self
            .run(move |pool| {
                with_connection!(pool, |conn| {
                    let executions = workflow_executions::table
                        .find(&id)
                        .select(ExecutionRow::as_select())
                        .load(conn)?;
                    let ids = [id];
                    let tasks = load_for_executions!(conn, ids, task_executions, TaskRow);
                    let attempts = load_for_executions!(conn, ids, task_attempts, AttemptRow);
                    Ok((executions, tasks, attempts))
                })
            })
            .await
            .and_then(|(executions, tasks, attempts)| assemble(executions, tasks, attempts))?;
        Ok(found.pop())
    }

    /// Lists executions, newest first.
    pub async fn list_executions(&self, filter: ExecutionFilter) -> Result<Vec<ExecutionResult>> {
        self.run(move |pool| {
            with_connection!(pool, |conn| {
                let mut query = workflow_executions::table
                    .select(ExecutionRow::as_select())
                    .order((
                        workflow_executions::started_at.desc(),
                        workflow_executions::id.desc(),
                    ))
                    .limit(filter.limit)
                    .offset(filter.offset)
                    .into_boxed();
                if let Some(name) = filter.workflow_name {
                    query = query.filter(workflow_executions::workflow_name.eq(name));
                }
                if let Some(status) = filter.status {
                    query = query.filter(workflow_executions::status.eq(status.as_str()));
                }
                let executions: Vec<ExecutionRow> = query.load(conn)?;
                let ids: Vec<String> = executions.iter().map(|e| e.id.clone()).collect();
                let tasks = load_for_executions!(conn, ids, task_executions, TaskRow);
                let attempts = load_for_executions!(conn, ids, task_attempts, AttemptRow);
                Ok((executions, tasks, attempts))
            })
        })
        .await
        .and_then(|(executions, tasks, attempts)| assemble(executions, tasks, attempts))
    }
}

/// Joins execution rows with their task and attempt rows, keeping the executions' order.
fn assemble(
    executions: Vec<ExecutionRow>,
    tasks: Vec<TaskRow>,
    attempts: Vec<AttemptRow>,
) -> Result<Vec<ExecutionResult>> {
    let mut tasks_of: HashMap<String, Vec<TaskRow>> = HashMap::new();
    for task in tasks {
        tasks_of
            .entry(task.execution_id.clone())
            .or_default()
            .push(task);
    }
    let mut attempts_of: HashMap<(String, String), Vec<AttemptRow>> = HashMap::new();
    for attempt in attempts {
        attempts_of
            .entry((attempt.execution_id.clone(), attempt.task_id.clone()))
            .or_default()
            .push(attempt);
    }
    executions
        .into_iter()
        .map(|row| {
            let mut tasks = tasks_of.remove(&row.id).unwrap_or_default();
            tasks.sort_by_key(|t| t.position);
            let task_results = tasks
                .into_iter()
                .map(|t| {
                    let key = (t.execution_id.clone(), t.task_id.clone());
                    let mut history = attempts_of.remove(&key).unwrap_or_default();
                    history.sort_by_key(|a| a.attempt);
                    task_from_rows(t, history)
                })
                .collect::<Result<Vec<_>>>()?;
            execution_from_row(row, task_results)
        })
        .collect()
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::Database(format!("stored {what} {value:?} is not valid"))
}

fn task_status(name: &str) -> Result<TaskStatus> {
    TaskStatus::parse(name).ok_or_else(|| corrupt("task status", name))
}

fn task_from_rows(t: TaskRow, attempts: Vec<AttemptRow>) -> Result<TaskResult> {
    let history = attempts
        .into_iter()
        .map(|a| {
            Ok(AttemptRecord {
                attempt: a.attempt.max(0) as u32,
                status: task_status(&a.status)?,
                error: a.error,
                started_at: a.started_at.and_utc(),
                completed_at: a.completed_at.and_utc(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let dependencies: Vec<String> = serde_json::from_str(&t.dependencies)
        .map_err(|_| corrupt("task dependencies", &t.dependencies))?;
    Ok(TaskResult {
        dependencies,
        status: task_status(&t.status)?,
        attempts: t.attempt.max(0) as u32,
        error: t.error,
        traceback: t.traceback,
        reason: t.reason,
        history,
        started_at: t.started_at.map(|d| d.and_utc()),
        completed_at: t.completed_at.map(|d| d.and_utc()),
        task_id: t.task_id,
    })
}

fn execution_from_row(row: ExecutionRow, task_results: Vec<TaskResult>) -> Result<ExecutionResult> {
    Ok(ExecutionResult {
        execution_id: Uuid::parse_str(&row.id).map_err(|_| corrupt("execution id", &row.id))?,
        status: ExecutionStatus::parse(&row.status)
            .ok_or_else(|| corrupt("execution status", &row.status))?,
        input_context: StoredContext::from_json(row.input_context)?,
        final_context: row
            .final_context
            .map(StoredContext::from_json)
            .transpose()?,
        workflow_name: row.workflow_name,
        workflow_version: row.workflow_version,
        error: row.error,
        reason: row.reason,
        started_at: row.started_at.and_utc(),
        completed_at: row.completed_at.map(|d| d.and_utc()),
        task_results,
    })
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
    };
    let tasks = plan
        .tasks()
        .iter()
        .enumerate()
        .map(|(position, task)| TaskRow {
            execution_id: id.clone(),
            task_id: task.id.clone(),
            position: position as i32,
            dependencies: serde_json::to_string(
                &task
                    .dependencies
                    .iter()
                    .map(|&d| plan.tasks()[d].id.as_str())
                    .collect::<Vec<_>>(),
            )
            .expect("strings serialise"),
            status: TaskStatus::Pending.as_str().to_string(),
            attempt: 0,
            error: None,
            traceback: None,
            reason: None,
            started_at: None,
            completed_at: None,
            ready_at: task.dependencies.is_empty().then_some(submitted),
            waiting_on: task.dependencies.len() as i32,
            worker_id: None,
        })
        .collect();
    (execution, tasks)
}

/// What a worker needs to drive an execution it has claimed tasks of.
pub(crate) struct StoredExecution {
    pub workflow_name: String,
    pub plan: ExecutionPlan,
    pub input: Context,
    pub cancel_reason: Option<String>,
}

impl Database {
    /// Loads an execution's plan, input and cancel request; None if it has no stored plan.
    pub(crate) async fn load_stored(&self, execution: Uuid) -> Result<Option<StoredExecution>> {
        let id = execution.to_string();
        self.run(move |pool| {
            with_connection!(pool, |conn| {
                let row: Option<(String, Option<String>, String, Option<String>)> =
                    workflow_executions::table
                        .find(&id)
                        .select((
                            workflow_executions::workflow_name,
                            workflow_executions::plan,
                            workflow_executions::input_context,
                            workflow_executions::cancel_reason,
                        ))
                        .get_result(conn)
                        .optional()?;
                let Some((workflow_name, Some(plan), input, cancel_reason)) = row else {
                    return Ok(None);
                };
                Ok(Some(StoredExecution {
                    workflow_name,
                    plan: ExecutionPlan::from_json(&plan)?,
                    input: Context::from_json(&input)?,
                    cancel_reason,
                }))
            })
        })
        .await
    }

    /// The stored outputs of the Completed tasks among `positions`.
    pub(crate) async fn load_outputs(
        &self,
        execution: Uuid,
        positions: Vec<usize>,
    ) -> Result<Vec<(usize, Context)>> {
        let id = execution.to_string();
        self.run(move |pool| {
            with_connection!(pool, |conn| {
                let positions: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
                let mut outputs = Vec::new();
                for chunk in positions.chunks(INSERT_CHUNK) {
                    let rows: Vec<(i32, Option<String>)> = task_executions::table
                        .filter(task_executions::execution_id.eq(&id))
                        .filter(task_executions::position.eq_any(chunk))
                        .filter(task_executions::status.eq(TaskStatus::Completed.as_str()))
                        .select((task_executions::position, task_executions::output))
                        .load(conn)?;
                    for (position, output) in rows {
                        let output = output.as_deref().map(Context::from_json).transpose()?;
                        outputs.push((position as usize, output.unwrap_or_default()));
                    }
                }
                Ok(outputs)
            })
        })
        .await
    }

    /// The status of an execution; None if there is none.
    pub(crate) async fn execution_status(
        &self,
        execution: Uuid,
    ) -> Result<Option<ExecutionStatus>> {
        let id = execution.to_string();
        self.run(move |pool| {
            with_connection!(pool, |conn| {
                let status: Option<String> = workflow_executions::table
                    .find(&id)
                    .select(workflow_executions::status)
                    .get_result(conn)
                    .optional()?;
                status
                    .map(|s| {
                        ExecutionStatus::parse(&s).ok_or_else(|| corrupt("execution status", &s))
                    })
                    .transpose()
            })
        })
        .await
    }

    /// Cancel requests stored for any of `executions`.
    pub(crate) async fn cancel_requests(
        &self,
        executions: Vec<Uuid>,
    ) -> Result<Vec<(Uuid, String)>> {
        self.run(move |pool| {
            with_connection!(pool, |conn| {
                let ids: Vec<String> = executions.iter().map(Uuid::to_string).collect();
                let mut found = Vec::new();
                for chunk in ids.chunks(INSERT_CHUNK) {
                    let rows: Vec<(String, Option<String>)> = workflow_executions::table
                        .filter(workflow_executions::id.eq_any(chunk))
                        .filter(workflow_executions::cancel_reason.is_not_null())
                        .select((workflow_executions::id, workflow_executions::cancel_reason))
                        .load(conn)?;
                    for (id, reason) in rows {
                        if let (Ok(id), Some(reason)) = (Uuid::parse_str(&id), reason) {
                            found.push((id, reason));
                        }
                    }
                }
                Ok(found)
            })
        })
        .await
    }
}

//! Execution and task records: every read and write the engine makes, written once for all backends.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{task_executions, workflow_executions};
use super::{with_connection, write_transaction, Database};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::executor::{ExecutionResult, ExecutionStatus, TaskResult, TaskStatus};

/// Rows per multi-row INSERT, well under every backend's bound-parameter limit.
const INSERT_CHUNK: usize = 1_000;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = workflow_executions)]
struct ExecutionRow {
    id: String,
    workflow_name: String,
    workflow_version: String,
    status: String,
    input_context: String,
    final_context: Option<String>,
    error: Option<String>,
    started_at: NaiveDateTime,
    completed_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = task_executions)]
struct TaskRow {
    execution_id: String,
    task_id: String,
    position: i32,
    dependencies: String,
    status: String,
    attempt: i32,
    output: Option<String>,
    error: Option<String>,
    traceback: Option<String>,
    started_at: Option<NaiveDateTime>,
    completed_at: Option<NaiveDateTime>,
}

/// A task as it is registered when its execution starts.
pub(crate) struct NewTask {
    pub task_id: String,
    pub dependencies: Vec<String>,
}

/// How a task attempt ended, ready to store.
pub(crate) struct TaskOutcome {
    pub status: TaskStatus,
    pub output_json: Option<String>,
    pub error: Option<String>,
    pub traceback: Option<String>,
    pub completed_at: DateTime<Utc>,
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
}

impl Default for ExecutionFilter {
    fn default() -> Self {
        Self {
            workflow_name: None,
            status: None,
            limit: 50,
        }
    }
}

/// Loads the task rows of `$ids` on `$conn`, a connection of any backend.
macro_rules! load_tasks {
    ($conn:expr, $ids:expr) => {{
        let mut rows: Vec<TaskRow> = Vec::new();
        for chunk in $ids.chunks(INSERT_CHUNK) {
            rows.extend(
                task_executions::table
                    .filter(task_executions::execution_id.eq_any(chunk))
                    .select(TaskRow::as_select())
                    .load::<TaskRow>($conn)?,
            );
        }
        rows
    }};
}

impl Database {
    /// Records a new running execution and all its tasks as Pending, atomically.
    pub(crate) async fn create_execution(
        &self,
        execution: &ExecutionResult,
        tasks: Vec<NewTask>,
    ) -> Result<()> {
        let row = ExecutionRow {
            id: execution.execution_id.to_string(),
            workflow_name: execution.workflow_name.clone(),
            workflow_version: execution.workflow_version.clone(),
            status: execution.status.as_str().to_string(),
            input_context: execution.input_context.to_json(),
            final_context: None,
            error: None,
            started_at: execution.started_at.naive_utc(),
            completed_at: None,
        };
        let task_rows: Vec<TaskRow> = tasks
            .into_iter()
            .enumerate()
            .map(|(position, task)| TaskRow {
                execution_id: row.id.clone(),
                task_id: task.task_id,
                position: position as i32,
                dependencies: serde_json::to_string(&task.dependencies).expect("strings serialise"),
                status: TaskStatus::Pending.as_str().to_string(),
                attempt: 0,
                output: None,
                error: None,
                traceback: None,
                started_at: None,
                completed_at: None,
            })
            .collect();
        self.run(move |pool| {
            write_transaction!(pool, |conn| {
                diesel::insert_into(workflow_executions::table)
                    .values(&row)
                    .execute(conn)?;
                for chunk in task_rows.chunks(INSERT_CHUNK) {
                    diesel::insert_into(task_executions::table)
                        .values(chunk)
                        .execute(conn)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Marks a task Running and counts the attempt.
    pub(crate) async fn start_task(
        &self,
        execution_id: Uuid,
        task_id: String,
        started_at: DateTime<Utc>,
    ) -> Result<()> {
        self.run(move |pool| {
            with_connection!(pool, |conn| {
                diesel::update(task_executions::table.find((execution_id.to_string(), task_id)))
                    .set((
                        task_executions::status.eq(TaskStatus::Running.as_str()),
                        task_executions::attempt.eq(task_executions::attempt + 1),
                        task_executions::started_at.eq(Some(started_at.naive_utc())),
                    ))
                    .execute(conn)?;
                Ok(())
            })
        })
        .await
    }

    /// Stores how a task ended.
    pub(crate) async fn finish_task(
        &self,
        execution_id: Uuid,
        task_id: String,
        outcome: TaskOutcome,
    ) -> Result<()> {
        self.run(move |pool| {
            with_connection!(pool, |conn| {
                diesel::update(task_executions::table.find((execution_id.to_string(), task_id)))
                    .set((
                        task_executions::status.eq(outcome.status.as_str()),
                        task_executions::output.eq(outcome.output_json),
                        task_executions::error.eq(outcome.error),
                        task_executions::traceback.eq(outcome.traceback),
                        task_executions::completed_at.eq(Some(outcome.completed_at.naive_utc())),
                    ))
                    .execute(conn)?;
                Ok(())
            })
        })
        .await
    }

    /// Marks tasks Skipped in one statement.
    pub(crate) async fn skip_tasks(&self, execution_id: Uuid, task_ids: Vec<String>) -> Result<()> {
        if task_ids.is_empty() {
            return Ok(());
        }
        self.run(move |pool| {
            with_connection!(pool, |conn| {
                for chunk in task_ids.chunks(INSERT_CHUNK) {
                    diesel::update(
                        task_executions::table
                            .filter(task_executions::execution_id.eq(execution_id.to_string()))
                            .filter(task_executions::task_id.eq_any(chunk)),
                    )
                    .set(task_executions::status.eq(TaskStatus::Skipped.as_str()))
                    .execute(conn)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Stores an execution's final status, context and error.
    pub(crate) async fn finish_execution(&self, execution: &ExecutionResult) -> Result<()> {
        let id = execution.execution_id.to_string();
        let status = execution.status.as_str();
        let final_context = execution.final_context.as_ref().map(Context::to_json);
        let error = execution.error.clone();
        let completed_at = execution.completed_at.map(|t| t.naive_utc());
        self.run(move |pool| {
            with_connection!(pool, |conn| {
                diesel::update(workflow_executions::table.find(id))
                    .set((
                        workflow_executions::status.eq(status),
                        workflow_executions::final_context.eq(final_context),
                        workflow_executions::error.eq(error),
                        workflow_executions::completed_at.eq(completed_at),
                    ))
                    .execute(conn)?;
                Ok(())
            })
        })
        .await
    }

    /// Reads one execution and its tasks back.
    pub async fn get_execution(&self, execution_id: Uuid) -> Result<Option<ExecutionResult>> {
        let id = execution_id.to_string();
        let mut found = self
            .run(move |pool| {
                with_connection!(pool, |conn| {
                    let executions = workflow_executions::table
                        .find(&id)
                        .select(ExecutionRow::as_select())
                        .load(conn)?;
                    let tasks = load_tasks!(conn, [id]);
                    Ok((executions, tasks))
                })
            })
            .await
            .and_then(|(executions, tasks)| assemble(executions, tasks))?;
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
                    .into_boxed();
                if let Some(name) = filter.workflow_name {
                    query = query.filter(workflow_executions::workflow_name.eq(name));
                }
                if let Some(status) = filter.status {
                    query = query.filter(workflow_executions::status.eq(status.as_str()));
                }
                let executions: Vec<ExecutionRow> = query.load(conn)?;
                let ids: Vec<String> = executions.iter().map(|e| e.id.clone()).collect();
                let tasks = load_tasks!(conn, ids);
                Ok((executions, tasks))
            })
        })
        .await
        .and_then(|(executions, tasks)| assemble(executions, tasks))
    }
}

/// Joins execution rows with their task rows, keeping the executions' order.
fn assemble(executions: Vec<ExecutionRow>, tasks: Vec<TaskRow>) -> Result<Vec<ExecutionResult>> {
    let mut by_execution: std::collections::HashMap<String, Vec<TaskRow>> =
        std::collections::HashMap::new();
    for task in tasks {
        by_execution
            .entry(task.execution_id.clone())
            .or_default()
            .push(task);
    }
    executions
        .into_iter()
        .map(|row| {
            let mut tasks = by_execution.remove(&row.id).unwrap_or_default();
            tasks.sort_by_key(|t| t.position);
            execution_from_rows(row, tasks)
        })
        .collect()
}

fn execution_from_rows(row: ExecutionRow, tasks: Vec<TaskRow>) -> Result<ExecutionResult> {
    let corrupt =
        |what: &str, value: &str| Error::Database(format!("stored {what} {value:?} is not valid"));
    let task_results = tasks
        .into_iter()
        .map(|t| {
            Ok(TaskResult {
                status: TaskStatus::parse(&t.status)
                    .ok_or_else(|| corrupt("task status", &t.status))?,
                attempts: t.attempt.max(0) as u32,
                error: t.error,
                traceback: t.traceback,
                started_at: t.started_at.map(|d| d.and_utc()),
                completed_at: t.completed_at.map(|d| d.and_utc()),
                task_id: t.task_id,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ExecutionResult {
        execution_id: Uuid::parse_str(&row.id).map_err(|_| corrupt("execution id", &row.id))?,
        status: ExecutionStatus::parse(&row.status)
            .ok_or_else(|| corrupt("execution status", &row.status))?,
        input_context: Context::from_json(&row.input_context)?,
        final_context: row
            .final_context
            .as_deref()
            .map(Context::from_json)
            .transpose()?,
        workflow_name: row.workflow_name,
        workflow_version: row.workflow_version,
        error: row.error,
        started_at: row.started_at.and_utc(),
        completed_at: row.completed_at.map(|d| d.and_utc()),
        task_results,
    })
}

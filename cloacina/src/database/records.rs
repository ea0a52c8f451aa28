//! Execution and task records: every read and write the engine makes, written once for all backends.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use std::collections::{HashMap, HashSet};

use super::schema::{task_attempts, task_executions, workflow_executions};
use super::{with_connection, write_transaction, Database};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::executor::{AttemptRecord, ExecutionResult, ExecutionStatus, TaskResult, TaskStatus};

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
    reason: Option<String>,
    started_at: Option<NaiveDateTime>,
    completed_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = task_attempts)]
struct AttemptRow {
    execution_id: String,
    task_id: String,
    attempt: i32,
    status: String,
    error: Option<String>,
    started_at: NaiveDateTime,
    completed_at: NaiveDateTime,
}

/// A task as it is registered when its execution starts.
pub(crate) struct NewTask {
    pub task_id: String,
    pub dependencies: Vec<String>,
}

/// A task attempt starting: the task is Running and this is its attempt number.
#[derive(Clone)]
pub(crate) struct StartMarker {
    pub task_id: String,
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
}

/// Task changes written together in one transaction, in this order: starts, attempts, ends.
/// Starts only move a task forward (a start never overwrites a later attempt), so batches
/// written out of order still leave each task in its latest state.
#[derive(Default)]
pub(crate) struct TaskBatch {
    pub started: Vec<StartMarker>,
    pub attempts: Vec<(String, AttemptRecord)>,
    pub ended: Vec<(String, TaskOutcome)>,
}

impl TaskBatch {
    /// Whether there is nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.started.is_empty() && self.attempts.is_empty() && self.ended.is_empty()
    }
}

/// How a task ended, ready to store.
#[derive(Clone)]
pub(crate) struct TaskOutcome {
    pub status: TaskStatus,
    /// Attempts made, and when the last one started; stored with the outcome so that a start
    /// marker committed after it (batches commit concurrently) cannot move the task back.
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub output_json: Option<String>,
    pub error: Option<String>,
    pub traceback: Option<String>,
    pub reason: Option<String>,
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
                reason: None,
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

    /// Writes a batch of task changes in one transaction: one commit however many tasks it holds.
    pub(crate) async fn commit_batch(&self, execution_id: Uuid, batch: TaskBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let id = execution_id.to_string();
        self.run(move |pool| {
            // A task that also ends in this batch gets its attempt and start time with its outcome.
            let ending: HashSet<String> = batch.ended.iter().map(|(id, _)| id.clone()).collect();
            write_transaction!(pool, |conn| {
                for start in batch
                    .started
                    .iter()
                    .filter(|s| !ending.contains(&s.task_id))
                {
                    diesel::update(
                        task_executions::table
                            .find((&id, &start.task_id))
                            .filter(task_executions::attempt.lt(start.attempt as i32)),
                    )
                    .set((
                        task_executions::status.eq(TaskStatus::Running.as_str()),
                        task_executions::attempt.eq(start.attempt as i32),
                        task_executions::started_at.eq(Some(start.started_at.naive_utc())),
                    ))
                    .execute(conn)?;
                }
                let attempts: Vec<AttemptRow> = batch
                    .attempts
                    .iter()
                    .map(|(task_id, a)| AttemptRow {
                        execution_id: id.clone(),
                        task_id: task_id.clone(),
                        attempt: a.attempt as i32,
                        status: a.status.as_str().to_string(),
                        error: a.error.clone(),
                        started_at: a.started_at.naive_utc(),
                        completed_at: a.completed_at.naive_utc(),
                    })
                    .collect();
                for chunk in attempts.chunks(INSERT_CHUNK) {
                    diesel::insert_into(task_attempts::table)
                        .values(chunk)
                        .execute(conn)?;
                }
                for (task_id, outcome) in batch.ended {
                    diesel::update(task_executions::table.find((&id, &task_id)))
                        .set((
                            task_executions::status.eq(outcome.status.as_str()),
                            task_executions::attempt.eq(outcome.attempts as i32),
                            task_executions::started_at
                                .eq(outcome.started_at.map(|t| t.naive_utc())),
                            task_executions::output.eq(outcome.output_json),
                            task_executions::error.eq(outcome.error),
                            task_executions::traceback.eq(outcome.traceback),
                            task_executions::reason.eq(outcome.reason),
                            task_executions::completed_at
                                .eq(Some(outcome.completed_at.naive_utc())),
                        ))
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
    Ok(TaskResult {
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

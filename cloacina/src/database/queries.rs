//! Reading executions back: `get_execution`, `list_executions`, and what a worker reads of an
//! execution it drives (plan, input, outputs, status, cancel requests).

use diesel::prelude::*;
use uuid::Uuid;

use std::collections::{BTreeSet, HashMap};

use super::coalesce::{fail_all, Coalesce, Group};
use super::connection::{columns, Conn, RunOn, CHUNK};
use super::rows::{AttemptRow, ExecutionRow, TaskRow};
use super::schema::{task_attempts, task_executions, workflow_executions};
use super::{Database, Pool};
use crate::context::{Context, StoredContext};
use crate::error::{Error, Result};
use crate::model::{
    AttemptRecord, ExecutionPlan, ExecutionResult, ExecutionStatus, InstanceResult, MapCounts,
    TaskResult, TaskStatus,
};

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

/// The rows of the tasks of some executions (not their map instances), the rows of their
/// attempts, and how many instances each mapped task has in each status.
struct TasksOf {
    tasks: Vec<TaskRow>,
    attempts: Vec<AttemptRow>,
    /// (execution id, position, status) to how many instances.
    instances: Vec<(String, i32, String, i64)>,
}

/// The tasks of the executions `ids`: see [`TasksOf`].
fn load_tasks_of(conn: &mut Conn<'_>, ids: &[String]) -> Result<TasksOf> {
    let mut of = TasksOf {
        tasks: Vec::new(),
        attempts: Vec::new(),
        instances: Vec::new(),
    };
    for chunk in ids.chunks(CHUNK) {
        let tasks: Vec<TaskRow> = task_executions::table
            .filter(task_executions::execution_id.eq_any(chunk))
            .filter(task_executions::map_index.eq(-1))
            .select(columns::<TaskRow>())
            .load_on(conn)?;
        // The attempts of these tasks, not of their instances, by the attempts' own key: a
        // sub-select of the task ids instead got a generic plan on PostgreSQL after five reads
        // that took 5 s for an execution with 10,000 instances.
        let mut task_ids: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        task_ids.sort_unstable();
        task_ids.dedup();
        for some in task_ids.chunks(CHUNK) {
            of.attempts.extend(
                task_attempts::table
                    .filter(task_attempts::execution_id.eq_any(chunk))
                    .filter(task_attempts::task_id.eq_any(some))
                    .select(columns::<AttemptRow>())
                    .load_on::<AttemptRow>(conn)?,
            );
        }
        // Nodes that have ended store their counts; the others are counted.
        let counting: Vec<&str> = tasks
            .iter()
            .filter(|t| t.map_count.is_some() && t.map_counts.is_none())
            .map(|t| t.execution_id.as_str())
            .collect();
        if !counting.is_empty() {
            of.instances.extend(
                task_executions::table
                    .filter(task_executions::execution_id.eq_any(counting))
                    .filter(task_executions::map_index.ge(0))
                    .group_by((
                        task_executions::execution_id,
                        task_executions::position,
                        task_executions::status,
                    ))
                    .select((
                        task_executions::execution_id,
                        task_executions::position,
                        task_executions::status,
                        diesel::dsl::count_star(),
                    ))
                    .load_on::<(String, i32, String, i64)>(conn)?,
            );
        }
        of.tasks.extend(tasks);
    }
    Ok(of)
}

impl Database {
    /// Reads one execution, its tasks and their attempts back.
    pub async fn get_execution(&self, execution_id: Uuid) -> Result<Option<ExecutionResult>> {
        let id = execution_id.to_string();
        let mut found = self
            .run(move |pool| {
                pool.with_connection(|conn| {
                    let executions = workflow_executions::table
                        .find(&id)
                        .select(columns::<ExecutionRow>())
                        .load_on(conn)?;
                    let tasks = load_tasks_of(conn, &[id])?;
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
            pool.with_connection(|conn| {
                let newest = workflow_executions::table
                    .select(columns::<ExecutionRow>())
                    .order((
                        workflow_executions::started_at.desc(),
                        workflow_executions::id.desc(),
                    ))
                    .limit(filter.limit)
                    .offset(filter.offset);
                let of_workflow = filter
                    .workflow_name
                    .map(|name| workflow_executions::workflow_name.eq(name));
                let in_status = filter
                    .status
                    .map(|status| workflow_executions::status.eq(status.as_str()));
                // One statement per combination of filters, as each reads its own index.
                let executions: Vec<ExecutionRow> = match (of_workflow, in_status) {
                    (Some(name), Some(status)) => {
                        newest.filter(name).filter(status).load_on(conn)?
                    }
                    (Some(name), None) => newest.filter(name).load_on(conn)?,
                    (None, Some(status)) => newest.filter(status).load_on(conn)?,
                    (None, None) => newest.load_on(conn)?,
                };
                let ids: Vec<String> = executions.iter().map(|e| e.id.clone()).collect();
                let tasks = load_tasks_of(conn, &ids)?;
                Ok((executions, tasks))
            })
        })
        .await
        .and_then(|(executions, tasks)| assemble(executions, tasks))
    }
}

/// Joins execution rows with their task and attempt rows, keeping the executions' order.
fn assemble(executions: Vec<ExecutionRow>, of: TasksOf) -> Result<Vec<ExecutionResult>> {
    let TasksOf {
        tasks,
        attempts,
        instances,
    } = of;
    let mut counts: HashMap<(String, i32), MapCounts> = HashMap::new();
    for (execution, position, status, n) in instances {
        counts
            .entry((execution, position))
            .or_default()
            .add(task_status(&status)?, n.max(0) as u64);
    }
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
                    let stored = t.map_counts.as_deref().and_then(MapCounts::from_text);
                    let map = t.map_count.map(|_| {
                        let key = (t.execution_id.clone(), t.position);
                        stored.unwrap_or_else(|| counts.get(&key).copied().unwrap_or_default())
                    });
                    Ok(TaskResult {
                        map,
                        ..task_from_rows(t, history)?
                    })
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
        map: None,
        child_execution_id: t
            .child_execution_id
            .as_deref()
            .and_then(|id| Uuid::parse_str(id).ok()),
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
        priority: row.priority,
        parent_execution_id: row
            .parent_execution_id
            .as_deref()
            .and_then(|id| Uuid::parse_str(id).ok()),
        parent_task_id: row.parent_task_id,
        depth: row.depth.max(0) as u32,
    })
}

/// What `list_task_instances` reads of an instance.
type InstanceColumns = (
    i32,
    String,
    i32,
    Option<String>,
    Option<chrono::NaiveDateTime>,
    Option<chrono::NaiveDateTime>,
    Option<String>,
);

/// What a worker needs to drive an execution it has claimed tasks of.
pub(crate) struct StoredExecution {
    pub workflow_name: String,
    pub plan: ExecutionPlan,
    pub input: Context,
    pub cancel_reason: Option<String>,
}

impl Database {
    /// A page of the instances of the mapped task `task_id` of `execution`, in index order;
    /// empty for a task that is not mapped or not expanded yet.
    pub async fn list_task_instances(
        &self,
        execution: Uuid,
        task_id: String,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<InstanceResult>> {
        let id = execution.to_string();
        self.run(move |pool| {
            pool.with_connection(|conn| {
                let position: Option<i32> = task_executions::table
                    .find((&id, &task_id))
                    .select(task_executions::position)
                    .get_result_on(conn)
                    .optional()?;
                let Some(position) = position else {
                    return Ok(Vec::new());
                };
                let rows: Vec<InstanceColumns> = task_executions::table
                    .filter(task_executions::execution_id.eq(&id))
                    .filter(task_executions::position.eq(position))
                    // Indices run from 0 without gaps: the page starts at index `offset`.
                    .filter(task_executions::map_index.ge(offset.min(i64::from(i32::MAX)) as i32))
                    .order(task_executions::map_index)
                    .limit(limit)
                    .select((
                        task_executions::map_index,
                        task_executions::status,
                        task_executions::attempt,
                        task_executions::error,
                        task_executions::started_at,
                        task_executions::completed_at,
                        task_executions::child_execution_id,
                    ))
                    .load_on(conn)?;
                rows.into_iter()
                    .map(
                        |(index, status, attempt, error, started, completed, child)| {
                            Ok(InstanceResult {
                                map_index: index.max(0) as u32,
                                status: task_status(&status)?,
                                attempts: attempt.max(0) as u32,
                                error,
                                started_at: started.map(|d| d.and_utc()),
                                completed_at: completed.map(|d| d.and_utc()),
                                child_execution_id: child.and_then(|c| Uuid::parse_str(&c).ok()),
                            })
                        },
                    )
                    .collect()
            })
        })
        .await
    }

    /// Loads an execution's plan, input and cancel request; None if it has no stored plan.
    pub(crate) async fn load_stored(&self, execution: Uuid) -> Result<Option<StoredExecution>> {
        let id = execution.to_string();
        self.run(move |pool| {
            pool.with_connection(|conn| {
                let row: Option<(String, Option<String>, String, Option<String>)> =
                    workflow_executions::table
                        .find(&id)
                        .select((
                            workflow_executions::workflow_name,
                            workflow_executions::plan,
                            workflow_executions::input_context,
                            workflow_executions::cancel_reason,
                        ))
                        .get_result_on(conn)
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

    /// What a hook of `execution` sees of it as `ctx["execution"]`: its id, workflow name,
    /// decided status and error, and the ids of its Failed tasks.
    pub(crate) async fn hook_outcome(&self, execution: Uuid) -> Result<serde_json::Value> {
        self.run(move |pool| {
            pool.with_connection(|conn| {
                let id = execution.to_string();
                let (workflow, outcome, error): (String, Option<String>, Option<String>) =
                    workflow_executions::table
                        .find(&id)
                        .select((
                            workflow_executions::workflow_name,
                            workflow_executions::hook_outcome,
                            workflow_executions::error,
                        ))
                        .get_result_on(conn)?;
                let failed: Vec<String> = task_executions::table
                    .filter(task_executions::execution_id.eq(&id))
                    .filter(task_executions::status.eq(TaskStatus::Failed.as_str()))
                    .filter(task_executions::map_index.eq(-1))
                    .filter(task_executions::hook.is_null())
                    .order(task_executions::position)
                    .select(task_executions::task_id)
                    .load_on(conn)?;
                Ok(serde_json::json!({
                    "execution_id": id,
                    "workflow_name": workflow,
                    "status": outcome,
                    "error": error,
                    "failed_tasks": failed,
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
            pool.with_connection(|conn| {
                let positions: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
                let mut outputs = Vec::new();
                for chunk in positions.chunks(CHUNK) {
                    let rows: Vec<(i32, Option<String>)> = task_executions::table
                        .filter(task_executions::execution_id.eq(&id))
                        .filter(task_executions::position.eq_any(chunk))
                        .filter(task_executions::map_index.eq(-1))
                        .filter(super::map::handed_on())
                        .select((task_executions::position, task_executions::output))
                        .load_on(conn)?;
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

    /// The status of `execution`, None if it is unknown. Reads asked for while one runs are
    /// answered together by the next query (many `wait` calls on one signal cost one query).
    pub(crate) async fn execution_status(
        &self,
        execution: Uuid,
    ) -> Result<Option<ExecutionStatus>> {
        self.status_reads
            .call(&self.pool, execution, read_statuses)
            .await
    }

    /// Cancel requests stored for any of `executions`.
    pub(crate) async fn cancel_requests(
        &self,
        executions: Vec<Uuid>,
    ) -> Result<Vec<(Uuid, String)>> {
        self.run(move |pool| {
            pool.with_connection(|conn| {
                let ids: Vec<String> = executions.iter().map(Uuid::to_string).collect();
                let mut found = Vec::new();
                for chunk in ids.chunks(CHUNK) {
                    let rows: Vec<(String, Option<String>)> = workflow_executions::table
                        .filter(workflow_executions::id.eq_any(chunk))
                        .filter(workflow_executions::cancel_reason.is_not_null())
                        .select((workflow_executions::id, workflow_executions::cancel_reason))
                        .load_on(conn)?;
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

/// The status reads waiting for the next query.
pub(crate) type StatusReads = Coalesce<Uuid, Option<ExecutionStatus>>;

/// Answers a group of status reads with one query per chunk of ids.
fn read_statuses(pool: &Pool, group: Group<Uuid, Option<ExecutionStatus>>) {
    let ids: Vec<String> = group
        .iter()
        .map(|(id, _)| id.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let statuses = pool.with_connection(|conn| {
        let mut found = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let rows: Vec<(String, String)> = workflow_executions::table
                .filter(workflow_executions::id.eq_any(chunk))
                .select((workflow_executions::id, workflow_executions::status))
                .load_on(conn)?;
            for (id, status) in rows {
                let status = ExecutionStatus::parse(&status)
                    .ok_or_else(|| corrupt("execution status", &status))?;
                found.insert(id, status);
            }
        }
        Ok(found)
    });
    match statuses {
        Ok(found) => {
            for (id, reply) in group {
                let _ = reply.send(Ok(found.get(&id.to_string()).copied()));
            }
        }
        Err(error) => fail_all(group, &error),
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod status_tests {
    use super::*;
    use crate::database::testing::one_task_executions;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_status_reads_each_get_their_own_answer() {
        let (db, _, known) = one_task_executions(3).await;
        let reads: Vec<_> = (0..60)
            .map(|i| {
                let id = if i % 4 == 3 {
                    Uuid::new_v4()
                } else {
                    known[i % 4]
                };
                let db = db.clone();
                tokio::spawn(async move { (id, db.execution_status(id).await.unwrap()) })
            })
            .collect();
        for read in reads {
            let (id, status) = read.await.unwrap();
            let expected = known.contains(&id).then_some(ExecutionStatus::Pending);
            assert_eq!(status, expected, "{id}");
        }
    }
}

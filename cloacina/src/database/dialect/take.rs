//! Taking ready tasks and map instances of any execution: the one statement per backend that
//! claims make, and the literal predicates of the partial indexes it relies on.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
#[cfg(feature = "postgres")]
use diesel::sql_types::{Text, Timestamp};

#[cfg(feature = "sqlite")]
use crate::database::connection::columns;
use crate::database::connection::Conn;
use crate::database::connection::RunOn;
#[cfg(feature = "sqlite")]
use crate::database::literal::Pending;
use crate::database::schema::task_executions;
use crate::database::Pool;
use crate::error::Result;
use crate::model::TaskStatus;

/// A ready task (or map instance) as claiming takes it.
#[derive(QueryableByName, Queryable, Selectable)]
#[diesel(table_name = task_executions)]
pub(crate) struct TakenRow {
    pub execution_id: String,
    /// The row's key: the task's id, or for an instance its node's id and index.
    pub task_id: String,
    pub position: i32,
    /// The attempt its claim runs.
    pub attempt: i32,
    /// The instance's index; -1 for a task.
    pub map_index: i32,
    /// The instance's node.
    pub map_task: Option<String>,
    /// The instance's element, as JSON.
    pub map_element: Option<String>,
}

impl Pool {
    /// Makes Running under `worker`, at `now`, up to `limit` ready tasks (and map instances) of
    /// any execution whose ids are in `task_ids`, oldest first, then runs `then` with them:
    /// inside the same immediate transaction on SQLite, right after the one `FOR UPDATE SKIP
    /// LOCKED` statement on PostgreSQL. On SQLite a plain read first: most wake-ups find
    /// nothing, and need no write lock to learn it (then `then` is not run, and the result is
    /// `T::default()`).
    pub(crate) fn take_ready<T: Default>(
        &self,
        worker: &str,
        task_ids: &[String],
        limit: usize,
        now: DateTime<Utc>,
        then: impl FnOnce(&mut Conn<'_>, Vec<TakenRow>) -> Result<T>,
    ) -> Result<T> {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => {
                let mut sqlite = pool.get()?;
                let conn = &mut Conn::Sqlite(&mut sqlite);
                let mut any = false;
                for chunk in task_ids.chunks(crate::database::connection::CHUNK) {
                    any |= diesel::select(diesel::dsl::exists(
                        ready_in_queue().filter(
                            task_executions::task_id
                                .eq_any(chunk)
                                .or(task_executions::map_task.eq_any(chunk)),
                        ),
                    ))
                    .get_result_on::<bool>(conn)?;
                    if any {
                        break;
                    }
                }
                if !any {
                    return Ok(T::default());
                }
                crate::database::connection::immediate(pool, &mut sqlite, |conn| {
                    let rows = conn.take_ready_rows(worker, task_ids, limit, now, None)?;
                    then(conn, rows)
                })
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                let mut pg = pool.get()?;
                let conn = &mut Conn::Postgres(&mut pg);
                let rows = conn.take_ready_rows(worker, task_ids, limit, now, None)?;
                then(conn, rows)
            }
        }
    }
}

impl Conn<'_> {
    /// Makes Running under `worker`, at `now`, up to `limit` ready tasks and map instances whose
    /// (node's) ids are in `task_ids`, oldest first, of any execution (tasks that hold limit
    /// keys after the others, each only if its keys admit it); with `execution`, only the map
    /// instances of that execution.
    pub(crate) fn take_ready_rows(
        &mut self,
        worker: &str,
        task_ids: &[String],
        limit: usize,
        now: DateTime<Utc>,
        execution: Option<&str>,
    ) -> Result<Vec<TakenRow>> {
        let mut rows = self.take_unkeyed_rows(worker, task_ids, limit, now, execution)?;
        if rows.len() < limit {
            let more =
                self.take_keyed_rows(worker, task_ids, limit - rows.len(), now, execution)?;
            rows.extend(more);
        }
        Ok(rows)
    }

    /// [`Conn::take_ready_rows`] for the rows that hold no limit key.
    fn take_unkeyed_rows(
        &mut self,
        worker: &str,
        task_ids: &[String],
        limit: usize,
        now: DateTime<Utc>,
        execution: Option<&str>,
    ) -> Result<Vec<TakenRow>> {
        match self {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(_) => {
                take_ready_each(self, worker, task_ids, limit, now.naive_utc(), execution)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(pg) => {
                use diesel::sql_types::{Array, BigInt};
                let take = |sql: &str| {
                    diesel::sql_query(sql)
                        .bind::<Text, _>(worker)
                        .bind::<Array<Text>, _>(task_ids)
                        .bind::<BigInt, _>(limit as i64)
                        .bind::<Timestamp, _>(now.naive_utc())
                };
                Ok(match execution {
                    None => take(&TAKE_READY_SQL).load::<TakenRow>(&mut **pg)?,
                    Some(execution) => take(&TAKE_READY_INSTANCES_SQL)
                        .bind::<Text, _>(execution)
                        .load::<TakenRow>(&mut **pg)?,
                })
            }
        }
    }
}

/// Takes the ready rows chosen by `ready`, in `order` (PostgreSQL): $1 worker, $2 task ids,
/// $3 limit, $4 now.
#[cfg(feature = "postgres")]
fn take_ready_sql(ready: &str, order: &str) -> String {
    format!(
        "WITH ready AS ( \
             SELECT execution_id, task_id FROM task_executions WHERE {ready} \
             ORDER BY {order} LIMIT $3 FOR UPDATE SKIP LOCKED) \
         UPDATE task_executions t SET status = 'Running', worker_id = $1, \
             attempt = t.attempt + 1, started_at = $4, reason = NULL \
         FROM ready WHERE t.execution_id = ready.execution_id \
             AND t.task_id = ready.task_id \
         RETURNING t.execution_id, t.task_id, t.position, t.attempt, \
             t.map_index, t.map_task, t.map_element"
    )
}

/// [`take_ready_sql`] for the ready tasks and instances of any execution.
#[cfg(feature = "postgres")]
static TAKE_READY_SQL: once_cell::sync::Lazy<String> = once_cell::sync::Lazy::new(|| {
    take_ready_sql(
        "queue = 'default' AND status = 'Pending' AND ready_at IS NOT NULL \
         AND limit_keys IS NULL \
         AND (task_id IN (SELECT unnest($2::text[])) \
              OR map_task IN (SELECT unnest($2::text[])))",
        "priority DESC, ready_at",
    )
});

/// [`take_ready_sql`] for the ready map instances of execution $5.
#[cfg(feature = "postgres")]
static TAKE_READY_INSTANCES_SQL: once_cell::sync::Lazy<String> = once_cell::sync::Lazy::new(|| {
    // A node's instances share its priority: oldest first, as their index is ordered.
    take_ready_sql(
        &format!(
            "execution_id = $5 AND {READY_INSTANCE} AND limit_keys IS NULL \
             AND map_task IN (SELECT unnest($2::text[]))"
        ),
        "ready_at",
    )
});

/// A ready map instance, as the partial index of ready instances spells it (literals, so that
/// planners use the index).
pub(crate) const READY_INSTANCE: &str =
    "status = 'Pending' AND ready_at IS NOT NULL AND map_index >= 0";

/// A ready task that is not a map instance, as its partial index spells it.
pub(crate) const READY_TASK: &str =
    "status = 'Pending' AND ready_at IS NOT NULL AND map_index = -1";

/// The ready tasks of the default queue.
#[cfg(feature = "sqlite")]
#[diesel::dsl::auto_type]
fn ready_in_queue() -> _ {
    let queue: &'static str = crate::database::rows::DEFAULT_QUEUE;
    task_executions::table
        .filter(task_executions::queue.eq(queue))
        .filter(task_executions::status.eq(Pending))
        .filter(task_executions::ready_at.is_not_null())
}

/// SQLite's claim, inside its immediate transaction: reads the oldest ready tasks (of
/// `execution` alone, when given), then makes each Running.
#[cfg(feature = "sqlite")]
fn take_ready_each(
    conn: &mut Conn<'_>,
    worker: &str,
    task_ids: &[String],
    limit: usize,
    now: NaiveDateTime,
    execution: Option<&str>,
) -> Result<Vec<TakenRow>> {
    let mut rows: Vec<TakenRow> = Vec::new();
    for chunk in task_ids.chunks(crate::database::connection::CHUNK) {
        let wanted = limit - rows.len();
        if wanted == 0 {
            break;
        }
        let oldest = task_executions::ready_at;
        let found: Vec<TakenRow> = match execution {
            None => ready_in_queue()
                .filter(task_executions::limit_keys.is_null())
                .filter(
                    task_executions::task_id
                        .eq_any(chunk)
                        .or(task_executions::map_task.eq_any(chunk)),
                )
                .order((task_executions::priority.desc(), oldest))
                .limit(wanted as i64)
                .select(columns::<TakenRow>())
                .load_on(conn)?,
            Some(execution) => task_executions::table
                .filter(task_executions::execution_id.eq(execution))
                .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(READY_INSTANCE))
                .filter(task_executions::limit_keys.is_null())
                .filter(task_executions::map_task.eq_any(chunk))
                .order(oldest)
                .limit(wanted as i64)
                .select(columns::<TakenRow>())
                .load_on(conn)?,
        };
        for mut row in found {
            start_row(conn, worker, &mut row, now)?;
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Makes the taken `row` Running under `worker` from `now`, as its next attempt.
pub(crate) fn start_row(
    conn: &mut Conn<'_>,
    worker: &str,
    row: &mut TakenRow,
    now: NaiveDateTime,
) -> Result<()> {
    row.attempt += 1;
    diesel::update(task_executions::table.find((&row.execution_id, &row.task_id)))
        .set((
            task_executions::status.eq(TaskStatus::Running.as_str()),
            task_executions::worker_id.eq(Some(worker)),
            task_executions::attempt.eq(row.attempt),
            task_executions::started_at.eq(Some(now)),
            task_executions::reason.eq(None::<String>),
        ))
        .execute_on(conn)?;
    Ok(())
}

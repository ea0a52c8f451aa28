//! The one seam for what differs per backend: locking an execution's or a schedule's row, the
//! clock leases are judged by, notifying other processes, and the statements that take ready
//! tasks and count ended upstream tasks. Each is a method that matches on the open backend
//! ([`Conn`]'s variant); everything else is written once (`store.rs`, `claims.rs`, ...).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text, Timestamp};

use super::cached::{Bind, Cached, Returning};
use super::connection::{columns, Conn, RunOn};
#[cfg(feature = "postgres")]
use super::literal::Pending;
use super::rows::ScheduleRow;
#[cfg(feature = "postgres")]
use super::schema::task_executions;
use super::schema::{schedules, workflow_executions};
use super::signals::Signal;
use crate::model::ExecutionStatus;
#[cfg(feature = "postgres")]
use crate::model::TaskStatus;

#[cfg(feature = "postgres")]
mod notify;
pub(crate) mod take;

#[cfg(feature = "postgres")]
pub(crate) use notify::notify_after_commit;
pub(crate) use take::{TakenRow, READY_TASK};

/// An execution row locked for the rest of the transaction.
pub(crate) struct LockedExecution {
    pub status: ExecutionStatus,
    pub cancel_reason: Option<String>,
    /// Whether it shows why it waits (cleared once a task of it is claimed).
    pub waiting: bool,
    /// Whether a sub-workflow task of another execution waits for it to end.
    pub child: bool,
    /// Whether it has hooks, to run once its outcome is decided.
    pub hooks: bool,
}

/// How a transaction locks an execution's row (on SQLite the immediate transaction already
/// holds the whole file).
#[derive(Clone, Copy)]
enum RowLock {
    /// Until the transaction ends, waiting for other holders.
    Exclusive,
    /// Until the transaction ends, or not at all when another transaction holds it.
    ExclusiveOrSkip,
    /// Beside other shared holders, waiting for an exclusive one.
    Shared,
}

/// A task's id, status, attempt, ready time and unfinished upstream count.
pub(crate) type UpstreamCount = (String, String, i32, Option<NaiveDateTime>, i32);

impl Conn<'_> {
    /// Locks an execution's row until the transaction ends; None if there is no such execution.
    pub(crate) fn lock_execution(&mut self, id: &str) -> QueryResult<Option<LockedExecution>> {
        self.lock_execution_row(id, RowLock::Exclusive)
    }

    /// Like `lock_execution`, but None at once when another transaction holds the row.
    pub(crate) fn try_lock_execution(&mut self, id: &str) -> QueryResult<Option<LockedExecution>> {
        self.lock_execution_row(id, RowLock::ExclusiveOrSkip)
    }

    /// Like `lock_execution`, but shared with other shared holders (on PostgreSQL `FOR SHARE`):
    /// it still excludes every exclusive holder (a cancel, a commit of the execution), so what
    /// it reads of them stays true until the transaction ends. Never follow it with
    /// `lock_execution` of the same row: two shared holders upgrading would deadlock.
    pub(crate) fn lock_execution_shared(
        &mut self,
        id: &str,
    ) -> QueryResult<Option<LockedExecution>> {
        self.lock_execution_row(id, RowLock::Shared)
    }

    /// Whether one multi-row INSERT beats a cached one-row statement per row: on PostgreSQL
    /// (one round trip instead of many), not on SQLite (no round trips to save, and a statement
    /// of a new length to prepare each time).
    pub(crate) fn batches_inserts(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(_) => false,
            #[cfg(feature = "postgres")]
            Conn::Postgres(_) => true,
        }
    }

    /// Reads an execution's lock columns, locking its row as `lock` says.
    fn lock_execution_row(
        &mut self,
        id: &str,
        lock: RowLock,
    ) -> QueryResult<Option<LockedExecution>> {
        let row = workflow_executions::table.find(id).select(LOCK_COLUMNS);
        match self {
            // Write transactions on SQLite are immediate: the whole file is already locked.
            // Lookups by key use `get_result`, not `first`: SQLite prepares a statement with a
            // bound `LIMIT ?` again every time it runs.
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(conn) => {
                let _ = lock;
                row.get_result::<ExecutionLockRow>(*conn)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => match lock {
                RowLock::Exclusive => row.for_update().first::<ExecutionLockRow>(*conn),
                RowLock::ExclusiveOrSkip => row
                    .for_update()
                    .skip_locked()
                    .first::<ExecutionLockRow>(*conn),
                RowLock::Shared => row.for_share().first::<ExecutionLockRow>(*conn),
            },
        }
        .optional()
        .map(|row| row.map(locked))
    }

    /// Reads the schedule `name` if its next fire is due at `now`, locking its row; None if it
    /// is not due, or another transaction holds it (`FOR UPDATE SKIP LOCKED` on PostgreSQL; on
    /// SQLite the immediate transaction already holds the write lock).
    pub(crate) fn lock_due_schedule(
        &mut self,
        name: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Option<ScheduleRow>> {
        let row = due_schedules(now)
            .filter(schedules::name.eq(name))
            .select(columns::<ScheduleRow>());
        match self {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(conn) => row.get_result(*conn),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => row.for_update().skip_locked().get_result(*conn),
        }
        .optional()
    }

    /// The time leases are written and judged by: the database server's clock on PostgreSQL
    /// (workers' clocks may differ), this process's on SQLite (all its workers share one host).
    pub(crate) fn lease_clock(&mut self) -> QueryResult<NaiveDateTime> {
        match self {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(_) => Ok(crate::model::now().naive_utc()),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => diesel::select(diesel::dsl::sql::<Timestamp>(
                "CAST(now() AT TIME ZONE 'UTC' AS timestamp)",
            ))
            .get_result(*conn),
        }
    }

    /// The heartbeat time before which a worker's lease of length `lease` has run out, by the
    /// lease clock.
    pub(crate) fn lease_expiry(
        &mut self,
        lease: std::time::Duration,
    ) -> QueryResult<NaiveDateTime> {
        Ok(
            self.lease_clock()?
                - chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX),
        )
    }

    /// Tells other processes of `signal` when the transaction commits. On PostgreSQL the
    /// `NOTIFY` is sent after the commit, as its own statement (see [`notify_after_commit`]).
    pub(crate) fn announce(&mut self, signal: Signal) -> QueryResult<()> {
        if signal == Signal::Ready {
            super::signals::note_ready_announced();
        }
        match self {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(conn) => {
                use super::schema::signals;
                // One statement per counter, so each is prepared once and cached.
                let row = diesel::update(signals::table.find(1));
                match signal {
                    Signal::Ready => row
                        .set(signals::ready.eq(signals::ready + 1))
                        .execute(*conn),
                    Signal::Done => row.set(signals::done.eq(signals::done + 1)).execute(*conn),
                    Signal::Cancelled => row
                        .set(signals::cancelled.eq(signals::cancelled + 1))
                        .execute(*conn),
                    Signal::Schedules => row
                        .set(signals::schedules.eq(signals::schedules + 1))
                        .execute(*conn),
                }
                .map(drop)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => notify::announce(conn, signal),
        }
    }

    /// Stores the ends of claimed tasks of `execution`, each only if the claim of `worker` at
    /// its fence is still the task's; whether each was stored. PostgreSQL stores several in one
    /// statement (one round trip); SQLite, in-process, runs one cached statement per task.
    pub(crate) fn store_ends(
        &mut self,
        execution: &str,
        worker: &str,
        ends: &[TaskEnd<'_>],
    ) -> QueryResult<Vec<bool>> {
        match self {
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) if ends.len() > 1 => {
                let stored = store_ends_at_once(conn, execution, worker, ends)?;
                Ok(ends.iter().map(|e| stored.contains(&*e.task_id)).collect())
            }
            _ => ends
                .iter()
                .map(|end| Ok(end.fenced(execution, worker).execute_on(self)? == 1))
                .collect(),
        }
    }

    /// Makes Running under `worker` those of `tasks` (position, id, attempt so far) that are
    /// still Pending, starting their next attempt at `now`; returns the positions it took.
    pub(crate) fn take_pending(
        &mut self,
        execution: &str,
        worker: &str,
        tasks: &[(usize, &str, u32)],
        now: NaiveDateTime,
    ) -> QueryResult<Vec<usize>> {
        match self {
            // One cached statement per task: cheaper on SQLite than one RETURNING prepared
            // each time.
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(_) => self.take_each(execution, worker, tasks, now),
            // A chain's next task: the statement prepared once.
            #[cfg(feature = "postgres")]
            Conn::Postgres(_) if tasks.len() == 1 => self.take_each(execution, worker, tasks, now),
            // Several: one round trip for all of them.
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => {
                let positions: Vec<i32> = tasks.iter().map(|t| t.0 as i32).collect();
                let taken: Vec<i32> = diesel::update(
                    task_executions::table
                        .filter(task_executions::execution_id.eq(execution))
                        .filter(task_executions::position.eq_any(&positions))
                        .filter(task_executions::map_index.eq(-1))
                        .filter(task_executions::status.eq(Pending)),
                )
                .set((
                    task_executions::status.eq(TaskStatus::Running.as_str()),
                    task_executions::worker_id.eq(Some(worker)),
                    task_executions::attempt.eq(task_executions::attempt + 1),
                    task_executions::started_at.eq(Some(now)),
                    task_executions::ready_at.eq(Some(now)),
                    task_executions::reason.eq(None::<String>),
                ))
                .returning(task_executions::position)
                .get_results(*conn)?;
                Ok(taken.into_iter().map(|p| p as usize).collect())
            }
        }
    }

    /// Makes each of `tasks` Running under `worker` with one cached statement per task.
    fn take_each(
        &mut self,
        execution: &str,
        worker: &str,
        tasks: &[(usize, &str, u32)],
        now: NaiveDateTime,
    ) -> QueryResult<Vec<usize>> {
        let mut taken = Vec::with_capacity(tasks.len());
        for &(position, task_id, attempt) in tasks {
            let rows = Cached::new(
                &[
                    "UPDATE task_executions SET status = 'Running', worker_id = ",
                    ", attempt = ",
                    ", started_at = ",
                    ", ready_at = ",
                    ", reason = NULL WHERE execution_id = ",
                    " AND task_id = ",
                    " AND status = 'Pending'",
                ],
                vec![
                    Bind::Text(Some(worker)),
                    Bind::Int(attempt as i32 + 1),
                    Bind::Time(Some(now)),
                    Bind::Time(Some(now)),
                    Bind::Text(Some(execution)),
                    Bind::Text(Some(task_id)),
                ],
            )
            .execute_on(self)?;
            if rows == 1 {
                taken.push(position);
            }
        }
        Ok(taken)
    }

    /// Takes each `(position, ended)` pair's count off the unfinished upstream tasks of the task
    /// at `position`, returning each task's state after it: one round trip on PostgreSQL for
    /// all of them (a fan-out's root has thousands of dependents), a statement prepared once
    /// per connection for each on SQLite.
    pub(crate) fn count_ended_upstream(
        &mut self,
        execution: &str,
        counts: &[(usize, i32)],
    ) -> QueryResult<Vec<(usize, UpstreamCount)>> {
        match self {
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) if counts.len() > 1 => {
                count_ended_upstream_at_once(conn, execution, counts)
            }
            _ => counts
                .iter()
                .map(|&(position, ended)| {
                    let statement: Returning<'_, UpstreamCountRow> = Cached::new(
                        &[
                            "UPDATE task_executions SET waiting_on = waiting_on - ",
                            " WHERE execution_id = ",
                            " AND position = ",
                            " AND map_index = -1 RETURNING task_id, status, attempt, ready_at, \
                             waiting_on",
                        ],
                        vec![
                            Bind::Int(ended),
                            Bind::Text(Some(execution)),
                            Bind::Int(position as i32),
                        ],
                    )
                    .returning();
                    Ok((position, statement.get_result_on(self)?))
                })
                .collect(),
        }
    }
}

/// The SQL types of an [`UpstreamCount`].
type UpstreamCountRow = (Text, Text, Integer, Nullable<Timestamp>, Integer);

/// The schedules whose next fire is due at `now` and that are not paused.
#[diesel::dsl::auto_type]
pub(crate) fn due_schedules(now: NaiveDateTime) -> _ {
    schedules::table
        .filter(schedules::paused.eq(false))
        .filter(schedules::next_fire_at.le(now))
}

/// What locking an execution reads of it: status, cancel request and why it waits.
const LOCK_COLUMNS: (
    workflow_executions::status,
    workflow_executions::cancel_reason,
    workflow_executions::reason,
    workflow_executions::parent_execution_id,
    workflow_executions::hooks,
) = (
    workflow_executions::status,
    workflow_executions::cancel_reason,
    workflow_executions::reason,
    workflow_executions::parent_execution_id,
    workflow_executions::hooks,
);

type ExecutionLockRow = (String, Option<String>, Option<String>, Option<String>, i32);

fn locked((status, cancel_reason, reason, parent, hooks): ExecutionLockRow) -> LockedExecution {
    LockedExecution {
        status: ExecutionStatus::parse(&status).unwrap_or(ExecutionStatus::Failed),
        cancel_reason,
        waiting: reason.is_some(),
        child: parent.is_some(),
        hooks: hooks > 0,
    }
}

/// A claimed task's end, to store fenced by its claim (see `Conn::store_ends`).
pub(crate) struct TaskEnd<'a> {
    /// The row's key: the task's id, or an instance's.
    pub task_id: std::borrow::Cow<'a, str>,
    pub status: &'static str,
    pub attempt: i32,
    pub started_at: Option<NaiveDateTime>,
    pub output: Option<&'a str>,
    pub error: Option<&'a str>,
    pub traceback: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub completed_at: NaiveDateTime,
    /// The attempt number its claim stored: the fencing token.
    pub fence: i32,
}

impl TaskEnd<'_> {
    /// The statement storing this end, changing nothing unless the claim of `worker` at the
    /// end's fence is still the task's; prepared once per connection.
    fn fenced<'q>(&'q self, execution: &'q str, worker: &'q str) -> Cached<'q> {
        Cached::new(
            &[
                "UPDATE task_executions SET status = ",
                ", attempt = ",
                ", started_at = ",
                ", output = ",
                ", error = ",
                ", traceback = ",
                ", reason = ",
                ", completed_at = ",
                ", worker_id = NULL WHERE execution_id = ",
                " AND task_id = ",
                " AND worker_id = ",
                " AND attempt = ",
                " AND status = 'Running'",
            ],
            vec![
                Bind::Text(Some(self.status)),
                Bind::Int(self.attempt),
                Bind::Time(self.started_at),
                Bind::Text(self.output),
                Bind::Text(self.error),
                Bind::Text(self.traceback),
                Bind::Text(self.reason),
                Bind::Time(Some(self.completed_at)),
                Bind::Text(Some(execution)),
                Bind::Text(Some(&self.task_id)),
                Bind::Text(Some(worker)),
                Bind::Int(self.fence),
            ],
        )
    }
}

/// Stores several ends in one statement; the ids of the tasks whose end it stored.
#[cfg(feature = "postgres")]
fn store_ends_at_once<'a>(
    conn: &mut diesel::PgConnection,
    execution: &str,
    worker: &str,
    ends: &[TaskEnd<'a>],
) -> QueryResult<std::collections::HashSet<String>> {
    use diesel::sql_types::Array;
    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = Text)]
        task_id: String,
    }
    // Borrowed text: an output is bound as it is, not copied once more.
    let text = |f: fn(&TaskEnd<'a>) -> Option<&'a str>| -> Vec<Option<&'a str>> {
        ends.iter().map(f).collect()
    };
    let rows: Vec<Stored> = diesel::sql_query(
        "UPDATE task_executions t SET status = e.status, attempt = e.attempt, \
             started_at = e.started_at, output = e.output, error = e.error, \
             traceback = e.traceback, reason = e.reason, completed_at = e.completed_at, \
             worker_id = NULL \
         FROM unnest($3::text[], $4::text[], $5::int[], $6::timestamp[], $7::text[], \
             $8::text[], $9::text[], $10::text[], $11::timestamp[], $12::int[]) \
             AS e(task_id, status, attempt, started_at, output, error, traceback, reason, \
                  completed_at, fence) \
         WHERE t.execution_id = $1 AND t.task_id = e.task_id AND t.worker_id = $2 \
             AND t.attempt = e.fence AND t.status = 'Running' \
         RETURNING t.task_id",
    )
    .bind::<Text, _>(execution)
    .bind::<Text, _>(worker)
    .bind::<Array<Text>, _>(ends.iter().map(|e| &*e.task_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(ends.iter().map(|e| e.status).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(ends.iter().map(|e| e.attempt).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamp>>, _>(ends.iter().map(|e| e.started_at).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(text(|e| e.output))
    .bind::<Array<Nullable<Text>>, _>(text(|e| e.error))
    .bind::<Array<Nullable<Text>>, _>(text(|e| e.traceback))
    .bind::<Array<Nullable<Text>>, _>(text(|e| e.reason))
    .bind::<Array<Timestamp>, _>(ends.iter().map(|e| e.completed_at).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(ends.iter().map(|e| e.fence).collect::<Vec<_>>())
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.task_id).collect())
}

/// `Conn::count_ended_upstream` in one `UPDATE … FROM unnest`.
#[cfg(feature = "postgres")]
fn count_ended_upstream_at_once(
    conn: &mut diesel::PgConnection,
    execution: &str,
    counts: &[(usize, i32)],
) -> QueryResult<Vec<(usize, UpstreamCount)>> {
    use diesel::sql_types::Array;
    #[derive(QueryableByName)]
    struct Counted {
        #[diesel(sql_type = Integer)]
        position: i32,
        #[diesel(sql_type = Text)]
        task_id: String,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = Integer)]
        attempt: i32,
        #[diesel(sql_type = Nullable<Timestamp>)]
        ready_at: Option<NaiveDateTime>,
        #[diesel(sql_type = Integer)]
        waiting_on: i32,
    }
    let rows: Vec<Counted> = diesel::sql_query(
        "UPDATE task_executions t SET waiting_on = t.waiting_on - c.ended \
         FROM unnest($2::int[], $3::int[]) AS c(position, ended) \
         WHERE t.execution_id = $1 AND t.position = c.position AND t.map_index = -1 \
         RETURNING t.position, t.task_id, t.status, t.attempt, t.ready_at, t.waiting_on",
    )
    .bind::<Text, _>(execution)
    .bind::<Array<Integer>, _>(counts.iter().map(|c| c.0 as i32).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(counts.iter().map(|c| c.1).collect::<Vec<_>>())
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let count = (r.task_id, r.status, r.attempt, r.ready_at, r.waiting_on);
            (r.position as usize, count)
        })
        .collect())
}

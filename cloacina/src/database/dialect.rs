//! What differs per backend inside a transaction: locking an execution's row, the clock leases
//! are judged by, notifying other processes, and the statements that take ready tasks and count
//! ended upstream tasks. Everything else is written once (`store.rs`, `claims.rs`, ...).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text, Timestamp};

use super::cached::{Bind, Cached, Returning};
#[cfg(feature = "postgres")]
use super::literal::Pending;
#[cfg(feature = "postgres")]
use super::schema::task_executions;
use super::schema::workflow_executions;
use super::signals::Signal;
use crate::model::ExecutionStatus;
#[cfg(feature = "postgres")]
use crate::model::TaskStatus;

/// An execution row locked for the rest of the transaction.
pub(crate) struct LockedExecution {
    pub status: ExecutionStatus,
    pub cancel_reason: Option<String>,
    /// Whether it shows why it waits (cleared once a task of it is claimed).
    pub waiting: bool,
}

/// What differs per backend inside a transaction.
pub(crate) trait Dialect {
    /// Locks an execution's row until the transaction ends; None if there is no such execution.
    fn lock_execution(&mut self, id: &str) -> QueryResult<Option<LockedExecution>>;
    /// Like `lock_execution`, but None at once when another transaction holds the row.
    fn try_lock_execution(&mut self, id: &str) -> QueryResult<Option<LockedExecution>>;
    /// The time leases are written and judged by: the database server's clock on PostgreSQL
    /// (workers' clocks may differ), this process's on SQLite (all its workers share one host).
    fn lease_clock(&mut self) -> QueryResult<NaiveDateTime>;
    /// The heartbeat time before which a worker's lease of length `lease` has run out, by the
    /// lease clock.
    fn lease_expiry(&mut self, lease: std::time::Duration) -> QueryResult<NaiveDateTime> {
        Ok(
            self.lease_clock()?
                - chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX),
        )
    }
    /// Tells other processes of `signal` when the transaction commits.
    fn announce(&mut self, signal: Signal) -> QueryResult<()>;
    /// Makes Running under `worker` those of `tasks` (position, id, attempt so far) that are
    /// still Pending, starting their next attempt at `now`; returns the positions it took.
    fn take_pending(
        &mut self,
        execution: &str,
        worker: &str,
        tasks: &[(usize, &str, u32)],
        now: NaiveDateTime,
    ) -> QueryResult<Vec<usize>>;
    /// Takes `ended` off the count of unfinished upstream tasks of the task at `position`,
    /// returning the task's state after it.
    fn count_ended_upstream(
        &mut self,
        execution: &str,
        position: usize,
        ended: i32,
    ) -> QueryResult<UpstreamCount>;
}

/// A task's id, status, attempt, ready time and unfinished upstream count.
pub(crate) type UpstreamCount = (String, String, i32, Option<NaiveDateTime>, i32);

/// The statement behind `count_ended_upstream`: one round trip, prepared once per connection.
fn count_ended_statement(
    execution: &str,
    position: usize,
    ended: i32,
) -> Returning<'_, UpstreamCountRow> {
    Cached::new(
        &[
            "UPDATE task_executions SET waiting_on = waiting_on - ",
            " WHERE execution_id = ",
            " AND position = ",
            " RETURNING task_id, status, attempt, ready_at, waiting_on",
        ],
        vec![
            Bind::Int(ended),
            Bind::Text(Some(execution)),
            Bind::Int(position as i32),
        ],
    )
    .returning()
}

/// The SQL types of an [`UpstreamCount`].
type UpstreamCountRow = (Text, Text, Integer, Nullable<Timestamp>, Integer);

/// Makes each of `tasks` Running under `worker` with one cached statement per task.
fn take_each<C>(
    conn: &mut C,
    execution: &str,
    worker: &str,
    tasks: &[(usize, &str, u32)],
    now: NaiveDateTime,
) -> QueryResult<Vec<usize>>
where
    C: diesel::Connection,
    for<'a> Cached<'a>: diesel::query_dsl::methods::ExecuteDsl<C>,
{
    let mut taken = Vec::with_capacity(tasks.len());
    for &(position, task_id, attempt) in tasks {
        let rows = Cached::new(
            &[
                "UPDATE task_executions SET status = 'Running', worker_id = ",
                ", attempt = ",
                ", started_at = ",
                ", ready_at = ",
                " WHERE execution_id = ",
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
        .execute(conn)?;
        if rows == 1 {
            taken.push(position);
        }
    }
    Ok(taken)
}

#[cfg(feature = "sqlite")]
impl Dialect for diesel::sqlite::SqliteConnection {
    fn take_pending(
        &mut self,
        execution: &str,
        worker: &str,
        tasks: &[(usize, &str, u32)],
        now: NaiveDateTime,
    ) -> QueryResult<Vec<usize>> {
        // One cached statement per task: cheaper on SQLite than one RETURNING prepared each time.
        take_each(self, execution, worker, tasks, now)
    }

    fn lock_execution(&mut self, id: &str) -> QueryResult<Option<LockedExecution>> {
        // Write transactions on SQLite are immediate: the whole file is already locked.
        read_execution(self, id)
    }

    fn try_lock_execution(&mut self, id: &str) -> QueryResult<Option<LockedExecution>> {
        read_execution(self, id)
    }

    fn lease_clock(&mut self) -> QueryResult<NaiveDateTime> {
        Ok(crate::model::now().naive_utc())
    }

    fn count_ended_upstream(
        &mut self,
        execution: &str,
        position: usize,
        ended: i32,
    ) -> QueryResult<UpstreamCount> {
        count_ended_statement(execution, position, ended).get_result(self)
    }

    fn announce(&mut self, signal: Signal) -> QueryResult<()> {
        use super::schema::signals;
        // One statement per counter, so each is prepared once and cached.
        let row = diesel::update(signals::table.find(1));
        match signal {
            Signal::Ready => row.set(signals::ready.eq(signals::ready + 1)).execute(self),
            Signal::Done => row.set(signals::done.eq(signals::done + 1)).execute(self),
            Signal::Cancelled => row
                .set(signals::cancelled.eq(signals::cancelled + 1))
                .execute(self),
            Signal::Schedules => row
                .set(signals::schedules.eq(signals::schedules + 1))
                .execute(self),
        }
        .map(drop)
    }
}

#[cfg(feature = "postgres")]
impl Dialect for diesel::pg::PgConnection {
    fn take_pending(
        &mut self,
        execution: &str,
        worker: &str,
        tasks: &[(usize, &str, u32)],
        now: NaiveDateTime,
    ) -> QueryResult<Vec<usize>> {
        if tasks.len() == 1 {
            // A chain's next task: the statement prepared once.
            return take_each(self, execution, worker, tasks, now);
        }
        // Several: one round trip for all of them.
        let positions: Vec<i32> = tasks.iter().map(|t| t.0 as i32).collect();
        let taken: Vec<i32> = diesel::update(
            task_executions::table
                .filter(task_executions::execution_id.eq(execution))
                .filter(task_executions::position.eq_any(&positions))
                .filter(task_executions::status.eq(Pending)),
        )
        .set((
            task_executions::status.eq(TaskStatus::Running.as_str()),
            task_executions::worker_id.eq(Some(worker)),
            task_executions::attempt.eq(task_executions::attempt + 1),
            task_executions::started_at.eq(Some(now)),
            task_executions::ready_at.eq(Some(now)),
        ))
        .returning(task_executions::position)
        .get_results(self)?;
        Ok(taken.into_iter().map(|p| p as usize).collect())
    }

    fn lock_execution(&mut self, id: &str) -> QueryResult<Option<LockedExecution>> {
        workflow_executions::table
            .find(id)
            .select(LOCK_COLUMNS)
            .for_update()
            .first::<ExecutionLockRow>(self)
            .optional()
            .map(|row| row.map(locked))
    }

    fn try_lock_execution(&mut self, id: &str) -> QueryResult<Option<LockedExecution>> {
        workflow_executions::table
            .find(id)
            .select(LOCK_COLUMNS)
            .for_update()
            .skip_locked()
            .first::<ExecutionLockRow>(self)
            .optional()
            .map(|row| row.map(locked))
    }

    fn lease_clock(&mut self) -> QueryResult<NaiveDateTime> {
        diesel::select(diesel::dsl::sql::<Timestamp>(
            "CAST(now() AT TIME ZONE 'UTC' AS timestamp)",
        ))
        .get_result(self)
    }

    fn count_ended_upstream(
        &mut self,
        execution: &str,
        position: usize,
        ended: i32,
    ) -> QueryResult<UpstreamCount> {
        count_ended_statement(execution, position, ended).get_result(self)
    }

    fn announce(&mut self, signal: Signal) -> QueryResult<()> {
        diesel::sql_query(format!(
            "SELECT pg_notify({}, $1)",
            super::signals::CHANNEL_SQL
        ))
        .bind::<diesel::sql_types::Text, _>(signal.name())
        .execute(self)
        .map(drop)
    }
}

#[cfg(feature = "sqlite")]
fn read_execution(
    conn: &mut diesel::sqlite::SqliteConnection,
    id: &str,
) -> QueryResult<Option<LockedExecution>> {
    // Lookups by key use `get_result`, not `first`: SQLite prepares a statement with a bound
    // `LIMIT ?` again every time it runs.
    workflow_executions::table
        .find(id)
        .select(LOCK_COLUMNS)
        .get_result::<ExecutionLockRow>(conn)
        .optional()
        .map(|row| row.map(locked))
}

/// What locking an execution reads of it: status, cancel request and why it waits.
const LOCK_COLUMNS: (
    workflow_executions::status,
    workflow_executions::cancel_reason,
    workflow_executions::reason,
) = (
    workflow_executions::status,
    workflow_executions::cancel_reason,
    workflow_executions::reason,
);

type ExecutionLockRow = (String, Option<String>, Option<String>);

fn locked((status, cancel_reason, reason): ExecutionLockRow) -> LockedExecution {
    LockedExecution {
        status: ExecutionStatus::parse(&status).unwrap_or(ExecutionStatus::Failed),
        cancel_reason,
        waiting: reason.is_some(),
    }
}

//! Worker leases: heartbeats, finding dead workers, and giving their claimed tasks back.
//!
//! Each worker has a row in `workers` whose `heartbeat_at` it refreshes. A worker is dead when
//! its heartbeat is older than the lease timeout, or at once when it ran in this process's
//! kernel and PID namespace and its process no longer exists (see `host.rs`). Heartbeats are
//! written and judged by the database server's clock on PostgreSQL, so a worker whose clock
//! runs ahead cannot reap the others; on SQLite, by the clock of the one host sharing the file.
//!
//! Giving tasks back never waits on a lock another process holds: an execution whose row is
//! locked (its worker frozen inside a commit, say) is skipped and given back on a later beat,
//! once PostgreSQL has ended the frozen session (see `PoolOptions::idle_in_transaction_limit`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::connection::{Conn, RunOn, CHUNK};
use super::rows::DEFAULT_QUEUE;
use super::schema::{task_executions, workers, workflow_executions};
use super::signals::Signal;
use super::Database;
use crate::error::Result;
use crate::host::ProcessKey;
use crate::model::decide::{lost_attempt_error, unregistered_reason};
use crate::model::{now, AttemptRecord, ExecutionStatus, TaskStatus};

/// Who a worker is, as its row records it.
#[derive(Debug, Clone)]
pub(crate) struct WorkerIdentity {
    pub id: String,
    pub hostname: String,
    pub pid: i32,
    /// Its process beyond the pid, where that can be told.
    pub process: Option<ProcessKey>,
}

impl WorkerIdentity {
    /// A new worker of this process.
    pub(crate) fn of_this_process(id: String) -> Self {
        Self {
            id,
            hostname: crate::host::hostname(),
            pid: std::process::id() as i32,
            process: ProcessKey::of_this_process(),
        }
    }

    /// Whether this worker's process is known to be gone, as `observer` sees it.
    fn is_gone(&self, observer: &WorkerIdentity) -> bool {
        match (&self.process, &observer.process) {
            (Some(process), Some(observer)) => process.is_gone(self.pid, observer),
            _ => false,
        }
    }
}

/// A worker as `list_workers` reports it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// The worker's id.
    pub id: String,
    /// The host it runs on.
    pub hostname: String,
    /// Its process id on that host.
    pub pid: i32,
    /// The task ids it runs.
    pub task_ids: Vec<String>,
    /// When it registered.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Whether its heartbeat is younger than the lease.
    pub alive: bool,
    /// The tasks it is running: (execution id, task id).
    pub running: Vec<(Uuid, String)>,
}

/// A worker's row as reaping reads it: id, host, pid, process key and last heartbeat.
type WorkerRow = (String, String, i32, Option<String>, NaiveDateTime);

/// The workers `me` takes for dead: those whose heartbeat is older than `expired` or whose
/// process `me` can see is gone, and claimants without a row (never `me`).
fn dead_workers(
    me: &WorkerIdentity,
    rows: Vec<WorkerRow>,
    claimants: Vec<String>,
    expired: NaiveDateTime,
) -> Vec<WorkerIdentity> {
    let registered: HashSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut dead: Vec<WorkerIdentity> = rows
        .into_iter()
        .filter(|row| row.0 != me.id)
        .filter_map(|(id, hostname, pid, process, heartbeat)| {
            let worker = WorkerIdentity {
                id,
                hostname,
                pid,
                process: process.as_deref().and_then(ProcessKey::parse),
            };
            (heartbeat < expired || worker.is_gone(me)).then_some(worker)
        })
        .collect();
    dead.extend(
        claimants
            .into_iter()
            .filter(|id| !registered.contains(id) && *id != me.id)
            .map(|id| WorkerIdentity {
                id,
                hostname: "unknown".into(),
                pid: 0,
                process: None,
            }),
    );
    dead
}

impl Database {
    /// Records a live worker, or refreshes its heartbeat and task ids; a worker whose row was
    /// removed (it was presumed dead) registers again.
    pub(crate) async fn heartbeat(&self, worker: WorkerIdentity, task_ids: String) -> Result<()> {
        self.run(move |pool| {
            pool.with_connection(|conn| {
                let beat = conn.lease_clock()?;
                let updated = diesel::update(workers::table.find(&worker.id))
                    .set((
                        workers::heartbeat_at.eq(beat),
                        workers::task_ids.eq(&task_ids),
                    ))
                    .execute_on(conn)?;
                if updated == 0 {
                    diesel::insert_into(workers::table)
                        .values((
                            workers::id.eq(&worker.id),
                            workers::hostname.eq(&worker.hostname),
                            workers::pid.eq(worker.pid),
                            workers::process_key.eq(worker.process.as_ref().map(|p| p.to_text())),
                            workers::task_ids.eq(&task_ids),
                            workers::started_at.eq(now().naive_utc()),
                            workers::heartbeat_at.eq(beat),
                        ))
                        .execute_on(conn)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Removes a worker that stopped cleanly.
    pub(crate) async fn remove_worker(&self, worker: String) -> Result<()> {
        self.run(move |pool| {
            pool.with_connection(|conn| {
                diesel::delete(workers::table.find(&worker)).execute_on(conn)?;
                Ok(())
            })
        })
        .await
    }

    /// Finds dead workers (and claims of workers without a row) and gives their claimed tasks
    /// back: a Lost attempt in the task's history, then ready again (or Cancelled, if its
    /// execution was asked to stop). Executions locked by another transaction are left for a
    /// later call, and so is the dead worker's row. Returns how many tasks were given back.
    pub(crate) async fn reap_dead_workers(
        &self,
        me: WorkerIdentity,
        lease: Duration,
    ) -> Result<usize> {
        self.run(move |pool| {
            let now = now().naive_utc();
            let (claimants, rows, expired) = pool.with_connection(|conn| {
                // Claims of workers that have no row: stopped after a failed commit, or reaped
                // halfway. Read before the rows: a worker registers before it claims anything.
                let claimants: Vec<String> = task_executions::table
                    .filter(task_executions::worker_id.is_not_null())
                    .filter(task_executions::status.eq(TaskStatus::Running.as_str()))
                    .select(task_executions::worker_id.assume_not_null())
                    .distinct()
                    .load_on(conn)?;
                let rows: Vec<WorkerRow> = workers::table
                    .select((
                        workers::id,
                        workers::hostname,
                        workers::pid,
                        workers::process_key,
                        workers::heartbeat_at,
                    ))
                    .load_on(conn)?;
                Ok((claimants, rows, conn.lease_expiry(lease)?))
            })?;
            let dead = dead_workers(&me, rows, claimants, expired);
            let mut requeued = 0;
            for dead in dead {
                let claimed: Vec<String> = pool.with_connection(|conn| {
                    Ok(task_executions::table
                        .filter(task_executions::worker_id.eq(&dead.id))
                        .select(task_executions::execution_id)
                        .distinct()
                        .load_on(conn)?)
                })?;
                let mut left = false;
                for execution in claimed {
                    let given =
                        pool.write_transaction(|conn| conn.give_back(&execution, &dead, now));
                    match given {
                        Ok(Some(n)) => requeued += n,
                        // Locked (or failing) now: the next beat tries again.
                        Ok(None) | Err(_) => left = true,
                    }
                }
                if !left {
                    pool.with_connection(|conn| {
                        Ok(diesel::delete(workers::table.find(&dead.id)).execute_on(conn)?)
                    })?;
                }
            }
            Ok(requeued)
        })
        .await
    }

    /// Every registered worker, most recent heartbeat first, with the tasks it runs.
    pub(crate) async fn list_workers(&self, lease: Duration) -> Result<Vec<WorkerInfo>> {
        self.run(move |pool| {
            pool.with_connection(|conn| {
                let expired = conn.lease_expiry(lease)?;
                type Row = (String, String, i32, String, NaiveDateTime, NaiveDateTime);
                let rows: Vec<Row> = workers::table
                    .order(workers::heartbeat_at.desc())
                    .select((
                        workers::id,
                        workers::hostname,
                        workers::pid,
                        workers::task_ids,
                        workers::started_at,
                        workers::heartbeat_at,
                    ))
                    .load_on(conn)?;
                let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
                let mut running: BTreeMap<String, Vec<(Uuid, String)>> = BTreeMap::new();
                for chunk in ids.chunks(CHUNK) {
                    let held: Vec<(Option<String>, String, String)> = task_executions::table
                        .filter(task_executions::worker_id.eq_any(chunk))
                        .filter(task_executions::status.eq(TaskStatus::Running.as_str()))
                        .select((
                            task_executions::worker_id,
                            task_executions::execution_id,
                            task_executions::task_id,
                        ))
                        .load_on(conn)?;
                    for (worker, execution, task) in held {
                        if let (Some(worker), Ok(execution)) = (worker, Uuid::parse_str(&execution))
                        {
                            running.entry(worker).or_default().push((execution, task));
                        }
                    }
                }
                Ok(rows
                    .into_iter()
                    .map(
                        |(id, hostname, pid, task_ids, started_at, heartbeat_at)| WorkerInfo {
                            running: running.remove(&id).unwrap_or_default(),
                            task_ids: serde_json::from_str(&task_ids).unwrap_or_default(),
                            started_at: started_at.and_utc(),
                            heartbeat_at: heartbeat_at.and_utc(),
                            alive: heartbeat_at >= expired,
                            id,
                            hostname,
                            pid,
                        },
                    )
                    .collect())
            })
        })
        .await
    }

    /// Task ids that some live worker runs.
    pub(crate) async fn live_task_ids(&self, lease: Duration) -> Result<HashSet<String>> {
        self.run(move |pool| pool.with_connection(|conn| conn.live_task_ids(lease)))
            .await
    }

    /// Sets a visible reason on executions whose ready tasks no live worker runs.
    pub(crate) async fn explain_unclaimed(
        &self,
        live: HashSet<String>,
        older_than: Duration,
    ) -> Result<()> {
        self.run(move |pool| {
            let cutoff =
                now().naive_utc() - chrono::Duration::from_std(older_than).unwrap_or_default();
            // A map instance is run by its node's function.
            let waiting: Vec<(String, String)> = pool.with_connection(|conn| {
                Ok(task_executions::table
                    .filter(task_executions::queue.eq(DEFAULT_QUEUE))
                    .filter(task_executions::status.eq(TaskStatus::Pending.as_str()))
                    .filter(task_executions::ready_at.le(cutoff))
                    .select((
                        task_executions::execution_id,
                        diesel::dsl::sql::<diesel::sql_types::Text>("COALESCE(map_task, task_id)"),
                    ))
                    .order(task_executions::ready_at)
                    .limit(1_000)
                    .load_on(conn)?)
            })?;
            let mut orphaned: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (execution, task_id) in waiting {
                if !live.contains(&task_id) {
                    let ids = orphaned.entry(execution).or_default();
                    if !ids.contains(&task_id) {
                        ids.push(task_id);
                    }
                }
            }
            for (execution, task_ids) in orphaned {
                let reason = unregistered_reason(&task_ids);
                pool.with_connection(|conn| {
                    Ok(
                        diesel::update(workflow_executions::table.find(&execution).filter(
                            workflow_executions::status.eq_any([
                                ExecutionStatus::Pending.as_str(),
                                ExecutionStatus::Running.as_str(),
                            ]),
                        ))
                        .set(workflow_executions::reason.eq(Some(reason)))
                        .execute_on(conn)?,
                    )
                })?;
            }
            Ok(())
        })
        .await
    }
}

impl Conn<'_> {
    /// Task ids registered by workers whose heartbeat is younger than `lease`.
    pub(crate) fn live_task_ids(&mut self, lease: Duration) -> Result<HashSet<String>> {
        let expired = self.lease_expiry(lease)?;
        let lists: Vec<String> = workers::table
            .filter(workers::heartbeat_at.ge(expired))
            .select(workers::task_ids)
            .load_on(self)?;
        let mut ids = HashSet::new();
        for list in lists {
            let parsed: Vec<String> = serde_json::from_str(&list).unwrap_or_default();
            ids.extend(parsed);
        }
        Ok(ids)
    }

    /// Gives back the tasks `dead` held in one execution; returns how many, or None when
    /// another transaction holds the execution's row.
    pub(crate) fn give_back(
        &mut self,
        execution: &str,
        dead: &WorkerIdentity,
        now: NaiveDateTime,
    ) -> Result<Option<usize>> {
        let Some(locked) = self.try_lock_execution(execution)? else {
            let exists = diesel::select(diesel::dsl::exists(
                workflow_executions::table.find(execution),
            ))
            .get_result_on::<bool>(self)?;
            return Ok((!exists).then_some(0));
        };
        let held: Vec<(String, i32, Option<NaiveDateTime>)> = task_executions::table
            .filter(task_executions::execution_id.eq(execution))
            .filter(task_executions::worker_id.eq(&dead.id))
            .filter(task_executions::status.eq(TaskStatus::Running.as_str()))
            .select((
                task_executions::task_id,
                task_executions::attempt,
                task_executions::started_at,
            ))
            .load_on(self)?;
        let error = lost_attempt_error(&dead.id, &dead.hostname, dead.pid);
        for (task_id, attempt, started_at) in &held {
            let lost = AttemptRecord {
                attempt: (*attempt).max(1) as u32,
                status: TaskStatus::Lost,
                error: Some(error.clone()),
                started_at: started_at.unwrap_or(now).and_utc(),
                completed_at: now.and_utc(),
            };
            self.insert_attempt(execution, task_id, &lost)?;
            let target = task_executions::table.find((execution, task_id));
            match &locked.cancel_reason {
                Some(reason) => diesel::update(target)
                    .set((
                        task_executions::status.eq(TaskStatus::Cancelled.as_str()),
                        task_executions::reason.eq(Some(reason)),
                        task_executions::completed_at.eq(Some(now)),
                        task_executions::worker_id.eq(None::<String>),
                    ))
                    .execute_on(self)?,
                None => diesel::update(target)
                    .set((
                        task_executions::status.eq(TaskStatus::Pending.as_str()),
                        task_executions::ready_at.eq(Some(now)),
                        task_executions::worker_id.eq(None::<String>),
                    ))
                    .execute_on(self)?,
            };
        }
        if !held.is_empty() {
            // The dead attempts' limit units come back with them.
            let ids: Vec<&str> = held
                .iter()
                .map(|(task_id, _, _)| task_id.as_str())
                .collect();
            self.give_back_units(execution, &ids)?;
            self.announce(Signal::Ready)?;
            self.finish_from_storage(execution, &locked, now)?;
        }
        Ok(Some(held.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, pid: i32, process: Option<String>, beat: NaiveDateTime) -> WorkerRow {
        (id.into(), "host".into(), pid, process, beat)
    }

    #[test]
    fn stale_heartbeats_and_rowless_claimants_are_dead_but_never_oneself() {
        let me = WorkerIdentity::of_this_process("me".into());
        let clock = now().naive_utc();
        let expired = clock - chrono::Duration::seconds(30);
        let old = clock - chrono::Duration::seconds(31);
        let rows = vec![
            row("me", me.pid, None, old),
            row("fresh", 1, None, clock),
            row("stale", 1, None, old),
        ];
        let claimants = vec!["me".into(), "fresh".into(), "gone".into()];
        let dead: Vec<String> = dead_workers(&me, rows, claimants, expired)
            .into_iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(dead, ["stale", "gone"]);
    }

    #[test]
    fn a_fresh_worker_whose_process_is_gone_is_dead_only_in_the_same_pid_space() {
        let me = WorkerIdentity::of_this_process("me".into());
        let Some(mine) = me.process.as_ref().map(ProcessKey::to_text) else {
            return; // no /proc here
        };
        let clock = now().naive_utc();
        let (space, _) = mine.rsplit_once('/').unwrap();
        let rows = vec![
            // Beyond the kernel's largest pid: no process has it.
            row("here", i32::MAX, Some(format!("{space}/1")), clock),
            row("elsewhere", i32::MAX, Some("other-boot/1/1".into()), clock),
            row("unknown", i32::MAX, None, clock),
        ];
        let dead: Vec<String> =
            dead_workers(&me, rows, vec![], clock - chrono::Duration::seconds(30))
                .into_iter()
                .map(|w| w.id)
                .collect();
        assert_eq!(dead, ["here"]);
    }
}

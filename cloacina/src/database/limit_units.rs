//! Taking and giving back limit units inside a claim's transaction: a ready task that holds
//! limit keys starts only if every key admits it (all of them or none), and its units are given
//! back with its attempt's end. What admits is decided in `model/limits.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::connection::{columns, Conn, RunOn, CHUNK};
use super::dialect::take::start_row;
use super::dialect::TakenRow;
use super::named_limits::LimitRow;
use super::schema::{limit_holders, limit_usage, limits, task_executions};
use super::store::{Settled, TaskState};
use crate::error::Result;
use crate::model::limits::{
    admit, governing, held_by_execution, key_name, started, Blocked, KeyTemplate, Limit, Usage,
};
use crate::model::ExecutionPlan;
use crate::model::TaskStatus;

/// The earliest instant a task this process found held back by a rate may start.
static RATE_WAKE: Mutex<Option<DateTime<Utc>>> = Mutex::new(None);

/// Asks this process's workers to claim again at `at`, when a rate allows the next start.
fn wake_for_rate_at(at: DateTime<Utc>) {
    let mut wake = RATE_WAKE.lock().unwrap_or_else(|p| p.into_inner());
    if wake.is_none_or(|w| at < w) {
        *wake = Some(at);
    }
}

/// How long until a rate allows a task this process found held back to start, if any did;
/// the next claim looks again, so the instant is handed out once.
pub(crate) fn until_rate_allows() -> Option<std::time::Duration> {
    let at = RATE_WAKE.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    Some((at - Utc::now()).to_std().unwrap_or_default())
}

/// A ready task that holds limit keys, as a claim considers it.
pub(crate) struct Keyed<'a> {
    pub execution_id: &'a str,
    /// The row's key (a task's id, or an instance's `node[i]`).
    pub task_id: &'a str,
    /// The attempt its claim would run.
    pub attempt: i32,
    /// Its filled keys.
    pub keys: &'a [String],
}

impl Conn<'_> {
    /// Takes the units of each candidate, in order, all its keys or none; whether each was
    /// admitted. The key rows are locked in key order first, so two claims never wait on each
    /// other crosswise; a blocked candidate stays Pending with the reason stored.
    pub(crate) fn take_units(
        &mut self,
        candidates: &[Keyed<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>> {
        let keys: BTreeSet<&str> = candidates
            .iter()
            .flat_map(|c| c.keys.iter().map(|k| key_name(k)))
            .collect();
        if keys.is_empty() {
            return Ok(vec![true; candidates.len()]);
        }
        let keys: Vec<&str> = keys.into_iter().collect();
        let mut usage = self.lock_usage(&keys)?;
        // Read after the key rows are locked: another worker that took a candidate while this
        // claim waited for the locks has stored its units already, and the candidate is gone.
        let pending = self.still_pending(candidates)?;
        let limits: Vec<Limit> = limits::table
            .select(columns::<LimitRow>())
            .load_on::<LimitRow>(self)?
            .into_iter()
            .map(LimitRow::into_limit)
            .collect();
        for chunk in keys.chunks(CHUNK) {
            let held: Vec<(String, i64)> = limit_holders::table
                .filter(limit_holders::key.eq_any(chunk))
                .group_by(limit_holders::key)
                .select((limit_holders::key, diesel::dsl::count_star()))
                .load_on(self)?;
            for (key, n) in held {
                if let Some(u) = usage.get_mut(&key) {
                    u.running = u32::try_from(n).unwrap_or(u32::MAX);
                }
            }
        }
        let mut executions_hold = self.execution_holders(candidates)?;
        let mut admitted = Vec::with_capacity(candidates.len());
        let mut holders = Vec::new();
        let mut changed: BTreeSet<String> = BTreeSet::new();
        // Blocked candidates by execution and reason: one statement for each.
        let mut waiting: BTreeMap<(&str, String), Vec<&str>> = BTreeMap::new();
        for candidate in candidates {
            if !pending.contains(&(candidate.execution_id, candidate.task_id)) {
                admitted.push(false);
                continue;
            }
            // The keys this attempt takes units of: its own, and its execution's not held yet.
            let taking: Vec<(&str, bool)> = candidate
                .keys
                .iter()
                .map(|key| (key_name(key), held_by_execution(key).is_some()))
                .filter(|&(name, whole)| {
                    !(whole
                        && executions_hold
                            .contains(&(candidate.execution_id.to_string(), name.to_string())))
                })
                .collect();
            let verdict = taking
                .iter()
                .try_for_each(|&(name, _)| match governing(name, &limits) {
                    Some(limit) => admit(name, limit, usage[name], now),
                    None => Ok(()),
                });
            match verdict {
                Ok(()) => {
                    for (name, whole) in taking {
                        if let Some(limit) = governing(name, &limits) {
                            let u = usage.get_mut(name).expect("locked above");
                            let before = u.next_start;
                            *u = started(limit, *u, now);
                            if u.next_start != before {
                                changed.insert(name.to_string());
                            }
                        }
                        // A unit the execution holds has no task and no attempt.
                        let (task_id, attempt) = if whole {
                            let held = (candidate.execution_id.to_string(), name.to_string());
                            executions_hold.insert(held);
                            ("", 0)
                        } else {
                            (candidate.task_id, candidate.attempt)
                        };
                        holders.push((
                            limit_holders::execution_id.eq(candidate.execution_id),
                            limit_holders::task_id.eq(task_id),
                            limit_holders::key.eq(name),
                            limit_holders::attempt.eq(attempt),
                        ));
                    }
                    admitted.push(true);
                }
                Err(blocked) => {
                    if let Blocked::Rate { at, .. } = &blocked {
                        wake_for_rate_at(*at);
                    }
                    waiting
                        .entry((candidate.execution_id, blocked.reason()))
                        .or_default()
                        .push(candidate.task_id);
                    admitted.push(false);
                }
            }
        }
        for ((execution, reason), task_ids) in waiting {
            self.show_waiting(execution, &reason, &task_ids)?;
        }
        for chunk in holders.chunks(CHUNK / 4) {
            diesel::insert_into(limit_holders::table)
                .values(chunk)
                .execute_on(self)?;
        }
        for key in changed {
            let next = usage[key.as_str()].next_start.map(|t| t.naive_utc());
            diesel::update(limit_usage::table.find(&key))
                .set(limit_usage::next_start.eq(next))
                .execute_on(self)?;
        }
        Ok(admitted)
    }

    /// Fills the limit keys of the tasks at `positions` that hold any (from their input when a
    /// key has `{name}` parts) and stores them on the task rows: the keys of each such task, or
    /// the error that fails it (a missing context key).
    pub(crate) fn fill_keys(
        &mut self,
        execution: &str,
        plan: &ExecutionPlan,
        positions: &[usize],
    ) -> Result<BTreeMap<usize, std::result::Result<Vec<String>, String>>> {
        let mut filled = BTreeMap::new();
        // Tasks with the same keys are stored by one statement (a fan-out's share them).
        let mut by_keys: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for &position in positions {
            let templates = &plan.tasks()[position].options.limits;
            if templates.is_empty() {
                continue;
            }
            let input = if templates.iter().any(KeyTemplate::needs_input) {
                self.input_of(execution, plan, position)?
            } else {
                serde_json::Value::Null
            };
            let keys: std::result::Result<Vec<String>, String> =
                templates.iter().map(|t| t.render(&input)).collect();
            if let Ok(keys) = &keys {
                let mut sorted = keys.clone();
                sorted.sort_unstable();
                sorted.dedup();
                by_keys
                    .entry(serde_json::to_string(&sorted).expect("a list of strings is JSON"))
                    .or_default()
                    .push(position as i32);
                filled.insert(position, Ok(sorted));
            } else {
                filled.insert(position, keys);
            }
        }
        for (keys, positions) in &by_keys {
            for chunk in positions.chunks(CHUNK) {
                diesel::update(
                    task_executions::table
                        .filter(task_executions::execution_id.eq(execution))
                        .filter(task_executions::position.eq_any(chunk))
                        .filter(task_executions::map_index.eq(-1)),
                )
                .set(task_executions::limit_keys.eq(Some(keys)))
                .execute_on(self)?;
            }
        }
        Ok(filled)
    }

    /// Fills the keys of the tasks `settled` made ready ([`Conn::fill_keys`]); a task whose keys
    /// cannot be filled fails with the reason, its dependents settle in turn, and so on.
    pub(crate) fn fill_keys_or_fail(
        &mut self,
        execution: &str,
        plan: &ExecutionPlan,
        settled: &mut Settled,
        states: &mut BTreeMap<usize, TaskState>,
        now: NaiveDateTime,
    ) -> Result<()> {
        let mut fresh = settled.ready.clone();
        while !fresh.is_empty() {
            let failed: Vec<(usize, String)> = self
                .fill_keys(execution, plan, &fresh)?
                .into_iter()
                .filter_map(|(p, keys)| keys.err().map(|e| (p, e)))
                .collect();
            if failed.is_empty() {
                break;
            }
            for (position, error) in &failed {
                diesel::update(
                    task_executions::table
                        .filter(task_executions::execution_id.eq(execution))
                        .filter(task_executions::position.eq(*position as i32))
                        .filter(task_executions::map_index.eq(-1)),
                )
                .set((
                    task_executions::status.eq(TaskStatus::Failed.as_str()),
                    task_executions::error.eq(Some(error)),
                    task_executions::completed_at.eq(Some(now)),
                ))
                .execute_on(self)?;
                if let Some(state) = states.get_mut(position) {
                    state.status = TaskStatus::Failed;
                    state.ready = false;
                }
            }
            let failed: Vec<usize> = failed.into_iter().map(|(p, _)| p).collect();
            settled.ready.retain(|p| !failed.contains(p));
            let next = self.settle(execution, plan, &failed, states, now)?;
            settled.skipped.extend(next.skipped);
            settled.expanded |= next.expanded;
            fresh = next.ready.clone();
            settled.ready.extend(next.ready);
            settled.ready.sort_unstable();
        }
        Ok(())
    }

    /// Of the ready tasks at `positions` of `execution`, those that may start now: every task
    /// that holds no limit key, and those whose keys admit them (their units taken). The others
    /// stay ready and Pending, showing why they wait; they are returned second.
    pub(crate) fn admit_positions(
        &mut self,
        execution: &str,
        plan: &ExecutionPlan,
        positions: Vec<usize>,
        states: &BTreeMap<usize, TaskState>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<usize>, Vec<usize>)> {
        let (keyed, mut free): (Vec<usize>, Vec<usize>) = positions
            .into_iter()
            .partition(|&p| !plan.tasks()[p].options.limits.is_empty());
        if keyed.is_empty() {
            return Ok((free, Vec::new()));
        }
        let stored: Vec<(i32, Option<String>)> = task_executions::table
            .filter(task_executions::execution_id.eq(execution))
            .filter(task_executions::position.eq_any(keyed.iter().map(|&p| p as i32)))
            .filter(task_executions::map_index.eq(-1))
            .select((task_executions::position, task_executions::limit_keys))
            .load_on(self)?;
        let keys: BTreeMap<usize, Vec<String>> = stored
            .into_iter()
            .filter_map(|(p, k)| Some((p as usize, serde_json::from_str(&k?).ok()?)))
            .collect();
        // A task whose keys were not stored (its keys could not be filled) is not started.
        let known: Vec<usize> = keyed
            .iter()
            .copied()
            .filter(|p| keys.contains_key(p))
            .collect();
        let candidates: Vec<Keyed<'_>> = known
            .iter()
            .map(|p| Keyed {
                execution_id: execution,
                task_id: &states[p].task_id,
                attempt: states[p].attempt as i32 + 1,
                keys: &keys[p],
            })
            .collect();
        let admitted = self.take_units(&candidates, now)?;
        let mut waiting: Vec<usize> = keyed
            .iter()
            .copied()
            .filter(|p| !keys.contains_key(p))
            .collect();
        for (p, ok) in known.into_iter().zip(admitted) {
            if ok {
                free.push(p);
            } else {
                waiting.push(p);
            }
        }
        free.sort_unstable();
        Ok((free, waiting))
    }

    /// Makes Running under `worker` up to `limit` ready tasks and map instances that hold limit
    /// keys, whose (node's) ids are in `task_ids`, of any execution or of `execution` alone,
    /// highest priority and oldest first, each only if its keys admit it.
    pub(crate) fn take_keyed_rows(
        &mut self,
        worker: &str,
        task_ids: &[String],
        limit: usize,
        now: DateTime<Utc>,
        execution: Option<&str>,
    ) -> Result<Vec<TakenRow>> {
        match self {
            // A claim of any execution runs outside a transaction on PostgreSQL: the key rows'
            // locks must last until the holders are stored, or two workers admit past a cap.
            #[cfg(feature = "postgres")]
            Conn::Postgres(pg) => pg.transaction(|pg| {
                Conn::Postgres(pg).take_keyed_rows_locked(worker, task_ids, limit, now, execution)
            }),
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(_) => self.take_keyed_rows_locked(worker, task_ids, limit, now, execution),
        }
    }

    /// [`Conn::take_keyed_rows`] inside a transaction.
    fn take_keyed_rows_locked(
        &mut self,
        worker: &str,
        task_ids: &[String],
        limit: usize,
        now: DateTime<Utc>,
        execution: Option<&str>,
    ) -> Result<Vec<TakenRow>> {
        let mut found: Vec<(TakenRow, Option<String>)> = Vec::new();
        for chunk in task_ids.chunks(CHUNK) {
            let wanted = limit.saturating_sub(found.len());
            if wanted == 0 {
                break;
            }
            let ready = task_executions::table
                .filter(task_executions::queue.eq(super::rows::DEFAULT_QUEUE))
                .filter(task_executions::status.eq(TaskStatus::Pending.as_str()))
                .filter(task_executions::ready_at.is_not_null())
                .filter(task_executions::limit_keys.is_not_null())
                .filter(
                    task_executions::task_id
                        .eq_any(chunk)
                        .or(task_executions::map_task.eq_any(chunk)),
                )
                .filter(
                    task_executions::execution_id
                        .eq(execution.unwrap_or_default())
                        .or(diesel::dsl::sql::<diesel::sql_types::Bool>(
                            if execution.is_some() { "FALSE" } else { "TRUE" },
                        )),
                )
                .order((task_executions::priority.desc(), task_executions::ready_at))
                .limit(wanted as i64)
                .select((columns::<TakenRow>(), task_executions::limit_keys));
            // Not locked here: `take_units` locks the key rows first and then the task rows
            // still Pending, the order every claim keeps.
            found.extend(ready.load_on::<(TakenRow, Option<String>)>(self)?);
        }
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<String>> = found
            .iter()
            .map(|(_, k)| {
                k.as_deref()
                    .and_then(|k| serde_json::from_str(k).ok())
                    .unwrap_or_default()
            })
            .collect();
        let candidates: Vec<Keyed<'_>> = found
            .iter()
            .zip(&keys)
            .map(|((row, _), keys)| Keyed {
                execution_id: &row.execution_id,
                task_id: &row.task_id,
                attempt: row.attempt + 1,
                keys,
            })
            .collect();
        let admitted = self.take_units(&candidates, now)?;
        let mut taken = Vec::new();
        for ((mut row, _), ok) in found.into_iter().zip(admitted) {
            if !ok {
                continue;
            }
            start_row(self, worker, &mut row, now.naive_utc())?;
            taken.push(row);
        }
        Ok(taken)
    }

    /// Gives back the units held by the attempts of `task_ids` of `execution`; how many.
    pub(crate) fn give_back_units(&mut self, execution: &str, task_ids: &[&str]) -> Result<usize> {
        let mut freed = 0;
        for chunk in task_ids.chunks(CHUNK) {
            freed += diesel::delete(
                limit_holders::table
                    .filter(limit_holders::execution_id.eq(execution))
                    .filter(limit_holders::task_id.eq_any(chunk)),
            )
            .execute_on(self)?;
        }
        Ok(freed)
    }

    /// Creates the usage rows of `keys` (sorted) that do not exist yet and locks them all, in
    /// key order, until the transaction ends; their usage, with nothing counted as running.
    fn lock_usage(&mut self, keys: &[&str]) -> Result<BTreeMap<String, Usage>> {
        let mut usage = BTreeMap::new();
        for chunk in keys.chunks(CHUNK) {
            let mut locked = self.lock_usage_rows(chunk)?;
            if locked.len() < chunk.len() {
                // A key used for the first time: its row is made, and all are locked again in
                // key order.
                let rows: Vec<_> = chunk.iter().map(|k| limit_usage::key.eq(*k)).collect();
                diesel::insert_into(limit_usage::table)
                    .values(rows)
                    .on_conflict_do_nothing()
                    .execute_on(self)?;
                locked = self.lock_usage_rows(chunk)?;
            }
            for (key, next_start) in locked {
                let next_start = next_start.map(|t| t.and_utc());
                usage.insert(
                    key,
                    Usage {
                        running: 0,
                        next_start,
                    },
                );
            }
        }
        Ok(usage)
    }

    /// Reads and locks the usage rows of `keys`, in key order (`FOR UPDATE` on PostgreSQL; on
    /// SQLite the immediate transaction already holds the write lock).
    fn lock_usage_rows(&mut self, keys: &[&str]) -> Result<Vec<(String, Option<NaiveDateTime>)>> {
        let rows = limit_usage::table
            .filter(limit_usage::key.eq_any(keys))
            .order(limit_usage::key)
            .select((limit_usage::key, limit_usage::next_start));
        Ok(match self {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(conn) => rows.load(*conn)?,
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => rows.for_update().load(*conn)?,
        })
    }

    /// The (execution, key) pairs whose units the executions of `candidates` hold as a whole.
    fn execution_holders(
        &mut self,
        candidates: &[Keyed<'_>],
    ) -> Result<BTreeSet<(String, String)>> {
        let executions: BTreeSet<&str> = candidates
            .iter()
            .filter(|c| c.keys.iter().any(|k| held_by_execution(k).is_some()))
            .map(|c| c.execution_id)
            .collect();
        let executions: Vec<&str> = executions.into_iter().collect();
        let mut held = BTreeSet::new();
        for chunk in executions.chunks(CHUNK) {
            held.extend(
                limit_holders::table
                    .filter(limit_holders::execution_id.eq_any(chunk))
                    .filter(limit_holders::task_id.eq(""))
                    .select((limit_holders::execution_id, limit_holders::key))
                    .load_on::<(String, String)>(self)?,
            );
        }
        Ok(held)
    }

    /// Gives back every unit held by `execution` and its attempts, when it ends.
    pub(crate) fn give_back_all_units(&mut self, execution: &str) -> Result<()> {
        diesel::delete(limit_holders::table.filter(limit_holders::execution_id.eq(execution)))
            .execute_on(self)?;
        Ok(())
    }

    /// Those of `candidates` still Pending, their rows locked (`FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL: a row another claim holds is that claim's to take). On SQLite the write
    /// transaction that read them still holds the only write lock: all are.
    fn still_pending<'c>(
        &mut self,
        candidates: &[Keyed<'c>],
    ) -> Result<BTreeSet<(&'c str, &'c str)>> {
        #[cfg(feature = "sqlite")]
        if matches!(self, Conn::Sqlite(_)) {
            return Ok(candidates
                .iter()
                .map(|c| (c.execution_id, c.task_id))
                .collect());
        }
        let mut by_execution: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in candidates {
            by_execution
                .entry(c.execution_id)
                .or_default()
                .push(c.task_id);
        }
        let mut pending = BTreeSet::new();
        for (execution, task_ids) in by_execution {
            for chunk in task_ids.chunks(CHUNK) {
                let rows = task_executions::table
                    .filter(task_executions::execution_id.eq(execution))
                    .filter(task_executions::task_id.eq_any(chunk))
                    .filter(task_executions::status.eq(TaskStatus::Pending.as_str()))
                    .select(task_executions::task_id);
                let found: Vec<String> = match self {
                    #[cfg(feature = "sqlite")]
                    Conn::Sqlite(conn) => rows.load(*conn)?,
                    #[cfg(feature = "postgres")]
                    Conn::Postgres(conn) => rows.for_update().skip_locked().load(*conn)?,
                };
                pending.extend(
                    chunk
                        .iter()
                        .filter(|t| found.iter().any(|f| f == **t))
                        .map(|t| (execution, *t)),
                );
            }
        }
        Ok(pending)
    }

    /// Stores why the tasks `task_ids` of `execution` wait, where it is not stored already.
    fn show_waiting(&mut self, execution: &str, reason: &str, task_ids: &[&str]) -> Result<()> {
        for chunk in task_ids.chunks(CHUNK) {
            diesel::update(
                task_executions::table
                    .filter(task_executions::execution_id.eq(execution))
                    .filter(task_executions::task_id.eq_any(chunk))
                    .filter(
                        task_executions::reason
                            .is_null()
                            .or(task_executions::reason.ne(reason)),
                    ),
            )
            .set(task_executions::reason.eq(Some(reason)))
            .execute_on(self)?;
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::database::testing::one_task_executions;
    use crate::database::Pool;

    async fn with_conn<T: Send + 'static>(
        db: &crate::database::Database,
        f: impl FnOnce(&mut Conn<'_>) -> Result<T> + Send + 'static,
    ) -> T {
        db.run(move |pool: &Pool| pool.write_transaction(f))
            .await
            .unwrap()
    }

    /// Takes the units of task `t`'s first attempt in each of the executions `ids`, holding `keys`.
    async fn take(db: &crate::database::Database, ids: &[String], keys: &[String]) -> Vec<bool> {
        let (ids, keys) = (ids.to_vec(), keys.to_vec());
        with_conn(db, move |conn| {
            let candidates: Vec<Keyed<'_>> = ids
                .iter()
                .map(|id| Keyed {
                    execution_id: id,
                    task_id: "t",
                    attempt: 1,
                    keys: &keys,
                })
                .collect();
            conn.take_units(&candidates, Utc::now())
        })
        .await
    }

    #[tokio::test]
    async fn a_cap_admits_up_to_its_units_and_given_back_units_admit_again() {
        let (db, _, ids) = one_task_executions(3).await;
        db.put_limit(Limit::new("api", Some(2), None, 1.0).unwrap())
            .await
            .unwrap();
        let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let keys = vec!["api".to_string(), "free".to_string()];
        assert_eq!(take(&db, &ids, &keys).await, vec![true, true, false]);
        let first = ids[0].clone();
        let freed = with_conn(&db, move |conn| conn.give_back_units(&first, &["t"])).await;
        assert_eq!(freed, 2);
        assert_eq!(take(&db, &ids[2..], &keys).await, vec![true]);
        let listed = db.list_limits().await.unwrap();
        assert_eq!(listed[0].running, Some(2));
    }

    #[tokio::test]
    async fn a_rate_spaces_starts() {
        let (db, _, ids) = one_task_executions(2).await;
        db.put_limit(Limit::new("r", None, Some(1), 3600.0).unwrap())
            .await
            .unwrap();
        let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let admitted = take(&db, &ids, &["r".to_string()]).await;
        assert_eq!(admitted, vec![true, false]);
    }
}

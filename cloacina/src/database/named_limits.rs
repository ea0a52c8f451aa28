//! Named limits as stored: creating, changing, deleting and listing them with how their keys
//! are used now. What a limit allows is decided in `model/limits.rs`.

use diesel::prelude::*;

use super::connection::{columns, RunOn};
use super::schema::{limit_holders, limits, task_executions};
use super::signals::Signal;
use super::Database;
use crate::error::{Error, Result};
use crate::model::limits::{governing, waited_key, Limit, WAITING_FOR};
use crate::model::now;
use crate::model::TaskStatus;

/// A limit's row.
#[derive(Queryable, Selectable)]
#[diesel(table_name = limits)]
pub(crate) struct LimitRow {
    name: String,
    concurrency: Option<i32>,
    rate: Option<i32>,
    per_seconds: f64,
}

impl LimitRow {
    /// The limit the row stores.
    pub(crate) fn into_limit(self) -> Limit {
        let count = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok());
        Limit {
            name: self.name,
            concurrency: count(self.concurrency),
            rate: count(self.rate),
            per: std::time::Duration::from_secs_f64(self.per_seconds.max(0.0)),
        }
    }
}

/// A limit and, for a concrete key, how many running attempts hold it now.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitInfo {
    /// The limit as stored.
    pub limit: Limit,
    /// Attempts holding the key now; `None` for a default (`prefix*`).
    pub running: Option<u32>,
    /// Ready tasks waiting for the key now; `None` for a default (`prefix*`).
    pub waiting: Option<u32>,
}

/// The stored `limits` and the concrete keys in use under a default (`prefix*`), sorted by
/// name, each concrete key with its `running` and `waiting` counts.
fn listing(
    limits: Vec<Limit>,
    running: &[(String, u32)],
    waiting: &[(String, u32)],
) -> Vec<LimitInfo> {
    let count =
        |of: &[(String, u32)], key: &str| of.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n);
    let mut listed: Vec<LimitInfo> = running
        .iter()
        .chain(waiting)
        .map(|(key, _)| key)
        .filter(|key| !limits.iter().any(|l| &l.name == *key))
        .filter_map(|key| {
            let default = governing(key, &limits)?;
            Some(Limit {
                name: key.clone(),
                ..default.clone()
            })
        })
        .chain(limits.iter().cloned())
        .map(|limit| {
            let concrete = !limit.is_default();
            LimitInfo {
                running: concrete.then(|| count(running, &limit.name)),
                waiting: concrete.then(|| count(waiting, &limit.name)),
                limit,
            }
        })
        .collect();
    listed.sort_by(|a, b| a.limit.name.cmp(&b.limit.name));
    listed.dedup_by(|a, b| a.limit.name == b.limit.name);
    listed
}

/// The error for a limit name that is not stored.
fn unknown(name: &str) -> Error {
    Error::UnknownLimit(format!(
        "no limit named {name:?} in this database; list_limits() shows the names"
    ))
}

impl Database {
    /// Stores `limit`, or changes the one with its name; waiting tasks are woken at once, so a
    /// raised cap starts them without polling.
    pub(crate) async fn put_limit(&self, limit: Limit) -> Result<()> {
        self.run(move |pool| {
            let at = now().naive_utc();
            pool.write_transaction(|conn| {
                let values = (
                    limits::concurrency.eq(limit.concurrency.map(|n| n as i32)),
                    limits::rate.eq(limit.rate.map(|n| n as i32)),
                    limits::per_seconds.eq(limit.per.as_secs_f64()),
                    limits::updated_at.eq(at),
                );
                let inserted = diesel::insert_into(limits::table)
                    .values((limits::name.eq(&limit.name), values))
                    .on_conflict_do_nothing()
                    .execute_on(conn)?;
                if inserted == 0 {
                    diesel::update(limits::table.find(&limit.name))
                        .set(values)
                        .execute_on(conn)?;
                }
                conn.announce(Signal::Ready)?;
                Ok(())
            })
        })
        .await?;
        self.signals().raise(Signal::Ready);
        Ok(())
    }

    /// Deletes the limit `name`; its keys are unlimited from then on (or governed by a default).
    pub(crate) async fn remove_limit(&self, name: String) -> Result<()> {
        self.run(move |pool| {
            pool.write_transaction(|conn| {
                let removed = diesel::delete(limits::table.find(&name)).execute_on(conn)?;
                if removed == 0 {
                    return Err(unknown(&name));
                }
                conn.announce(Signal::Ready)?;
                Ok(())
            })
        })
        .await?;
        self.signals().raise(Signal::Ready);
        Ok(())
    }

    /// Every stored limit, by name, with how many attempts hold each concrete key now.
    pub(crate) async fn list_limits(&self) -> Result<Vec<LimitInfo>> {
        self.run(|pool| {
            pool.with_connection(|conn| {
                let rows: Vec<LimitRow> = limits::table
                    .order(limits::name)
                    .select(columns::<LimitRow>())
                    .load_on(conn)?;
                let held: Vec<(String, i64)> = limit_holders::table
                    .group_by(limit_holders::key)
                    .select((limit_holders::key, diesel::dsl::count_star()))
                    .load_on(conn)?;
                // A waiting task's reason names the key it waits for.
                let reasons: Vec<(Option<String>, i64)> = task_executions::table
                    .filter(task_executions::status.eq(TaskStatus::Pending.as_str()))
                    .filter(task_executions::ready_at.is_not_null())
                    .filter(task_executions::limit_keys.is_not_null())
                    .filter(task_executions::reason.like(format!("{WAITING_FOR}%")))
                    .group_by(task_executions::reason)
                    .select((task_executions::reason, diesel::dsl::count_star()))
                    .load_on(conn)?;
                let mut waiting: Vec<(String, u32)> = Vec::new();
                for (key, n) in reasons
                    .iter()
                    .filter_map(|(r, n)| Some((waited_key(r.as_deref()?)?, *n)))
                {
                    match waiting.iter_mut().find(|(k, _)| k == key) {
                        Some((_, total)) => *total += to_u32(n),
                        None => waiting.push((key.to_string(), to_u32(n))),
                    }
                }
                let running: Vec<(String, u32)> =
                    held.into_iter().map(|(k, n)| (k, to_u32(n))).collect();
                let limits = rows.into_iter().map(LimitRow::into_limit).collect();
                Ok(listing(limits, &running, &waiting))
            })
        })
        .await
    }
}

fn to_u32(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

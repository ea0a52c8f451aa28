//! Durable waits in storage: parking a claimed task as Waiting until a time or an event, waking
//! the tasks whose time has come, and events.
//!
//! A parked task holds no claim, slot or limit: its row is Waiting with the instant it becomes
//! Pending again (`wake_at`, by the lease clock: the database server's on PostgreSQL) and/or the
//! event key it waits for. Any worker wakes due rows (`wake_due`); `send_event` wakes the rows
//! waiting on its key. An event task's check for an event and its park happen in one
//! transaction that holds the key's lock, as does `send_event`, so no event falls between them.

use std::sync::Mutex;

use once_cell::sync::Lazy;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::claims::fenced;
use super::connection::{Conn, RunOn};
use super::schema::{events, task_executions, workflow_executions};
use super::signals::Signal;
use super::store::Waking;
use super::Database;
use crate::error::Result;
use crate::model::waits::{WaitReason, EVENT_RETENTION};
use crate::model::{AttemptRecord, TaskStatus};

/// When a parked task becomes ready again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Wake {
    /// At this instant.
    At(DateTime<Utc>),
    /// This long from now, by the lease clock.
    After(Duration),
    /// Only when an event arrives.
    Never,
}

/// A claimed task to park: whose claim, until when, why, and what its attempt used.
#[derive(Debug, Clone)]
pub(crate) struct Park {
    pub execution: Uuid,
    pub worker: String,
    /// The claim's fence: the park is stored only while the claim is still the task's.
    pub fence: u32,
    /// The row's key (a task's id, or an instance's `node[i]`).
    pub task_id: String,
    pub wake: Wake,
    pub reason: WaitReason,
    /// The ended attempt to record (a failure to retry, a snooze); None for a wait task's park,
    /// which is not an attempt.
    pub attempt: Option<AttemptRecord>,
    /// Whether the attempt used a retry.
    pub retry: bool,
    /// Whether the attempt snoozed.
    pub snooze: bool,
    /// Whether the task holds limit units to give back.
    pub holds_units: bool,
}

/// What parking a task did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Parked {
    /// The task waits until this instant (None: for an event only).
    Waiting(Option<DateTime<Utc>>),
    /// A sleep whose instant has already passed: nothing was stored, the task completes now.
    Due,
    /// The claim had been given back: nothing was stored.
    Lost,
    /// The execution was cancelled, for this reason: nothing was stored.
    Cancelled(String),
}

/// What an event task found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EventWait {
    /// The first event with its key since its execution was submitted: its payload's JSON.
    Arrived(String),
    /// Its timeout passed with no event.
    TimedOut,
    /// It was parked (or could not be, as `Parked` says).
    Parked(Parked),
}

/// What a task's row carries from its earlier attempts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Carried {
    /// The instant its wait ended or ends, if it waited for one.
    pub wake_at: Option<DateTime<Utc>>,
    /// When it became ready.
    pub ready_at: Option<DateTime<Utc>>,
    /// Retries its failed attempts used.
    pub retries_used: u32,
    /// Times it snoozed.
    pub snoozes: u32,
}

/// The earliest wake time of a task this process parked, not yet handed to its claim loop.
static NEXT_WAKE: Mutex<Option<Instant>> = Mutex::new(None);

/// Wakes a claim loop sleeping past the wake time a park here just noted.
static NOTED: Lazy<Notify> = Lazy::new(Notify::new);

/// Notes that a task this process parks wakes `after` from now.
fn note_wake(after: Duration) {
    let at = Instant::now() + after;
    let mut next = NEXT_WAKE.lock().unwrap_or_else(|p| p.into_inner());
    if next.is_none_or(|next| at < next) {
        *next = Some(at);
        NOTED.notify_waiters();
    }
}

/// Resolves when a park in this process notes a wake time (see [`until_parked_wake`]).
pub(crate) async fn parked_wake_noted() {
    NOTED.notified().await
}

/// How long until the earliest wake time of a task this process parked since the last call.
pub(crate) fn until_parked_wake() -> Option<Duration> {
    let at = NEXT_WAKE.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    Some(at.saturating_duration_since(Instant::now()))
}

fn utc(at: NaiveDateTime) -> DateTime<Utc> {
    at.and_utc()
}

impl Conn<'_> {
    /// Serialises event checks and sends of one key until the transaction ends (SQLite's
    /// immediate transactions already hold the whole file).
    fn lock_event_key(&mut self, key: &str) -> Result<()> {
        match self {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(_) => {
                let _ = key;
                Ok(())
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => {
                diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind::<diesel::sql_types::Text, _>(key)
                    .execute(*conn)?;
                Ok(())
            }
        }
    }

    /// Parks the task as `park` says, inside the caller's transaction; `key` is the event it
    /// waits for, if any.
    pub(super) fn park(&mut self, park: &Park, key: Option<&str>) -> Result<Parked> {
        let id = park.execution.to_string();
        let Some(locked) = self.lock_execution(&id)? else {
            return Ok(Parked::Lost);
        };
        if let Some(reason) = locked.cancel_reason {
            return Ok(Parked::Cancelled(reason));
        }
        self.park_locked(park, key)
    }

    /// `park`, for a caller that has locked the task's execution (shared or not) and found
    /// it not cancelled.
    pub(super) fn park_locked(&mut self, park: &Park, key: Option<&str>) -> Result<Parked> {
        let id = park.execution.to_string();
        let clock = self.lease_clock()?;
        let wake_at = match park.wake {
            Wake::At(at) => Some(at.naive_utc()),
            Wake::After(after) => {
                Some(clock + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX))
            }
            Wake::Never => None,
        };
        if park.reason == WaitReason::Sleeping && wake_at.is_some_and(|at| at <= clock) {
            return Ok(Parked::Due);
        }
        let reason = park.reason.text(wake_at.map(utc));
        if let Some(at) = wake_at {
            note_wake((at - clock).to_std().unwrap_or_default());
        }
        // A wait's own park is not an attempt: it gives its number back, so the claim that ends
        // the wait runs under the same number (and records it). Only the parking runner held
        // that number, and it writes nothing more, so no stale write can match it again.
        let attempt_after = park.fence as i32 - i32::from(park.attempt.is_none());
        let owned = diesel::update(
            task_executions::table
                .find((&id, &park.task_id))
                .filter(fenced(&park.worker, park.fence)),
        )
        .set((
            task_executions::status.eq(TaskStatus::Waiting.as_str()),
            task_executions::worker_id.eq(None::<String>),
            task_executions::wake_at.eq(wake_at),
            task_executions::wait_key.eq(key),
            task_executions::reason.eq(reason),
            task_executions::attempt.eq(attempt_after),
            task_executions::retries_used.eq(task_executions::retries_used + i32::from(park.retry)),
            task_executions::snoozes.eq(task_executions::snoozes + i32::from(park.snooze)),
        ))
        .execute_on(self)?;
        if owned == 0 {
            return Ok(Parked::Lost);
        }
        if let Some(attempt) = &park.attempt {
            self.insert_attempt(&id, &park.task_id, attempt)?;
        }
        if park.holds_units && self.give_back_units(&id, &[park.task_id.as_str()])? > 0 {
            self.announce(Signal::Ready)?;
        }
        Ok(Parked::Waiting(wake_at.map(utc)))
    }
}

impl Database {
    /// What the row of task `task_id` of `execution` carries from its earlier attempts.
    pub(crate) async fn carried(&self, execution: Uuid, task_id: String) -> Result<Carried> {
        self.run(move |pool| {
            pool.with_connection(|conn| {
                let (wake_at, ready_at, retries_used, snoozes): (
                    Option<NaiveDateTime>,
                    Option<NaiveDateTime>,
                    i32,
                    i32,
                ) = task_executions::table
                    .find((execution.to_string(), task_id))
                    .select((
                        task_executions::wake_at,
                        task_executions::ready_at,
                        task_executions::retries_used,
                        task_executions::snoozes,
                    ))
                    .get_result_on(conn)?;
                Ok(Carried {
                    wake_at: wake_at.map(utc),
                    ready_at: ready_at.map(utc),
                    retries_used: retries_used.max(0) as u32,
                    snoozes: snoozes.max(0) as u32,
                })
            })
        })
        .await
    }

    /// Parks a claimed task until its wake time (see [`Park`]).
    pub(crate) async fn park(&self, park: Park) -> Result<Parked> {
        let parked = self
            .run(move |pool| pool.write_transaction(|conn| conn.park(&park, None)))
            .await?;
        Ok(parked)
    }

    /// For an event task: the first event with `key` since its execution was submitted, else
    /// its timeout if that has passed, else parks it (until its timeout, if `timeout`).
    pub(crate) async fn wait_for_event(
        &self,
        park: Park,
        key: String,
        timeout: Option<Duration>,
    ) -> Result<EventWait> {
        let waited = self
            .run(move |pool| {
                pool.write_transaction(|conn| {
                    conn.lock_event_key(&key)?;
                    let id = park.execution.to_string();
                    let submitted: NaiveDateTime = workflow_executions::table
                        .find(&id)
                        .select(workflow_executions::started_at)
                        .get_result_on(conn)?;
                    let clock = conn.lease_clock()?;
                    let found: Vec<String> = events::table
                        .filter(events::key.eq(&key))
                        .filter(events::created_at.ge(submitted))
                        .filter(events::expires_at.gt(clock))
                        .order(events::id.asc())
                        .select(events::payload)
                        .limit(1)
                        .load_on(conn)?;
                    if let Some(payload) = found.into_iter().next() {
                        return Ok(EventWait::Arrived(payload));
                    }
                    let wake_at: Option<NaiveDateTime> = task_executions::table
                        .find((&id, &park.task_id))
                        .select(task_executions::wake_at)
                        .get_result_on(conn)?;
                    let wake = match (wake_at, timeout) {
                        (Some(at), _) if at <= clock => return Ok(EventWait::TimedOut),
                        (Some(at), _) => Wake::At(utc(at)),
                        (None, Some(timeout)) => Wake::After(timeout),
                        (None, None) => Wake::Never,
                    };
                    let park = Park { wake, ..park };
                    Ok(EventWait::Parked(conn.park(&park, Some(&key))?))
                })
            })
            .await?;
        Ok(waited)
    }

    /// Stores an event with `key` and its payload's JSON, and makes every task waiting on `key`
    /// ready; how many it made ready.
    pub(crate) async fn send_event(&self, key: String, payload_json: String) -> Result<usize> {
        self.waking(move |conn| {
            conn.lock_event_key(&key)?;
            let clock = conn.lease_clock()?;
            diesel::delete(events::table.filter(events::expires_at.le(clock))).execute_on(conn)?;
            let retention =
                chrono::Duration::from_std(EVENT_RETENTION).unwrap_or(chrono::Duration::MAX);
            diesel::insert_into(events::table)
                .values((
                    events::key.eq(&key),
                    events::payload.eq(&payload_json),
                    events::created_at.eq(clock),
                    events::expires_at.eq(clock + retention),
                ))
                .execute_on(conn)?;
            conn.wake(Waking::Key(&key), clock)
        })
        .await
    }

    /// Makes every Waiting task whose wake time has come Pending; how many it woke.
    pub(crate) async fn wake_due(&self) -> Result<usize> {
        self.waking(|conn| {
            let clock = conn.lease_clock()?;
            conn.wake(Waking::Due, clock)
        })
        .await
    }

    /// Runs `work`, which wakes waiting tasks, in a write transaction; tells this process's
    /// claim loop when it woke any.
    async fn waking<F>(&self, work: F) -> Result<usize>
    where
        F: FnOnce(&mut Conn<'_>) -> Result<usize> + Send + 'static,
    {
        let woken = self.run(move |pool| pool.write_transaction(work)).await?;
        if woken > 0 {
            self.signals().raise(Signal::Ready);
        }
        Ok(woken)
    }

    /// How long until the earliest Waiting task's wake time (zero if it has passed); None when
    /// no task waits for a time.
    pub(crate) async fn next_due(&self) -> Result<Option<Duration>> {
        self.run(move |pool| {
            pool.with_connection(|conn| {
                let earliest: Option<NaiveDateTime> = task_executions::table
                    .filter(task_executions::status.eq(TaskStatus::Waiting.as_str()))
                    .select(diesel::dsl::min(task_executions::wake_at))
                    .get_result_on(conn)?;
                let Some(earliest) = earliest else {
                    return Ok(None);
                };
                let clock = conn.lease_clock()?;
                Ok(Some((earliest - clock).to_std().unwrap_or_default()))
            })
        })
        .await
    }
}

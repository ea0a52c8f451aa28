//! Schedules as stored: adding, listing, pausing and removing them, and making their fires.
//!
//! A fire is made in the transaction that moves the schedule's `next_fire_at` past it, with
//! the schedule's row locked (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the write lock on
//! SQLite): however many workers see a fire due at once, one makes it. Its execution also
//! carries an idempotency key derived from the schedule and the fire time.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use diesel::dsl::case_when;
use diesel::prelude::*;
use uuid::Uuid;

use super::connection::{columns, Conn, RunOn};
use super::dialect::due_schedules;
use super::rows::ScheduleRow;
use super::schema::{schedules, workers};
use super::signals::Signal;
use super::{Database, Pool};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{now, ExecutionPlan, ExecutionResult};
use crate::schedule::{due_fires, Cadence, Catchup, FIRE_TIME_KEY};

/// A schedule as `list_schedules` reports it.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Unique per database (and schema); also the schedule's id.
    pub name: String,
    /// The workflow each fire submits.
    pub workflow_name: String,
    /// The cron expression, as given.
    pub cron: String,
    /// The IANA time zone the expression is read in.
    pub timezone: String,
    /// Each fire's input context, before the fire time is added.
    pub context: Context,
    /// What happens to fires missed while no worker ran.
    pub catchup: Catchup,
    /// Whether fires are suspended.
    pub paused: bool,
    /// The next fire not made yet; None once the expression fires no more.
    pub next_fire_time: Option<DateTime<Utc>>,
    /// The newest fire made.
    pub last_fire_time: Option<DateTime<Utc>>,
    /// The execution the newest fire submitted.
    pub last_execution_id: Option<Uuid>,
    /// When the schedule was first stored.
    pub created_at: DateTime<Utc>,
    /// When it was last stored, paused or resumed.
    pub updated_at: DateTime<Utc>,
}

/// A schedule to store: checked, with the workflow's plan.
pub(crate) struct NewSchedule {
    pub name: String,
    pub workflow_name: String,
    pub workflow_version: String,
    pub plan: ExecutionPlan,
    pub cron: String,
    pub timezone: String,
    pub cadence: Cadence,
    pub context: Context,
    pub catchup: Catchup,
}

/// What a pass over due schedules did.
#[derive(Debug, Default)]
pub(crate) struct FirePass {
    /// Executions submitted, one per fire made: their ids and workflows.
    pub submitted: Vec<(Uuid, String)>,
}

impl ScheduleRow {
    fn corrupt(&self, what: &str) -> Error {
        Error::Database(format!(
            "stored schedule {:?} has an invalid {what}",
            self.name
        ))
    }

    fn catchup(&self) -> Result<Catchup> {
        Catchup::parse(&self.catchup).map_err(|_| self.corrupt("catchup"))
    }

    fn context(&self) -> Result<Context> {
        Context::from_json(&self.context).map_err(|_| self.corrupt("context"))
    }

    fn into_schedule(self) -> Result<Schedule> {
        Ok(Schedule {
            catchup: self.catchup()?,
            context: self.context()?,
            last_execution_id: self
                .last_execution_id
                .as_deref()
                .and_then(|id| Uuid::parse_str(id).ok()),
            next_fire_time: self.next_fire_at.map(|t| t.and_utc()),
            last_fire_time: self.last_fire_at.map(|t| t.and_utc()),
            created_at: self.created_at.and_utc(),
            updated_at: self.updated_at.and_utc(),
            name: self.name,
            workflow_name: self.workflow_name,
            cron: self.cron,
            timezone: self.timezone,
            paused: self.paused,
        })
    }
}

fn unknown(name: &str) -> Error {
    Error::UnknownSchedule(format!(
        "no schedule named {name:?} in this database; list_schedules() shows the names"
    ))
}

/// The idempotency key of the execution a schedule's fire submits.
fn fire_key(name: &str, fire: DateTime<Utc>) -> String {
    format!(
        "schedule:{name}:{}",
        fire.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

impl Database {
    /// Stores a schedule, or updates the one with its name. An update keeps the next fire
    /// (so fires missed before it still catch up) unless the expression or time zone changed,
    /// and keeps whether the schedule is paused.
    pub(crate) async fn put_schedule(&self, new: NewSchedule) -> Result<()> {
        self.change_schedules(move |pool| {
            let now_utc = now();
            let at = now_utc.naive_utc();
            // Encoded before the write lock is taken.
            let (plan, context) = (new.plan.to_json(), new.context.to_json());
            let fresh_next = new.cadence.next_after(now_utc).map(|t| t.naive_utc());
            pool.write_transaction(|conn| {
                let values = (
                    schedules::workflow_name.eq(&new.workflow_name),
                    schedules::workflow_version.eq(&new.workflow_version),
                    schedules::plan.eq(&plan),
                    schedules::cron.eq(&new.cron),
                    schedules::timezone.eq(&new.timezone),
                    schedules::context.eq(&context),
                    schedules::catchup.eq(new.catchup.as_str()),
                    schedules::updated_at.eq(at),
                );
                // Single statements, so processes that all schedule at start-up never collide:
                // the first inserts, the others update the row they wait for.
                let inserted = diesel::insert_into(schedules::table)
                    .values((
                        values,
                        schedules::name.eq(&new.name),
                        schedules::paused.eq(false),
                        schedules::next_fire_at.eq(fresh_next),
                        schedules::created_at.eq(at),
                    ))
                    .on_conflict_do_nothing()
                    .execute_on(conn)?;
                if inserted == 0 {
                    let same_times = schedules::cron
                        .eq(&new.cron)
                        .and(schedules::timezone.eq(&new.timezone))
                        .and(schedules::next_fire_at.is_not_null());
                    let next = case_when(same_times, schedules::next_fire_at).otherwise(fresh_next);
                    diesel::update(schedules::table.find(&new.name))
                        .set((values, schedules::next_fire_at.eq(next)))
                        .execute_on(conn)?;
                }
                conn.announce(Signal::Schedules)?;
                Ok(())
            })
        })
        .await
    }

    /// Runs `change`, a transaction that announced `Signal::Schedules` to other processes, then
    /// wakes this process's fire loop too.
    async fn change_schedules(
        &self,
        change: impl FnOnce(&Pool) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        self.run(change).await?;
        self.signals().raise(Signal::Schedules);
        Ok(())
    }

    /// Every stored schedule, by name.
    pub(crate) async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        self.run(|pool| {
            pool.with_connection(|conn| {
                let rows: Vec<ScheduleRow> = schedules::table
                    .order(schedules::name)
                    .select(columns::<ScheduleRow>())
                    .load_on(conn)?;
                rows.into_iter().map(ScheduleRow::into_schedule).collect()
            })
        })
        .await
    }

    /// Pauses or resumes a schedule. Resuming skips the fires that fell due while paused.
    pub(crate) async fn set_schedule_paused(&self, name: String, paused: bool) -> Result<()> {
        self.change_schedules(move |pool| {
            let now_utc = now();
            pool.write_transaction(|conn| {
                let Some((cron, timezone, was_paused)) = schedules::table
                    .find(&name)
                    .select((schedules::cron, schedules::timezone, schedules::paused))
                    .get_result_on::<(String, String, bool)>(conn)
                    .optional()?
                else {
                    return Err(unknown(&name));
                };
                if was_paused == paused {
                    return Ok(());
                }
                let row = diesel::update(schedules::table.find(&name));
                let changed = (
                    schedules::paused.eq(paused),
                    schedules::updated_at.eq(now_utc.naive_utc()),
                );
                if paused {
                    row.set(changed).execute_on(conn)?;
                } else {
                    let next = Cadence::parse(&cron, &timezone)?
                        .next_after(now_utc)
                        .map(|t| t.naive_utc());
                    row.set((changed, schedules::next_fire_at.eq(next)))
                        .execute_on(conn)?;
                }
                conn.announce(Signal::Schedules)?;
                Ok(())
            })
        })
        .await
    }

    /// Deletes a schedule; executions it submitted stay.
    pub(crate) async fn remove_schedule(&self, name: String) -> Result<()> {
        self.change_schedules(move |pool| {
            pool.write_transaction(|conn| {
                let removed = diesel::delete(schedules::table.find(&name)).execute_on(conn)?;
                if removed == 0 {
                    return Err(unknown(&name));
                }
                conn.announce(Signal::Schedules)?;
                Ok(())
            })
        })
        .await
    }

    /// The earliest next fire of any schedule that is not paused.
    pub(crate) async fn next_schedule_fire(&self) -> Result<Option<DateTime<Utc>>> {
        self.run(|pool| {
            pool.with_connection(|conn| {
                let next: Option<NaiveDateTime> = schedules::table
                    .filter(schedules::paused.eq(false))
                    .select(diesel::dsl::min(schedules::next_fire_at))
                    .get_result_on(conn)?;
                Ok(next.map(|t| t.and_utc()))
            })
        })
        .await
    }

    /// Makes the due fires of every schedule nobody else is firing, each schedule in its own
    /// transaction. `watching_since` is when this worker began watching schedules: fires due
    /// before it and before every other live worker started were missed, and follow the
    /// schedule's catch-up mode.
    pub(crate) async fn fire_due_schedules(
        &self,
        watching_since: DateTime<Utc>,
        lease: Duration,
    ) -> Result<FirePass> {
        self.run(move |pool| {
            let due: Vec<String> = pool.with_connection(|conn| {
                Ok(due_schedules(now().naive_utc())
                    .order(schedules::next_fire_at)
                    .select(schedules::name)
                    .load_on(conn)?)
            })?;
            let mut pass = FirePass::default();
            let mut first_error = None;
            for name in due {
                // One schedule that cannot fire (an unreadable row) never holds up the others.
                match pool.write_transaction(|conn| {
                    let Some(row) = conn.lock_due_schedule(&name, now().naive_utc())? else {
                        return Ok(Vec::new());
                    };
                    conn.fire_locked(row, watching_since, lease)
                }) {
                    Ok(submitted) => pass.submitted.extend(submitted),
                    Err(err) => first_error = first_error.or(Some(err)),
                }
            }
            match first_error {
                Some(err) if pass.submitted.is_empty() => Err(err),
                _ => Ok(pass),
            }
        })
        .await
    }
}

impl Conn<'_> {
    /// Makes a locked schedule's due fires and moves it on; returns the executions submitted.
    pub(crate) fn fire_locked(
        &mut self,
        row: ScheduleRow,
        watching_since: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<(Uuid, String)>> {
        let next_fire = row
            .next_fire_at
            .expect("a due schedule has a next fire")
            .and_utc();
        let cadence = Cadence::parse(&row.cron, &row.timezone)
            .map_err(|_| row.corrupt("cron expression or time zone"))?;
        let plan = ExecutionPlan::from_json(&row.plan).map_err(|_| row.corrupt("plan"))?;
        let (catchup, context) = (row.catchup()?, row.context()?);
        let now_utc = now();
        // Watched since the oldest live worker started, not only since this one did:
        // a fire counts as missed only when no worker was running at its time.
        let alive_after = self.lease_expiry(lease)?;
        let oldest_live: Option<NaiveDateTime> = workers::table
            .filter(workers::heartbeat_at.ge(alive_after))
            .select(diesel::dsl::min(workers::started_at))
            .get_result_on(self)?;
        let since = oldest_live.map_or(watching_since, |t| t.and_utc().min(watching_since));
        let fires = due_fires(&cadence, catchup, next_fire, since, now_utc);
        let mut last = None;
        let mut created = Vec::new();
        for &fire in &fires.run {
            let record = ExecutionResult::pending(
                Uuid::new_v4(),
                &row.workflow_name,
                &row.workflow_version,
                fire_context(&context, fire),
                &plan,
            );
            let key = Some(fire_key(&row.name, fire));
            let submitted = self.submit_new(&record, &plan, key, None, None, lease)?;
            if submitted.created {
                created.push((submitted.execution_id, row.workflow_name.clone()));
            }
            last = Some((fire, submitted.execution_id));
        }
        let next = fires.next.map(|t| t.naive_utc());
        let moved = diesel::update(schedules::table.find(&row.name));
        match last {
            Some((fire, execution)) => moved
                .set((
                    schedules::next_fire_at.eq(next),
                    schedules::last_fire_at.eq(Some(fire.naive_utc())),
                    schedules::last_execution_id.eq(Some(execution.to_string())),
                ))
                .execute_on(self)?,
            None => moved
                .set(schedules::next_fire_at.eq(next))
                .execute_on(self)?,
        };
        Ok(created)
    }
}

/// The input context of one fire: the schedule's context plus the fire time.
fn fire_context(context: &Context, fire: DateTime<Utc>) -> Context {
    let mut input = context.clone();
    input.insert(
        FIRE_TIME_KEY,
        fire.to_rfc3339_opts(SecondsFormat::Micros, false),
    );
    input
}

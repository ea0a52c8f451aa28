//! Cron schedules from the executor's side: storing and managing them, and the worker loop
//! that sleeps until the next fire is due and makes it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::worker::{Backoff, Worker};
use super::{shut_down, UnifiedExecutor};
use crate::context::Context;
use crate::database::schedules::{NewSchedule, Schedule};
use crate::database::signals::Signal;
use crate::error::{Error, Result};
use crate::events::{report, Event};
use crate::model::{now, ExecutionPlan};
use crate::schedule::{Cadence, Catchup};
use crate::workflow::Workflow;

/// Longest a worker sleeps before it reads again when to fire. A wall clock that jumped (a
/// machine woken from suspend, a corrected clock) is noticed within this long.
const LONGEST_SLEEP: Duration = Duration::from_secs(30);
/// Pause after a pass that found a due schedule but made nothing (another worker holds it).
const HELD_ELSEWHERE: Duration = Duration::from_millis(20);
/// Longest schedule name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// Settings of one schedule.
#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    /// Unique per database; defaults to the workflow's name.
    pub name: Option<String>,
    /// The IANA time zone the cron expression is read in.
    pub timezone: String,
    /// Each fire's input context (the fire time is added under `fire_time`).
    pub context: Context,
    /// What happens to fires missed while no worker ran.
    pub catchup: Catchup,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        Self {
            name: None,
            timezone: "UTC".into(),
            context: Context::new(),
            catchup: Catchup::Latest,
        }
    }
}

fn checked_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.contains('\0') {
        return Err(Error::Configuration(format!(
            "schedule name must be 1 to {MAX_NAME_CHARS} characters without NUL, got {name:?}"
        )));
    }
    Ok(())
}

impl UnifiedExecutor {
    /// Stores a schedule that submits `workflow` at each fire of the cron expression; returns
    /// its name. Storing a name again updates that schedule.
    pub async fn schedule(
        &self,
        workflow: &Workflow,
        cron: &str,
        options: ScheduleOptions,
    ) -> Result<String> {
        if self.is_closed() {
            return Err(shut_down());
        }
        let name = options.name.unwrap_or_else(|| workflow.name().to_string());
        checked_name(&name)?;
        let cadence = Cadence::parse(cron, &options.timezone)?;
        self.inner.registry.learn(workflow);
        let new = NewSchedule {
            name: name.clone(),
            workflow_name: workflow.name().to_string(),
            workflow_version: workflow.version().to_string(),
            plan: ExecutionPlan::of(workflow),
            cron: cron.to_string(),
            timezone: options.timezone,
            cadence,
            context: options.context,
            catchup: options.catchup,
        };
        self.inner.db.put_schedule(new).await?;
        Ok(name)
    }

    /// Every schedule in the database, by name.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        self.inner.db.list_schedules().await
    }

    /// Pauses (`true`) or resumes (`false`) the schedule `name`, for every worker; fires that
    /// fall due while it is paused are skipped.
    pub async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<()> {
        self.inner
            .db
            .set_schedule_paused(name.to_string(), paused)
            .await
    }

    /// Deletes the schedule `name`; the executions it submitted stay.
    pub async fn unschedule(&self, name: &str) -> Result<()> {
        self.inner.db.remove_schedule(name.to_string()).await
    }
}

impl Worker {
    /// Sleeps until the next schedule is due (woken early when schedules change), makes its
    /// fires, and repeats until shutdown.
    pub(super) async fn fire_loop(self: Arc<Self>) {
        let watching_since = now();
        let mut changed = self.db().signals().subscribe(Signal::Schedules);
        let mut backoff = Backoff::default();
        while !self.is_closed() {
            changed.borrow_and_update();
            let wait = match self.fire_due(watching_since).await {
                Ok(wait) => {
                    backoff = Backoff::default();
                    wait
                }
                Err(_) => {
                    tokio::select! {
                        () = backoff.wait() => {}
                        () = self.until_closed() => return,
                    }
                    continue;
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = changed.changed() => {}
                () = self.until_closed() => return,
            }
        }
    }

    /// Makes the fires due now, if any; returns how long to sleep before looking again.
    async fn fire_due(&self, watching_since: DateTime<Utc>) -> Result<Duration> {
        let Some(at) = self.db().next_schedule_fire().await? else {
            return Ok(LONGEST_SLEEP);
        };
        if let Ok(until) = (at - Utc::now()).to_std() {
            if !until.is_zero() {
                return Ok(until.min(LONGEST_SLEEP));
            }
        }
        let pass = self
            .db()
            .fire_due_schedules(watching_since, self.lease())
            .await?;
        if pass.submitted.is_empty() {
            return Ok(HELD_ELSEWHERE);
        }
        for (execution_id, workflow_name) in &pass.submitted {
            report(
                self.observer(),
                Event::ExecutionSubmitted {
                    execution_id: *execution_id,
                    workflow_name,
                },
            );
        }
        self.db().signals().raise(Signal::Ready);
        Ok(Duration::ZERO)
    }
}

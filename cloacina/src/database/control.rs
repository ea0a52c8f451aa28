//! An execution's life from outside its tasks: submitting, cancelling, resuming and deadlines.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use std::sync::Arc;
use std::time::Duration;

use super::claims::{Claim, ClaimRequest};
use super::connection::{Conn, RunOn, CHUNK};
use super::dialect::LockedExecution;
use super::map::Expansion;
use super::rows::new_execution_rows;
use super::schema::{task_executions, workflow_executions};
use super::signals::Signal;
use super::store::{Settled, TaskState};
use super::Database;
use crate::error::{Error, Result};
use crate::model::decide::unregistered_reason;
use crate::model::{now, ExecutionPlan, ExecutionResult, ExecutionStatus, TaskStatus};

/// What `submit` did.
pub(crate) struct Submitted {
    /// The execution's id: the new one, or the earlier one with the same idempotency key.
    pub execution_id: Uuid,
    /// False when an execution with the same idempotency key already existed.
    pub created: bool,
    /// Root tasks the submitting worker claimed in the same transaction.
    pub claimed: Vec<Claim>,
}

/// What asking an execution to stop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// There is no execution with that id.
    NotFound,
    /// It had already ended.
    AlreadyEnded,
    /// It is stopping (its running tasks are being told) or has stopped.
    Cancelled,
}

impl Database {
    /// Records a new Pending execution with its plan, its root tasks ready; the submitting
    /// worker may claim some roots at once. With an idempotency key already used, returns the
    /// earlier execution instead and records nothing.
    pub(crate) async fn submit(
        &self,
        record: ExecutionResult,
        plan: Arc<ExecutionPlan>,
        idempotency_key: Option<String>,
        deadline: Option<DateTime<Utc>>,
        claim: Option<(String, ClaimRequest)>,
        lease: Duration,
    ) -> Result<Submitted> {
        self.run(move |pool| {
            let inserted = pool.write_transaction(|conn| {
                conn.submit_new(
                    &record,
                    &plan,
                    idempotency_key.clone(),
                    deadline,
                    claim.as_ref(),
                    lease,
                )
            });
            match inserted {
                // Another process inserted the same key between our check and our insert.
                Err(Error::Database(_) | Error::Refused(_)) if idempotency_key.is_some() => pool
                    .with_connection(|conn| {
                        match conn.find_by_key(idempotency_key.as_deref())? {
                            Some(existing) => Ok(Submitted {
                                execution_id: existing,
                                created: false,
                                claimed: Vec::new(),
                            }),
                            None => inserted,
                        }
                    }),
                other => other,
            }
        })
        .await
    }

    /// Asks an execution to stop: its unstarted tasks end Cancelled at once, workers running
    /// its tasks are told, and it ends Cancelled when the last of them stops. Its live child
    /// executions, at any depth, are cancelled with it.
    pub(crate) async fn cancel(&self, execution: Uuid, reason: String) -> Result<CancelOutcome> {
        self.run(move |pool| {
            let now = now().naive_utc();
            pool.write_transaction(|conn| conn.cancel_tree(execution, &reason, now))
        })
        .await
    }

    /// Ends an execution the engine cannot drive any further (a panic, a result the database
    /// refuses): its running tasks Failed with `message`, its unstarted ones Cancelled, and it
    /// Failed. False if it had already ended or is unknown.
    pub(crate) async fn fail_execution(&self, execution: Uuid, message: String) -> Result<bool> {
        let message = crate::model::storable_text(message);
        self.run(move |pool| {
            let id = execution.to_string();
            let now = now().naive_utc();
            pool.write_transaction(|conn| {
                let Some(locked) = conn.lock_execution(&id)? else {
                    return Ok(false);
                };
                if locked.status.is_terminal() {
                    return Ok(false);
                }
                diesel::update(
                    task_executions::table
                        .filter(task_executions::execution_id.eq(&id))
                        .filter(task_executions::status.eq(TaskStatus::Running.as_str())),
                )
                .set((
                    task_executions::status.eq(TaskStatus::Failed.as_str()),
                    task_executions::error.eq(Some(&message)),
                    task_executions::completed_at.eq(Some(now)),
                    task_executions::worker_id.eq(None::<String>),
                ))
                .execute_on(conn)?;
                conn.cancel_pending(&id, Some(&message), now)?;
                conn.give_back_all_units(&id)?;
                diesel::update(workflow_executions::table.find(&id))
                    .set((
                        workflow_executions::status.eq(ExecutionStatus::Failed.as_str()),
                        workflow_executions::error.eq(Some(&message)),
                        workflow_executions::completed_at.eq(Some(now)),
                    ))
                    .execute_on(conn)?;
                conn.announce(Signal::Done)?;
                if locked.child {
                    conn.wake_parent(execution)?;
                }
                Ok(true)
            })
        })
        .await
    }

    /// Runs a Failed or Cancelled execution again: its other tasks go back to Pending (history
    /// kept), Completed ones keep their outputs, and the tasks that can run now become ready.
    pub(crate) async fn resume(&self, execution: Uuid) -> Result<()> {
        self.run(move |pool| {
            let now = now().naive_utc();
            pool.write_transaction(|conn| conn.resume_execution(execution, now))
        })
        .await
    }

    /// Executions past their deadline that have not ended, with the timeout they were given.
    pub(crate) async fn expired_deadlines(&self) -> Result<Vec<(Uuid, f64)>> {
        self.run(move |pool| {
            let now = now().naive_utc();
            pool.with_connection(|conn| {
                let rows: Vec<(String, NaiveDateTime, Option<NaiveDateTime>)> =
                    workflow_executions::table
                        .filter(workflow_executions::deadline.le(now))
                        .filter(workflow_executions::status.eq_any([
                            ExecutionStatus::Pending.as_str(),
                            ExecutionStatus::Running.as_str(),
                        ]))
                        .filter(workflow_executions::cancel_reason.is_null())
                        .select((
                            workflow_executions::id,
                            workflow_executions::started_at,
                            workflow_executions::deadline,
                        ))
                        .limit(1_000)
                        .load_on(conn)?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(id, started, deadline)| {
                        let limit = (deadline? - started).num_microseconds()? as f64 / 1e6;
                        Some((Uuid::parse_str(&id).ok()?, limit))
                    })
                    .collect())
            })
        })
        .await
    }
}

/// The message of a cancelled execution that ran past its deadline.
pub(crate) use crate::model::decide::timed_out_reason;

fn not_found(execution: Uuid) -> Error {
    Error::NotFound(format!("no execution with id {execution} in this database"))
}

/// The states of a new execution's ready tasks at `positions`: Pending, never attempted.
fn new_ready_states(plan: &ExecutionPlan, positions: &[usize]) -> BTreeMap<usize, TaskState> {
    positions
        .iter()
        .map(|&p| {
            let state = TaskState {
                task_id: plan.tasks()[p].id.clone(),
                status: TaskStatus::Pending,
                attempt: 0,
                ready: true,
            };
            (p, state)
        })
        .collect()
}

impl Conn<'_> {
    /// Fills the limit keys of a new execution's `roots`; the roots (and tasks they made ready)
    /// left to run, and whether any root failed for keys it could not fill.
    fn fill_root_keys(
        &mut self,
        execution_id: Uuid,
        plan: &ExecutionPlan,
        roots: Vec<usize>,
    ) -> Result<(Vec<usize>, bool)> {
        if roots
            .iter()
            .all(|&p| plan.tasks()[p].options.limits.is_empty())
        {
            return Ok((roots, false));
        }
        let id = execution_id.to_string();
        let now = now().naive_utc();
        let mut states = new_ready_states(plan, &roots);
        let mut settled = Settled {
            ready: roots.clone(),
            ..Settled::default()
        };
        self.fill_keys_or_fail(&id, plan, &mut settled, &mut states, now)?;
        let failed = roots.iter().any(|r| !settled.ready.contains(r));
        if failed {
            self.mark_ready(&id, &settled.ready, now)?;
        }
        Ok((settled.ready, failed))
    }

    /// Records a new Pending execution with its plan, its root tasks ready, claiming some roots
    /// for `claim`'s worker; with an idempotency key already used, returns that execution.
    pub(crate) fn submit_new(
        &mut self,
        record: &ExecutionResult,
        plan: &ExecutionPlan,
        idempotency_key: Option<String>,
        deadline: Option<DateTime<Utc>>,
        claim: Option<&(String, ClaimRequest)>,
        lease: Duration,
    ) -> Result<Submitted> {
        if let Some(existing) = self.find_by_key(idempotency_key.as_deref())? {
            return Ok(Submitted {
                execution_id: existing,
                created: false,
                claimed: Vec::new(),
            });
        }
        let (execution, tasks) = new_execution_rows(record, plan, idempotency_key, deadline);
        let execution_id = record.execution_id;
        diesel::insert_into(workflow_executions::table)
            .values(&execution)
            .execute_on(self)?;
        for chunk in tasks.chunks(CHUNK) {
            diesel::insert_into(task_executions::table)
                .values(chunk)
                .execute_on(self)?;
        }
        let (nodes, roots): (Vec<usize>, Vec<usize>) = (0..plan.len())
            .filter(|&p| plan.is_root(p))
            .partition(|&p| plan.tasks()[p].options.map.is_some());
        // Roots' limit keys, filled from the input; a root whose keys cannot be filled fails
        // (and what depends on it settles) before anything is claimed.
        let (roots, keys_failed) = self.fill_root_keys(execution_id, plan, roots)?;
        let mut claimed = Vec::new();
        if let Some((worker, request)) = &claim {
            let mine: Vec<usize> = plan
                .by_priority(&roots)
                .into_iter()
                .filter(|&p| (request.registered)(&plan.tasks()[p].id))
                .take(request.limit)
                .collect();
            let states = new_ready_states(plan, &mine);
            claimed = self.claim_positions(execution_id, plan, worker, &mine, &states, now())?;
            if !claimed.is_empty() {
                self.mark_running(&claimed)?;
            }
        }
        if !nodes.is_empty() || keys_failed {
            let id = execution_id.to_string();
            let now = now().naive_utc();
            let started = self.start_nodes(&id, plan, &nodes, &mut BTreeMap::new(), now)?;
            self.mark_ready(&id, &started.ready, now)?;
            self.announce(Signal::Ready)?;
            let submitted = LockedExecution {
                status: ExecutionStatus::Pending,
                cancel_reason: None,
                waiting: false,
                child: record.parent_execution_id.is_some(),
                hooks: plan.tasks().iter().any(|t| t.options.hook.is_some()),
            };
            self.finish_from_storage(&id, &submitted, now)?;
        }
        if claimed.len() < roots.len() {
            self.announce(Signal::Ready)?;
            let live = self.live_task_ids(lease)?;
            let runs_here = |id: &str| claim.as_ref().is_some_and(|(_, r)| (r.registered)(id));
            let unrun: Vec<String> = roots
                .iter()
                .map(|&p| plan.tasks()[p].id.clone())
                .filter(|id| !live.contains(id) && !runs_here(id))
                .collect();
            if !unrun.is_empty() {
                diesel::update(workflow_executions::table.find(execution_id.to_string()))
                    .set(workflow_executions::reason.eq(Some(unregistered_reason(&unrun))))
                    .execute_on(self)?;
            }
        }
        Ok(Submitted {
            execution_id,
            created: true,
            claimed,
        })
    }

    /// Starts the nodes at `positions` whose upstream tasks need nothing more (roots of a new
    /// or resumed execution), settling the dependents of those that end at once.
    pub(crate) fn start_nodes(
        &mut self,
        execution: &str,
        plan: &ExecutionPlan,
        positions: &[usize],
        states: &mut BTreeMap<usize, TaskState>,
        now: NaiveDateTime,
    ) -> Result<Settled> {
        let mut settled = Settled::default();
        let mut ended = Vec::new();
        for &position in positions {
            match self.expand(execution, plan, position, now)? {
                Expansion::Running => settled.expanded = true,
                Expansion::Ended(status) => {
                    let state = TaskState {
                        task_id: plan.tasks()[position].id.clone(),
                        status,
                        attempt: 0,
                        ready: false,
                    };
                    states.insert(position, state);
                    ended.push(position);
                }
            }
        }
        if !ended.is_empty() {
            let after = self.settle(execution, plan, &ended, states, now)?;
            settled.ready = after.ready;
            settled.skipped = after.skipped;
            settled.expanded |= after.expanded;
        }
        Ok(settled)
    }

    /// The execution submitted with `key`, if any.
    pub(crate) fn find_by_key(&mut self, key: Option<&str>) -> Result<Option<Uuid>> {
        let Some(key) = key else { return Ok(None) };
        let id: Option<String> = workflow_executions::table
            .filter(workflow_executions::idempotency_key.eq(key))
            .select(workflow_executions::id)
            .get_result_on(self)
            .optional()?;
        Ok(id.and_then(|id| Uuid::parse_str(&id).ok()))
    }

    /// Cancels `execution` (see `Database::cancel`) and its live descendants, in this
    /// transaction: a node that would submit a child below them finds its parent cancelled.
    pub(crate) fn cancel_tree(
        &mut self,
        execution: Uuid,
        reason: &str,
        now: NaiveDateTime,
    ) -> Result<CancelOutcome> {
        let outcome = self.cancel_one(&execution.to_string(), reason, now)?;
        let mut below = vec![execution.to_string()];
        while let Some(parent) = below.pop() {
            let children: Vec<String> = workflow_executions::table
                .filter(workflow_executions::parent_execution_id.eq(&parent))
                .filter(workflow_executions::status.eq_any([
                    ExecutionStatus::Pending.as_str(),
                    ExecutionStatus::Running.as_str(),
                ]))
                .select(workflow_executions::id)
                .load_on(self)?;
            for child in children {
                self.cancel_one(&child, reason, now)?;
                below.push(child);
            }
        }
        Ok(outcome)
    }

    /// Cancels one execution: records why, cancels its unstarted tasks, tells its workers and
    /// ends it if nothing of it runs.
    fn cancel_one(&mut self, id: &str, reason: &str, now: NaiveDateTime) -> Result<CancelOutcome> {
        let Some(mut locked) = self.lock_execution(id)? else {
            return Ok(CancelOutcome::NotFound);
        };
        if locked.status.is_terminal() {
            return Ok(CancelOutcome::AlreadyEnded);
        }
        if locked.cancel_reason.is_none() {
            diesel::update(workflow_executions::table.find(id))
                .set(workflow_executions::cancel_reason.eq(Some(reason)))
                .execute_on(self)?;
            locked.cancel_reason = Some(reason.to_string());
        }
        self.cancel_pending(id, locked.cancel_reason.as_deref(), now)?;
        self.announce(Signal::Cancelled)?;
        self.finish_from_storage(id, &locked, now)?;
        Ok(CancelOutcome::Cancelled)
    }

    /// Reopens the Failed or Cancelled `execution` (see `Database::resume`) in this
    /// transaction.
    pub(crate) fn resume_execution(&mut self, execution: Uuid, now: NaiveDateTime) -> Result<()> {
        let id = execution.to_string();
        let locked = self
            .lock_execution(&id)?
            .ok_or_else(|| not_found(execution))?;
        if !matches!(
            locked.status,
            ExecutionStatus::Failed | ExecutionStatus::Cancelled
        ) {
            return Err(Error::InvalidState(format!(
                "execution {execution} is {}; only Failed or Cancelled executions can be resumed",
                locked.status
            )));
        }
        let plan: Option<String> = workflow_executions::table
            .find(&id)
            .select(workflow_executions::plan)
            .get_result_on(self)?;
        let plan = ExecutionPlan::from_json(&plan.ok_or_else(|| {
            Error::InvalidState(format!(
                "execution {execution} was recorded by a version of cloacina that did not store its plan; it cannot be resumed"
            ))
        })?)?;
        self.reopen(&id, &plan)?;
        let mut states = BTreeMap::new();
        self.load_states(&id, 0..plan.len(), &mut states)?;
        let completed: Vec<usize> = states
            .iter()
            .filter(|(_, s)| s.status == TaskStatus::Completed)
            .map(|(&p, _)| p)
            .collect();
        let mut settled = self.settle(&id, &plan, &completed, &mut states, now)?;
        let (nodes, roots): (Vec<usize>, Vec<usize>) = (0..plan.len())
            .filter(|&p| plan.is_root(p) && states[&p].status == TaskStatus::Pending)
            .partition(|&p| plan.tasks()[p].options.map.is_some());
        settled.ready.extend(roots);
        let started = self.start_nodes(&id, &plan, &nodes, &mut states, now)?;
        settled.ready.extend(started.ready);
        settled.ready.sort_unstable();
        settled.ready.dedup();
        self.fill_keys_or_fail(&id, &plan, &mut settled, &mut states, now)?;
        self.mark_ready(&id, &settled.ready, now)?;
        self.announce(Signal::Ready)?;
        let reopened = LockedExecution {
            status: ExecutionStatus::Pending,
            cancel_reason: None,
            waiting: false,
            ..locked
        };
        self.finish_from_storage(&id, &reopened, now)?;
        Ok(())
    }

    /// Puts an ended execution and its unfinished tasks back to Pending (Completed tasks, map
    /// instances that skipped themselves, and every attempt's history kept), each task waiting
    /// on all its upstream tasks again.
    pub(crate) fn reopen(&mut self, id: &str, plan: &ExecutionPlan) -> Result<()> {
        let skipped_instance = task_executions::map_index
            .ge(0)
            .and(task_executions::status.eq(TaskStatus::Skipped.as_str()));
        diesel::update(
            task_executions::table
                .filter(task_executions::execution_id.eq(id))
                .filter(task_executions::status.ne(TaskStatus::Completed.as_str()))
                .filter(diesel::dsl::not(skipped_instance)),
        )
        .set((
            task_executions::status.eq(TaskStatus::Pending.as_str()),
            task_executions::output.eq(None::<String>),
            task_executions::error.eq(None::<String>),
            task_executions::traceback.eq(None::<String>),
            task_executions::reason.eq(None::<String>),
            task_executions::completed_at.eq(None::<NaiveDateTime>),
            task_executions::ready_at.eq(None::<NaiveDateTime>),
            task_executions::worker_id.eq(None::<String>),
            task_executions::map_counts.eq(None::<String>),
            task_executions::wake_at.eq(None::<NaiveDateTime>),
            task_executions::wait_key.eq(None::<String>),
            task_executions::retries_used.eq(0),
            task_executions::snoozes.eq(0),
        ))
        .execute_on(self)?;
        // Hooks run again after the resumed execution's new outcome.
        diesel::update(
            task_executions::table
                .filter(task_executions::execution_id.eq(id))
                .filter(task_executions::hook.is_not_null()),
        )
        .set((
            task_executions::status.eq(TaskStatus::Pending.as_str()),
            task_executions::output.eq(None::<String>),
            task_executions::error.eq(None::<String>),
            task_executions::reason.eq(None::<String>),
            task_executions::completed_at.eq(None::<NaiveDateTime>),
            task_executions::ready_at.eq(None::<NaiveDateTime>),
        ))
        .execute_on(self)?;
        diesel::update(workflow_executions::table.find(id))
            .set((
                workflow_executions::hook_outcome.eq(None::<String>),
                workflow_executions::status.eq(ExecutionStatus::Pending.as_str()),
                workflow_executions::cancel_reason.eq(None::<String>),
                workflow_executions::error.eq(None::<String>),
                workflow_executions::final_context.eq(None::<String>),
                workflow_executions::completed_at.eq(None::<NaiveDateTime>),
                workflow_executions::deadline.eq(None::<NaiveDateTime>),
                workflow_executions::reason.eq(None::<String>),
            ))
            .execute_on(self)?;
        for (position, task) in plan.tasks().iter().enumerate() {
            diesel::update(
                task_executions::table
                    .filter(task_executions::execution_id.eq(id))
                    .filter(task_executions::position.eq(position as i32))
                    .filter(task_executions::map_index.eq(-1))
                    .filter(task_executions::status.ne(TaskStatus::Completed.as_str())),
            )
            .set(task_executions::waiting_on.eq(task.dependencies.len() as i32))
            .execute_on(self)?;
        }
        Ok(())
    }

    /// Marks every Pending or Waiting task (and map instance) of the execution Cancelled, and
    /// the mapped tasks waiting for their instances; not its hooks.
    pub(crate) fn cancel_pending(
        &mut self,
        id: &str,
        reason: Option<&str>,
        now: NaiveDateTime,
    ) -> Result<()> {
        let waiting_nodes = task_executions::status
            .eq(TaskStatus::Running.as_str())
            .and(task_executions::map_count.is_not_null())
            .and(task_executions::map_index.eq(-1));
        diesel::update(
            task_executions::table
                .filter(task_executions::execution_id.eq(id))
                .filter(
                    task_executions::status
                        .eq_any([TaskStatus::Pending.as_str(), TaskStatus::Waiting.as_str()])
                        .or(waiting_nodes),
                )
                // Hooks run after a cancellation too (on_failure).
                .filter(task_executions::hook.is_null()),
        )
        .set((
            task_executions::status.eq(TaskStatus::Cancelled.as_str()),
            task_executions::reason.eq(reason),
            task_executions::completed_at.eq(Some(now)),
        ))
        .execute_on(self)?;
        Ok(())
    }
}

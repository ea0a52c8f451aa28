//! The write steps of the transactions that move executions forward: storing attempts, settling
//! the tasks an ended task unblocks, claiming them, and finishing the execution.
//!
//! Each step is a method of `Conn`, written once for every backend; what must differ per
//! backend it asks of the dialect seam (`dialect.rs`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::connection::{Conn, RunOn, CHUNK};
use super::dialect::{LockedExecution, READY_TASK};
use super::map::Expansion;
use super::rows::AttemptRow;
use super::schema::{task_attempts, task_executions, workflow_executions};
use super::signals::Signal;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::decide::{execution_end, readiness, Readiness, Unsuccessful, Upstream};
use crate::model::hooks::HookKind;
use crate::model::subworkflows::child_wait_key;
use crate::model::{AttemptRecord, ExecutionPlan, ExecutionStatus, TaskStatus};

/// What a transaction knows of one task.
#[derive(Debug, Clone)]
pub(crate) struct TaskState {
    pub task_id: String,
    pub status: TaskStatus,
    pub attempt: u32,
    pub ready: bool,
}

/// A task claimed by a worker: it is Running under that worker, at `attempt`.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The execution the task belongs to.
    pub execution_id: Uuid,
    /// The task's position in the execution's plan.
    pub position: usize,
    /// The task's id.
    pub task_id: String,
    /// The attempt number this claim runs.
    pub attempt: u32,
    /// When the claim was made, the attempt's start.
    pub started_at: DateTime<Utc>,
    /// For an instance of a mapped task: its index and element.
    pub instance: Option<Instance>,
}

/// One instance of a mapped task: its index, and its element as JSON.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its index in the list.
    pub index: u32,
    /// Its element, as JSON.
    pub element: String,
}

/// Builds an execution's final context from the outputs of its completed tasks.
pub(crate) trait ContextSource: Send {
    /// Positions whose outputs this source already holds.
    fn holds(&self, position: usize) -> bool;
    /// The final context as JSON, given the stored outputs of the completed tasks it does not hold.
    fn build_json(&mut self, loaded: Vec<(usize, Context)>) -> String;
}

/// Merges the input with stored outputs, later positions winning: the final context from the
/// database alone.
pub(crate) struct StoredOutputs(pub Context);

impl ContextSource for StoredOutputs {
    fn holds(&self, _: usize) -> bool {
        false
    }

    fn build_json(&mut self, mut loaded: Vec<(usize, Context)>) -> String {
        loaded.sort_by_key(|(position, _)| *position);
        let mut context = std::mem::take(&mut self.0);
        for (_, output) in loaded {
            context.merge(&output);
        }
        context.to_json()
    }
}

/// Tasks a settle pass decided on.
#[derive(Default)]
pub(crate) struct Settled {
    /// Now ready to run, in position order.
    pub ready: Vec<usize>,
    /// Skipped because their trigger rule was not met, in the order decided.
    pub skipped: Vec<usize>,
    /// Whether mapped tasks made instances ready to claim.
    pub expanded: bool,
}

impl Conn<'_> {
    /// Stores one finished attempt of a task.
    pub(crate) fn insert_attempt(
        &mut self,
        execution: &str,
        task_id: &str,
        a: &AttemptRecord,
    ) -> Result<()> {
        self.insert_attempts(&[AttemptRow::new(execution, task_id, a)])
    }

    /// Stores finished attempts: on PostgreSQL one statement per chunk (one round trip instead
    /// of one each), on SQLite (and for one row) a statement prepared once, run per row.
    pub(crate) fn insert_attempts(&mut self, rows: &[AttemptRow]) -> Result<()> {
        if rows.len() == 1 || !self.batches_inserts() {
            // One row (every task of a chain) or SQLite: the statement prepared once.
            for row in rows {
                row.insert().execute_on(self)?;
            }
            return Ok(());
        }
        for chunk in rows.chunks(CHUNK) {
            diesel::insert_into(task_attempts::table)
                .values(chunk)
                .execute_on(self)?;
        }
        Ok(())
    }

    /// Marks the executions of new claims Running, clearing why they waited (after the claim
    /// on PostgreSQL, so a claim never waits on an execution row another transaction holds).
    pub(crate) fn mark_running(&mut self, claims: &[Claim]) -> Result<()> {
        let mut ids: Vec<String> = claims.iter().map(|c| c.execution_id.to_string()).collect();
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(CHUNK) {
            diesel::update(
                workflow_executions::table
                    .filter(workflow_executions::id.eq_any(chunk))
                    .filter(
                        workflow_executions::status
                            .eq(ExecutionStatus::Pending.as_str())
                            .or(workflow_executions::reason.is_not_null()),
                    ),
            )
            .set((
                workflow_executions::status.eq(ExecutionStatus::Running.as_str()),
                workflow_executions::reason.eq(None::<String>),
            ))
            .execute_on(self)?;
        }
        Ok(())
    }

    /// The stored state of the tasks at `positions` that are not in `states` yet.
    pub(crate) fn load_states(
        &mut self,
        execution: &str,
        positions: impl IntoIterator<Item = usize>,
        states: &mut BTreeMap<usize, TaskState>,
    ) -> Result<()> {
        let missing: Vec<i32> = positions
            .into_iter()
            .filter(|p| !states.contains_key(p))
            .map(|p| p as i32)
            .collect::<BTreeSet<i32>>()
            .into_iter()
            .collect();
        for chunk in missing.chunks(CHUNK) {
            let rows: Vec<(i32, String, String, i32, Option<NaiveDateTime>)> =
                task_executions::table
                    .filter(task_executions::execution_id.eq(execution))
                    .filter(task_executions::position.eq_any(chunk))
                    .filter(task_executions::map_index.eq(-1))
                    .select((
                        task_executions::position,
                        task_executions::task_id,
                        task_executions::status,
                        task_executions::attempt,
                        task_executions::ready_at,
                    ))
                    .load_on(self)?;
            for (position, task_id, status, attempt, ready_at) in rows {
                let status = TaskStatus::parse(&status).ok_or_else(|| {
                    Error::Database(format!("stored task status {status:?} is not valid"))
                })?;
                states.insert(
                    position as usize,
                    TaskState {
                        task_id,
                        status,
                        attempt: attempt.max(0) as u32,
                        ready: ready_at.is_some(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Counts the end of each task in `ended` on its dependents; returns the dependents it
    /// leaves with no upstream task to wait for, in position order, loaded into `states`.
    pub(crate) fn count_ends(
        &mut self,
        execution: &str,
        plan: &ExecutionPlan,
        ended: &[usize],
        states: &mut BTreeMap<usize, TaskState>,
    ) -> Result<Vec<usize>> {
        // Each dependent waits on one upstream task fewer per upstream that ended.
        let mut ended_upstream: BTreeMap<usize, i32> = BTreeMap::new();
        for &p in ended {
            for &d in plan.dependents_of(p) {
                *ended_upstream.entry(d).or_default() += 1;
            }
        }
        let counts: Vec<(usize, i32)> = ended_upstream.into_iter().collect();
        let mut unblocked: Vec<usize> = Vec::new();
        for (dependent, counted) in self.count_ended_upstream(execution, &counts)? {
            let (task_id, status, attempt, ready_at, waiting_on) = counted;
            let status = TaskStatus::parse(&status).ok_or_else(|| {
                Error::Database(format!("stored task status {status:?} is not valid"))
            })?;
            if waiting_on <= 0 && status == TaskStatus::Pending && ready_at.is_none() {
                unblocked.push(dependent);
            }
            states.insert(
                dependent,
                TaskState {
                    task_id,
                    status,
                    attempt: attempt.max(0) as u32,
                    ready: ready_at.is_some(),
                },
            );
        }
        unblocked.sort_unstable();
        Ok(unblocked)
    }

    /// Counts the end of each task in `ended` on its dependents and decides those with no
    /// upstream task left running: ready when the trigger rule is met, otherwise Skipped (which
    /// in turn counts on its own dependents).
    pub(crate) fn settle(
        &mut self,
        execution: &str,
        plan: &ExecutionPlan,
        ended: &[usize],
        states: &mut BTreeMap<usize, TaskState>,
        now: NaiveDateTime,
    ) -> Result<Settled> {
        let mut settled = Settled::default();
        let mut frontier: Vec<usize> = ended.to_vec();
        while !frontier.is_empty() {
            let unblocked = self.count_ends(execution, plan, &frontier, states)?;
            frontier.clear();
            let needed = unblocked
                .iter()
                .flat_map(|&c| std::iter::once(c).chain(plan.dependencies_of(c).iter().copied()))
                .collect::<Vec<_>>();
            self.load_states(execution, needed, states)?;
            for candidate in unblocked {
                let upstream: Vec<Upstream<'_>> = plan
                    .dependencies_of(candidate)
                    .iter()
                    .map(|d| Upstream {
                        task_id: &states[d].task_id,
                        status: states[d].status,
                    })
                    .collect();
                let rule = plan.tasks()[candidate].options.trigger_rule;
                let Readiness::Skipped(reason) = readiness(rule, &upstream) else {
                    let state = states.get_mut(&candidate).expect("loaded above");
                    if plan.tasks()[candidate].options.map.is_none() {
                        state.ready = true;
                        settled.ready.push(candidate);
                        continue;
                    }
                    match self.expand(execution, plan, candidate, now)? {
                        Expansion::Running => {
                            state.status = TaskStatus::Running;
                            settled.expanded = true;
                        }
                        Expansion::Ended(status) => {
                            state.status = status;
                            frontier.push(candidate);
                        }
                    }
                    continue;
                };
                diesel::update(
                    task_executions::table
                        .filter(task_executions::execution_id.eq(execution))
                        .filter(task_executions::position.eq(candidate as i32))
                        .filter(task_executions::map_index.eq(-1)),
                )
                .set((
                    task_executions::status.eq(TaskStatus::Skipped.as_str()),
                    task_executions::reason.eq(Some(reason)),
                    task_executions::completed_at.eq(Some(now)),
                ))
                .execute_on(self)?;
                states.get_mut(&candidate).expect("loaded above").status = TaskStatus::Skipped;
                settled.skipped.push(candidate);
                frontier.push(candidate);
            }
        }
        settled.ready.sort_unstable();
        Ok(settled)
    }

    /// Makes the tasks at `positions` ready to claim (the caller announces it).
    pub(crate) fn mark_ready(
        &mut self,
        execution: &str,
        positions: &[usize],
        now: NaiveDateTime,
    ) -> Result<()> {
        let positions: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        for chunk in positions.chunks(CHUNK) {
            diesel::update(
                task_executions::table
                    .filter(task_executions::execution_id.eq(execution))
                    .filter(task_executions::position.eq_any(chunk))
                    .filter(task_executions::map_index.eq(-1))
                    // A task already ready keeps its age (one a limit holds back, say).
                    .filter(task_executions::ready_at.is_null()),
            )
            .set(task_executions::ready_at.eq(Some(now)))
            .execute_on(self)?;
        }
        Ok(())
    }

    /// Claims for `worker` those tasks at `positions` (each known ready) still Pending whose
    /// limit keys admit them; those they do not stay ready, showing why they wait.
    pub(crate) fn claim_positions(
        &mut self,
        execution: Uuid,
        plan: &ExecutionPlan,
        worker: &str,
        positions: &[usize],
        states: &BTreeMap<usize, TaskState>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let id = execution.to_string();
        let (admitted, waiting) =
            self.admit_positions(&id, plan, positions.to_vec(), states, now)?;
        self.mark_ready(&id, &waiting, now.naive_utc())?;
        let positions = &admitted;
        let tasks: Vec<(usize, &str, u32)> = positions
            .iter()
            .map(|p| (*p, states[p].task_id.as_str(), states[p].attempt))
            .collect();
        let taken = self.take_pending(&id, worker, &tasks, now.naive_utc())?;
        // Units taken for a task another claim took first go back.
        let missed: Vec<&str> = positions
            .iter()
            .filter(|p| !plan.tasks()[**p].options.limits.is_empty() && !taken.contains(p))
            .map(|p| states[p].task_id.as_str())
            .collect();
        if !missed.is_empty() {
            self.give_back_units(&id, &missed)?;
        }
        // In the order asked (highest priority first), whatever order the database took them.
        let taken: Vec<usize> = positions
            .iter()
            .copied()
            .filter(|p| taken.contains(p))
            .collect();
        Ok(taken
            .into_iter()
            .map(|position| {
                let state = &states[&position];
                Claim {
                    execution_id: execution,
                    position,
                    task_id: state.task_id.clone(),
                    attempt: state.attempt + 1,
                    started_at: now,
                    instance: None,
                }
            })
            .collect())
    }

    /// Up to `limit` ready, unclaimed tasks of the execution, oldest first, added to `states`.
    pub(crate) fn ready_tasks(
        &mut self,
        execution: &str,
        limit: usize,
        states: &mut BTreeMap<usize, TaskState>,
    ) -> Result<Vec<usize>> {
        let rows: Vec<(i32, String, i32)> = task_executions::table
            .filter(task_executions::execution_id.eq(execution))
            .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(READY_TASK))
            .order((task_executions::priority.desc(), task_executions::ready_at))
            .limit(limit as i64)
            .select((
                task_executions::position,
                task_executions::task_id,
                task_executions::attempt,
            ))
            .load_on(self)?;
        Ok(rows
            .into_iter()
            .map(|(position, task_id, attempt)| {
                let position = position as usize;
                states.insert(
                    position,
                    TaskState {
                        task_id,
                        status: TaskStatus::Pending,
                        attempt: attempt.max(0) as u32,
                        ready: true,
                    },
                );
                position
            })
            .collect())
    }

    /// The execution's final context: `context` completed with the stored outputs of the
    /// completed tasks it does not hold.
    pub(crate) fn final_context_json(
        &mut self,
        execution: &str,
        context: &mut dyn ContextSource,
    ) -> Result<String> {
        let completed: Vec<i32> = task_executions::table
            .filter(task_executions::execution_id.eq(execution))
            .filter(task_executions::status.eq(TaskStatus::Completed.as_str()))
            .filter(task_executions::map_index.eq(-1))
            .select(task_executions::position)
            .load_on(self)?;
        let missing: Vec<i32> = completed
            .into_iter()
            .filter(|&p| !context.holds(p as usize))
            .collect();
        let mut loaded = Vec::with_capacity(missing.len());
        for chunk in missing.chunks(CHUNK) {
            let rows: Vec<(i32, Option<String>)> = task_executions::table
                .filter(task_executions::execution_id.eq(execution))
                .filter(task_executions::position.eq_any(chunk))
                .filter(task_executions::map_index.eq(-1))
                .select((task_executions::position, task_executions::output))
                .load_on(self)?;
            for (position, output) in rows {
                let output = match output {
                    Some(json) => Context::from_json(&json)?,
                    None => Context::new(),
                };
                loaded.push((position as usize, output));
            }
        }
        Ok(context.build_json(loaded))
    }

    /// Makes the Waiting tasks `waking` names Pending, ready at `clock`, announcing them; how
    /// many it woke.
    pub(crate) fn wake(&mut self, waking: Waking<'_>, clock: NaiveDateTime) -> Result<usize> {
        let waiting =
            task_executions::table.filter(task_executions::status.eq(TaskStatus::Waiting.as_str()));
        let woken = match waking {
            Waking::Due => diesel::update(waiting.filter(task_executions::wake_at.le(clock)))
                .set(ready_now(clock))
                .execute_on(self)?,
            Waking::Key(key) => diesel::update(waiting.filter(task_executions::wait_key.eq(key)))
                .set(ready_now(clock))
                .execute_on(self)?,
        };
        if woken > 0 {
            self.announce(Signal::Ready)?;
        }
        Ok(woken)
    }

    /// Records the execution's end if none of its tasks is Pending, Running or Waiting any more.
    pub(crate) fn finish_if_done(
        &mut self,
        execution: &str,
        locked: &LockedExecution,
        context: &mut dyn ContextSource,
        now: NaiveDateTime,
    ) -> Result<Option<ExecutionStatus>> {
        if locked.status.is_terminal() {
            return Ok(None);
        }
        // Whether any is left, not how many: a wide fan-out has thousands Pending mid-run.
        // Answered from the (execution_id, status) index alone, unless hooks must be told apart
        // (S2 ran 40 % slower on SQLite with the hook test in every commit's query).
        let open_tasks = task_executions::table
            .filter(task_executions::execution_id.eq(execution))
            .filter(task_executions::status.eq_any(OPEN));
        let open: bool = match locked.hooks {
            true => diesel::select(diesel::dsl::exists(
                open_tasks.filter(task_executions::hook.is_null()),
            ))
            .get_result_on(self)?,
            false => diesel::select(diesel::dsl::exists(open_tasks)).get_result_on(self)?,
        };
        if open {
            return Ok(None);
        }
        let unsuccessful: Vec<(String, String, Option<String>, Option<String>)> =
            task_executions::table
                .filter(task_executions::execution_id.eq(execution))
                .filter(
                    task_executions::status
                        .eq_any([TaskStatus::Failed.as_str(), TaskStatus::Cancelled.as_str()]),
                )
                .filter(task_executions::map_index.eq(-1))
                .filter(task_executions::hook.is_null())
                .order(task_executions::position)
                .select((
                    task_executions::task_id,
                    task_executions::status,
                    task_executions::error,
                    task_executions::reason,
                ))
                .load_on(self)?;
        let unsuccessful: Vec<Unsuccessful> = unsuccessful
            .into_iter()
            .map(|(task_id, status, error, reason)| Unsuccessful {
                task_id,
                status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Failed),
                error,
                reason,
            })
            .collect();
        let (status, error) = execution_end(locked.cancel_reason.as_deref(), &unsuccessful);
        let (status, error) = match locked.hooks {
            true => match self.hooks_step(execution, status, error, context, now)? {
                HookStep::Waiting => return Ok(None),
                HookStep::Finish(status, error) => (status, error),
            },
            false => (status, error),
        };
        let final_context = self.final_context_json(execution, context)?;
        self.give_back_all_units(execution)?;
        diesel::update(workflow_executions::table.find(execution))
            .set((
                workflow_executions::status.eq(status.as_str()),
                workflow_executions::final_context.eq(Some(final_context)),
                workflow_executions::error.eq(error),
                workflow_executions::reason.eq(None::<String>),
                workflow_executions::completed_at.eq(Some(now)),
            ))
            .execute_on(self)?;
        self.announce(Signal::Done)?;
        if locked.child {
            let id = Uuid::parse_str(execution).map_err(|_| {
                Error::Database(format!("execution id {execution:?} is not a UUID"))
            })?;
            self.wake_parent(id)?;
        }
        Ok(Some(status))
    }

    /// With hooks, once the execution's other tasks have ended as `outcome` (with `error`):
    /// the first time, records the outcome and its final context, makes the hooks that run
    /// after it ready and skips the others; then, whether the execution waits for its hooks or
    /// finishes, with the outcome recorded first (a hook never changes it).
    fn hooks_step(
        &mut self,
        execution: &str,
        outcome: ExecutionStatus,
        error: Option<String>,
        context: &mut dyn ContextSource,
        now: NaiveDateTime,
    ) -> Result<HookStep> {
        let hooks: Vec<(String, String, String)> = task_executions::table
            .filter(task_executions::execution_id.eq(execution))
            .filter(task_executions::hook.is_not_null())
            .select((
                task_executions::task_id,
                task_executions::hook.assume_not_null(),
                task_executions::status,
            ))
            .load_on(self)?;
        let decided: (Option<String>, Option<String>) = workflow_executions::table
            .find(execution)
            .select((
                workflow_executions::hook_outcome,
                workflow_executions::error,
            ))
            .get_result_on(self)?;
        if let (Some(decided), stored_error) = decided {
            if hooks
                .iter()
                .any(|(_, _, status)| OPEN.contains(&status.as_str()))
            {
                return Ok(HookStep::Waiting);
            }
            let decided = ExecutionStatus::parse(&decided).unwrap_or(outcome);
            return Ok(HookStep::Finish(decided, stored_error));
        }
        let final_context = self.final_context_json(execution, context)?;
        diesel::update(workflow_executions::table.find(execution))
            .set((
                workflow_executions::hook_outcome.eq(Some(outcome.as_str())),
                workflow_executions::error.eq(&error),
                workflow_executions::final_context.eq(Some(final_context)),
                // Why it waited named its other tasks; only the hooks are left to run.
                workflow_executions::reason.eq(None::<String>),
            ))
            .execute_on(self)?;
        let mut runs = false;
        for (task_id, hook, _) in &hooks {
            let row = task_executions::table
                .filter(task_executions::execution_id.eq(execution))
                .filter(task_executions::task_id.eq(task_id))
                .filter(task_executions::status.eq(TaskStatus::Pending.as_str()));
            let kind = HookKind::parse(hook).unwrap_or(HookKind::Failure);
            if kind.runs_after(outcome) {
                runs |= diesel::update(row)
                    .set(task_executions::ready_at.eq(Some(now)))
                    .execute_on(self)?
                    > 0;
            } else {
                diesel::update(row)
                    .set((
                        task_executions::status.eq(TaskStatus::Skipped.as_str()),
                        task_executions::reason.eq(Some(kind.skip_reason(outcome))),
                        task_executions::completed_at.eq(Some(now)),
                    ))
                    .execute_on(self)?;
            }
        }
        if runs {
            self.announce(Signal::Ready)?;
            return Ok(HookStep::Waiting);
        }
        Ok(HookStep::Finish(outcome, error))
    }

    /// Makes the sub-workflow task waiting for `child` (an execution that just ended) ready,
    /// so it sees the child's end.
    pub(crate) fn wake_parent(&mut self, child: Uuid) -> Result<usize> {
        let clock = self.lease_clock()?;
        self.wake(Waking::Key(&child_wait_key(child)), clock)
    }

    /// Ends the execution if nothing is left to run, its final context read from storage.
    pub(crate) fn finish_from_storage(
        &mut self,
        id: &str,
        locked: &LockedExecution,
        now: NaiveDateTime,
    ) -> Result<Option<ExecutionStatus>> {
        let input: String = workflow_executions::table
            .find(id)
            .select(workflow_executions::input_context)
            .get_result_on(self)?;
        let mut stored = StoredOutputs(Context::from_json(&input)?);
        self.finish_if_done(id, locked, &mut stored, now)
    }
}

/// Which waiting tasks to wake.
pub(crate) enum Waking<'a> {
    /// Those whose wake time has come.
    Due,
    /// Those waiting for an event with this key.
    Key(&'a str),
}

/// The assignments of [`ready_now`].
type ReadyNow = (
    diesel::dsl::Eq<task_executions::status, &'static str>,
    diesel::dsl::Eq<task_executions::ready_at, Option<NaiveDateTime>>,
    diesel::dsl::Eq<task_executions::reason, Option<String>>,
);

/// The columns that make a Waiting task Pending and ready at `clock`.
fn ready_now(clock: NaiveDateTime) -> ReadyNow {
    (
        task_executions::status.eq(TaskStatus::Pending.as_str()),
        task_executions::ready_at.eq(Some(clock)),
        task_executions::reason.eq(None::<String>),
    )
}

/// The statuses of a task that has not ended.
const OPEN: [&str; 3] = ["Pending", "Running", "Waiting"];

/// What the hooks of an execution whose other tasks have ended ask for.
enum HookStep {
    /// Its hooks run: it ends once they have.
    Waiting,
    /// It ends now, with this outcome and error.
    Finish(ExecutionStatus, Option<String>),
}

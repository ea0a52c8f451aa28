//! Claiming ready tasks and committing the tasks a worker finished.
//!
//! A claim makes a ready task Running under one worker, atomically: `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, an immediate transaction on SQLite. Every write a worker makes about a claimed
//! task is fenced by its worker id and the task's attempt number: each claim and each retry
//! stores a higher number and giving a claim back never lowers it, so a stale attempt (of a
//! worker declared dead, or of this worker before it claimed the task again) writes nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::connection::{Conn, RunOn};
use super::dialect::{TakenRow, TaskEnd};
use super::rows::AttemptRow;
use super::schema::task_executions;
use super::signals::{take_ready_announced, Signal};
pub use super::store::{Claim, Instance};
use super::store::{ContextSource, TaskState};
use super::Database;
use crate::error::{Error, Result};
use crate::model::map::instance_key;
use crate::model::{now, AttemptRecord, ExecutionPlan, ExecutionStatus, TaskStatus};

/// A claimed task that ended, ready to store: its final status with what goes with it, the
/// fence of its claim, and its last attempt (earlier ones were stored as they failed).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EndedTask {
    /// The task's place in its execution's plan.
    pub position: usize,
    /// The task's attempt number as its runner last stored it: the fencing token of its claim.
    pub fence: u32,
    /// The task's final status.
    pub status: TaskStatus,
    /// The number of the last attempt, and when it started.
    pub attempt: u32,
    /// When the last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// The output's JSON, when the task completed.
    pub output_json: Option<String>,
    /// The failure's message, when it failed.
    pub error: Option<String>,
    /// The failure's traceback, when the task's language gave one.
    pub traceback: Option<String>,
    /// Why it was skipped or cancelled.
    pub reason: Option<String>,
    /// When it ended.
    pub completed_at: DateTime<Utc>,
    /// The last attempt, not stored yet; None when the task was cancelled between attempts.
    pub last_attempt: Option<AttemptRecord>,
    /// The instance's index, when this is an instance of a mapped task.
    pub map_index: Option<u32>,
}

impl EndedTask {
    /// An end with no output, error, reason or attempt record; struct update syntax adds those.
    pub(crate) fn new(
        position: usize,
        fence: u32,
        status: TaskStatus,
        attempt: u32,
        started_at: DateTime<Utc>,
        completed_at: DateTime<Utc>,
    ) -> Self {
        Self {
            position,
            fence,
            status,
            attempt,
            started_at: Some(started_at),
            output_json: None,
            error: None,
            traceback: None,
            reason: None,
            completed_at,
            last_attempt: None,
            map_index: None,
        }
    }
}

/// Whether this worker runs a task id; shared with the transaction that claims.
pub(crate) type Registered = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The final context of an execution as this worker knows it, shared with its commits.
pub(crate) type SharedContext = Arc<Mutex<dyn ContextSource>>;

/// What committing a batch of ended tasks did.
#[derive(Default)]
pub(crate) struct Committed {
    /// Tasks the batch unblocked that this worker claimed, to start at once.
    pub claimed: Vec<Claim>,
    /// Tasks skipped by their trigger rule, in the order decided.
    pub skipped: Vec<usize>,
    /// Ended tasks (position, attempt) whose claim had been given back: their results were dropped.
    pub lost: Vec<(usize, u32)>,
    /// The execution's final status, if the batch ended it.
    pub finished: Option<ExecutionStatus>,
    /// Set when the execution has been asked to stop.
    pub cancel_reason: Option<String>,
    /// Whether the batch made tasks ready that this worker did not claim.
    pub made_ready: bool,
}

/// The claim a committing worker makes on the tasks its batch unblocks.
pub(crate) struct ClaimRequest {
    /// Most tasks to claim: the free slots the worker reserved.
    pub limit: usize,
    /// Further ready tasks to claim ahead of free slots, when the batch leaves slots free.
    pub ahead: usize,
    /// The same for map instances (their pace is their own: a fast upstream task says nothing
    /// of how long its instances take).
    pub instances_ahead: usize,
    /// Which task ids the worker runs.
    pub registered: Registered,
}

/// One batch of ended tasks of one execution, to commit: what `Database::commit_ended` takes.
pub(crate) struct CommitRequest {
    /// The execution the tasks belong to.
    pub execution: Uuid,
    /// Its plan.
    pub plan: Arc<ExecutionPlan>,
    /// The worker that ran them, whose claims fence the commit.
    pub worker: String,
    /// The tasks that ended.
    pub ended: Arc<Vec<EndedTask>>,
    /// What the worker claims of the tasks they unblock.
    pub claim: ClaimRequest,
    /// The execution's final context as the worker knows it.
    pub context: SharedContext,
}

impl Database {
    /// Stores a failed attempt that will be retried; false if the claim fenced by `worker` and
    /// `fence` (the attempt number last stored for it) was given back meanwhile.
    pub(crate) async fn record_retry(
        &self,
        execution: Uuid,
        worker: String,
        fence: u32,
        task_id: String,
        failed: AttemptRecord,
    ) -> Result<bool> {
        self.run(move |pool| {
            let id = execution.to_string();
            pool.write_transaction(|conn| {
                let owned = diesel::update(
                    task_executions::table
                        .find((&id, &task_id))
                        .filter(fenced(&worker, fence)),
                )
                .set((
                    task_executions::attempt.eq(failed.attempt as i32 + 1),
                    task_executions::retries_used.eq(task_executions::retries_used + 1),
                ))
                .execute_on(conn)?;
                if owned == 1 {
                    conn.insert_attempt(&id, &task_id, &failed)?;
                }
                Ok(owned == 1)
            })
        })
        .await
    }

    /// Stores when a retry started, fenced by `worker` and `fence` as in `record_retry`.
    pub(crate) async fn record_retry_start(
        &self,
        execution: Uuid,
        worker: String,
        fence: u32,
        task_id: String,
        started_at: DateTime<Utc>,
    ) -> Result<()> {
        self.run(move |pool| {
            let id = execution.to_string();
            pool.with_connection(|conn| {
                diesel::update(
                    task_executions::table
                        .find((&id, &task_id))
                        .filter(fenced(&worker, fence)),
                )
                .set(task_executions::started_at.eq(Some(started_at.naive_utc())))
                .execute_on(conn)?;
                Ok(())
            })
        })
        .await
    }

    /// Claims up to `limit` ready tasks of any execution whose ids `worker` runs, oldest first.
    pub(crate) async fn claim_ready(
        &self,
        worker: String,
        task_ids: Vec<String>,
        limit: usize,
    ) -> Result<Vec<Claim>> {
        if limit == 0 || task_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.run(move |pool| {
            let started_at = now();
            pool.take_ready(&worker, &task_ids, limit, started_at, |conn, rows| {
                let claims = to_claims(rows, started_at)?;
                if !claims.is_empty() {
                    conn.mark_running(&claims)?;
                }
                Ok(claims)
            })
        })
        .await
    }
}

/// Commits one batch inside the transaction `conn` is in; see `Database::commit_ended`.
pub(crate) fn commit_batch(conn: &mut Conn<'_>, request: &CommitRequest) -> Result<Committed> {
    let (execution, plan, worker) = (&request.execution, &request.plan, &request.worker);
    let (ended, claim, context) = (&request.ended, &request.claim, &request.context);
    let id = execution.to_string();
    let batch = Batch { plan, claim };
    let now_utc = now();
    let now = now_utc.naive_utc();
    let locked = conn.lock_execution(&id)?.ok_or_else(|| gone(*execution))?;
    take_ready_announced();
    let mut committed = Committed {
        cancel_reason: locked.cancel_reason.clone(),
        ..Committed::default()
    };
    let mut states: BTreeMap<usize, TaskState> = BTreeMap::new();
    let mut settled_from = Vec::new();
    let mut attempts = Vec::with_capacity(ended.len());
    let ends: Vec<TaskEnd<'_>> = ended.iter().map(|task| batch.end_of(task)).collect();
    // Fenced: a stale claim (its worker presumed dead) no longer owns the task.
    let stored = conn.store_ends(&id, worker, &ends)?;
    // Instances ended, per node.
    let mut instances_ended: BTreeMap<usize, i32> = BTreeMap::new();
    for ((task, stored), end) in ended.iter().zip(stored.iter().copied()).zip(&ends) {
        if !stored {
            committed.lost.push((task.position, task.attempt));
            continue;
        }
        if let Some(attempt) = &task.last_attempt {
            attempts.push(AttemptRow::new(&id, &end.task_id, attempt));
        }
        if task.map_index.is_some() {
            *instances_ended.entry(task.position).or_default() += 1;
            continue;
        }
        states.insert(task.position, batch.state_of(task));
        settled_from.push(task.position);
    }
    conn.insert_attempts(&attempts)?;
    // Units of limits the ended attempts held come back (a lost claim's came back when it was
    // given back); waiting tasks may start.
    let held: Vec<&str> = ended
        .iter()
        .zip(&ends)
        .zip(&stored)
        .filter(|((task, _), stored)| {
            **stored && !plan.tasks()[task.position].options.limits.is_empty()
        })
        .map(|((_, end), _)| end.task_id.as_ref())
        .collect();
    let units_freed = !held.is_empty() && conn.give_back_units(&id, &held)? > 0;
    for (node, status) in conn.count_instance_ends(&id, plan, &instances_ended, now)? {
        let state = TaskState {
            task_id: batch.task_id(node).to_string(),
            status,
            attempt: 0,
            ready: false,
        };
        states.insert(node, state);
        settled_from.push(node);
    }
    let mut open = false;
    let claims_more = !settled_from.is_empty() || !instances_ended.is_empty();
    if locked.cancel_reason.is_none() && claims_more {
        let mut settled = conn.settle(&id, plan, &settled_from, &mut states, now)?;
        conn.fill_keys_or_fail(&id, plan, &mut settled, &mut states, now)?;
        let (mut mine, others) = batch.split_ready(&plan.by_priority(&settled.ready));
        conn.mark_ready(&id, &others, now)?;
        // Free slots left take other ready tasks of this execution (a fan-out's), and then
        // those claimed ahead; a chain's next task fills its slot and looks no further.
        if mine.len() < claim.limit {
            let wanted = claim.limit + claim.ahead - mine.len();
            let waiting = conn.ready_tasks(&id, wanted + settled.ready.len(), &mut states)?;
            mine.extend(batch.more_to_claim(waiting, &mine, wanted));
        }
        let mine = plan.by_priority(&mine);
        committed.claimed =
            conn.claim_positions(*execution, plan, worker, &mine, &states, now_utc)?;
        let free = (claim.limit + claim.instances_ahead).saturating_sub(committed.claimed.len());
        let nodes = batch.nodes_run_here();
        if free > 0 && !nodes.is_empty() {
            let rows = conn.take_ready_rows(worker, &nodes, free, now_utc, Some(&id))?;
            committed.claimed.extend(to_claims(rows, now_utc)?);
        }
        if !committed.claimed.is_empty()
            && (locked.status == ExecutionStatus::Pending || locked.waiting)
        {
            conn.mark_running(&committed.claimed)?;
        }
        committed.made_ready =
            any_unclaimed(&settled.ready, &committed.claimed) || settled.expanded;
        if committed.made_ready || units_freed {
            conn.announce(Signal::Ready)?;
        }
        committed.skipped = settled.skipped;
        open = !committed.claimed.is_empty() || committed.made_ready;
    }
    if !open {
        let mut context = context.lock().unwrap_or_else(|p| p.into_inner());
        committed.finished = conn.finish_if_done(&id, &locked, &mut *context, now)?;
    }
    // Ending the execution can make tasks ready too: its hooks, or a parent's task waiting
    // for it.
    committed.made_ready |= take_ready_announced();
    Ok(committed)
}

fn gone(execution: Uuid) -> Error {
    Error::Database(format!(
        "execution {execution} is no longer in the database"
    ))
}

/// The claim of `worker` whose attempt number is `fence`, if it is still the task's: the
/// condition of every write about a claimed task (`Conn::store_ends` spells it in its SQL).
pub(super) type Fenced<'a> = diesel::dsl::And<
    diesel::dsl::And<
        diesel::dsl::Eq<task_executions::worker_id, &'a str>,
        diesel::dsl::Eq<task_executions::attempt, i32>,
    >,
    diesel::dsl::Eq<task_executions::status, &'static str>,
>;

/// See [`Fenced`].
pub(super) fn fenced(worker: &str, fence: u32) -> Fenced<'_> {
    task_executions::worker_id
        .eq(worker)
        .and(task_executions::attempt.eq(fence as i32))
        .and(task_executions::status.eq(TaskStatus::Running.as_str()))
}

/// One batch of ended tasks being committed: its plan, and the claim its worker makes on what
/// it unblocks.
struct Batch<'a> {
    plan: &'a ExecutionPlan,
    claim: &'a ClaimRequest,
}

impl Batch<'_> {
    /// The id of the task at `position`.
    fn task_id(&self, position: usize) -> &str {
        &self.plan.tasks()[position].id
    }

    /// Whether the committing worker runs the task at `position`.
    fn runs(&self, position: usize) -> bool {
        (self.claim.registered)(self.task_id(position))
    }

    /// What the transaction knows of `task` once its end is stored.
    fn state_of(&self, task: &EndedTask) -> TaskState {
        TaskState {
            task_id: self.task_id(task.position).to_string(),
            status: task.status,
            attempt: task.attempt,
            ready: false,
        }
    }

    /// `task`'s end as the fenced statement stores it.
    fn end_of<'q>(&'q self, task: &'q EndedTask) -> TaskEnd<'q> {
        let task_id = self.task_id(task.position);
        TaskEnd {
            task_id: match task.map_index {
                Some(index) => instance_key(task_id, index).into(),
                None => task_id.into(),
            },
            status: task.status.as_str(),
            attempt: task.attempt as i32,
            started_at: task.started_at.map(|t| t.naive_utc()),
            output: task.output_json.as_deref(),
            error: task.error.as_deref(),
            traceback: task.traceback.as_deref(),
            reason: task.reason.as_deref(),
            completed_at: task.completed_at.naive_utc(),
            fence: task.fence as i32,
        }
    }

    /// The ids of the plan's mapped tasks the committing worker runs.
    fn nodes_run_here(&self) -> Vec<String> {
        self.plan
            .tasks()
            .iter()
            .filter(|t| t.options.map.is_some() && self.runs_id(&t.id))
            .map(|t| t.id.clone())
            .collect()
    }

    /// Whether the committing worker runs the task `id`.
    fn runs_id(&self, id: &str) -> bool {
        (self.claim.registered)(id)
    }

    /// Splits newly `ready` tasks into those the worker claims (that it runs, up to its limit)
    /// and those left ready for any worker.
    fn split_ready(&self, ready: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let mine: Vec<usize> = ready
            .iter()
            .copied()
            .filter(|&p| self.runs(p))
            .take(self.claim.limit + self.claim.ahead)
            .collect();
        let others = ready
            .iter()
            .copied()
            .filter(|p| !mine.contains(p))
            .collect();
        (mine, others)
    }

    /// Up to `wanted` of the execution's `waiting` ready tasks that the worker runs and does not
    /// claim already.
    fn more_to_claim(&self, waiting: Vec<usize>, mine: &[usize], wanted: usize) -> Vec<usize> {
        waiting
            .into_iter()
            .filter(|p| !mine.contains(p) && self.runs(*p))
            .take(wanted)
            .collect()
    }
}

/// Whether any of the tasks at `ready` is not among `claimed`.
fn any_unclaimed(ready: &[usize], claimed: &[Claim]) -> bool {
    ready
        .iter()
        .any(|p| !claimed.iter().any(|c| c.position == *p))
}

/// Claims as taken rows describe them, started at `started_at`.
fn to_claims(rows: Vec<TakenRow>, started_at: DateTime<Utc>) -> Result<Vec<Claim>> {
    rows.into_iter()
        .map(|row| {
            let execution_id = &row.execution_id;
            let instance = match (row.map_index, row.map_element) {
                (index, Some(element)) if index >= 0 => Some(Instance {
                    index: index as u32,
                    element,
                }),
                _ => None,
            };
            Ok(Claim {
                execution_id: Uuid::parse_str(execution_id).map_err(|_| {
                    Error::Database(format!("stored execution id {execution_id:?} is not valid"))
                })?,
                position: row.position.max(0) as usize,
                // An instance runs its node's function.
                task_id: row
                    .map_task
                    .filter(|_| instance.is_some())
                    .unwrap_or(row.task_id),
                attempt: row.attempt.max(0) as u32,
                started_at,
                instance,
            })
        })
        .collect()
}

#[cfg(all(test, feature = "sqlite"))]
mod tests;

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

use super::cached::{Bind, Cached};
use super::dialect::Dialect;
#[cfg(feature = "sqlite")]
use super::literal::Pending;
use super::queries::AttemptRow;
use super::schema::task_executions;
use super::signals::Signal;
pub use super::store::Claim;
use super::store::{ContextSource, Store, TaskState};
use super::{write_transaction, Database, Pool};
use crate::error::{Error, Result};
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
        }
    }
}

/// The queue every task is in until named queues arrive.
pub(crate) const DEFAULT_QUEUE: &str = "default";

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
    /// Which task ids the worker runs.
    pub registered: Registered,
}

impl Database {
    /// Commits ended tasks of one execution in one transaction: their outcomes, the tasks they
    /// unblock (claimed by `worker` up to `claim.limit`, the rest made ready for any worker),
    /// and the execution's end when nothing is left to run.
    pub(crate) async fn commit_ended(
        &self,
        execution: Uuid,
        plan: Arc<ExecutionPlan>,
        worker: String,
        ended: Arc<Vec<EndedTask>>,
        claim: ClaimRequest,
        context: SharedContext,
    ) -> Result<Committed> {
        self.run(move |pool| {
            let id = execution.to_string();
            let batch = Batch {
                id: &id,
                plan: &plan,
                worker: &worker,
                claim: &claim,
            };
            let now_utc = now();
            let now = now_utc.naive_utc();
            write_transaction!(pool, |conn| {
                let locked = conn.lock_execution(&id)?.ok_or_else(|| gone(execution))?;
                let mut committed = Committed {
                    cancel_reason: locked.cancel_reason.clone(),
                    ..Committed::default()
                };
                let mut states: BTreeMap<usize, TaskState> = BTreeMap::new();
                let mut settled_from = Vec::new();
                let mut attempts = Vec::with_capacity(ended.len());
                for task in ended.iter() {
                    let task_id = batch.task_id(task.position);
                    // Fenced: a stale claim (its worker presumed dead) no longer owns the task.
                    if batch.fenced_end(task).execute(conn)? == 0 {
                        committed.lost.push((task.position, task.attempt));
                        continue;
                    }
                    if let Some(attempt) = &task.last_attempt {
                        attempts.push(AttemptRow::new(&id, task_id, attempt));
                    }
                    states.insert(task.position, batch.state_of(task));
                    settled_from.push(task.position);
                }
                conn.insert_attempts(&attempts)?;
                let mut open = false;
                if locked.cancel_reason.is_none() && !settled_from.is_empty() {
                    let settled = conn.settle(&id, &plan, &settled_from, &mut states, now)?;
                    let (mut mine, others) = batch.split_ready(&settled.ready);
                    conn.mark_ready(&id, &others, now)?;
                    // Slots left over take other ready tasks of this execution (a fan-out's).
                    if mine.len() < claim.limit {
                        let wanted = claim.limit - mine.len();
                        let waiting =
                            conn.ready_tasks(&id, wanted + settled.ready.len(), &mut states)?;
                        mine.extend(batch.more_to_claim(waiting, &mine, wanted));
                    }
                    committed.claimed =
                        conn.claim_positions(execution, &worker, &mine, &states, now_utc)?;
                    if !committed.claimed.is_empty()
                        && (locked.status == ExecutionStatus::Pending || locked.waiting)
                    {
                        conn.mark_running(&committed.claimed)?;
                    }
                    committed.made_ready = any_unclaimed(&settled.ready, &committed.claimed);
                    if committed.made_ready {
                        conn.announce(Signal::Ready)?;
                    }
                    committed.skipped = settled.skipped;
                    open = !committed.claimed.is_empty() || committed.made_ready;
                }
                if !open {
                    let mut context = context.lock().unwrap_or_else(|p| p.into_inner());
                    committed.finished = conn.finish_if_done(&id, &locked, &mut *context, now)?;
                }
                Ok(committed)
            })
        })
        .await
    }

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
            write_transaction!(pool, |conn| {
                let owned = diesel::update(
                    task_executions::table
                        .find((&id, &task_id))
                        .filter(fenced(&worker, fence)),
                )
                .set(task_executions::attempt.eq(failed.attempt as i32 + 1))
                .execute(conn)?;
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
            super::with_connection!(pool, |conn| {
                diesel::update(
                    task_executions::table
                        .find((&id, &task_id))
                        .filter(fenced(&worker, fence)),
                )
                .set(task_executions::started_at.eq(Some(started_at.naive_utc())))
                .execute(conn)?;
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
        self.run(move |pool| match pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => {
                let mut conn = pool.get()?;
                sqlite_claim(&mut conn, || pool.write_turn(), &worker, &task_ids, limit)
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                let mut conn = pool.get()?;
                postgres_claim(&mut conn, &worker, &task_ids, limit)
            }
        })
        .await
    }
}

fn gone(execution: Uuid) -> Error {
    Error::Database(format!(
        "execution {execution} is no longer in the database"
    ))
}

/// The claim of `worker` whose attempt number is `fence`, if it is still the task's: the
/// condition of every write about a claimed task (`Batch::fenced_end` spells it in its SQL).
type Fenced<'a> = diesel::dsl::And<
    diesel::dsl::And<
        diesel::dsl::Eq<task_executions::worker_id, &'a str>,
        diesel::dsl::Eq<task_executions::attempt, i32>,
    >,
    diesel::dsl::Eq<task_executions::status, &'static str>,
>;

/// See [`Fenced`].
fn fenced(worker: &str, fence: u32) -> Fenced<'_> {
    task_executions::worker_id
        .eq(worker)
        .and(task_executions::attempt.eq(fence as i32))
        .and(task_executions::status.eq(TaskStatus::Running.as_str()))
}

/// One batch of ended tasks being committed: its execution, plan, worker, and the claim its
/// worker makes on what it unblocks. (The transaction's steps stay in `commit_ended`, which
/// holds the connection of each backend.)
struct Batch<'a> {
    id: &'a str,
    plan: &'a ExecutionPlan,
    worker: &'a str,
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

    /// The statement storing `task`'s end, changing nothing unless the claim fenced by its
    /// worker and attempt number is still the task's.
    fn fenced_end<'q>(&'q self, task: &'q EndedTask) -> Cached<'q> {
        Cached::new(
            &[
                "UPDATE task_executions SET status = ",
                ", attempt = ",
                ", started_at = ",
                ", output = ",
                ", error = ",
                ", traceback = ",
                ", reason = ",
                ", completed_at = ",
                ", worker_id = NULL WHERE execution_id = ",
                " AND task_id = ",
                " AND worker_id = ",
                " AND attempt = ",
                " AND status = 'Running'",
            ],
            vec![
                Bind::Text(Some(task.status.as_str())),
                Bind::Int(task.attempt as i32),
                Bind::Time(task.started_at.map(|t| t.naive_utc())),
                Bind::Text(task.output_json.as_deref()),
                Bind::Text(task.error.as_deref()),
                Bind::Text(task.traceback.as_deref()),
                Bind::Text(task.reason.as_deref()),
                Bind::Time(Some(task.completed_at.naive_utc())),
                Bind::Text(Some(self.id)),
                Bind::Text(Some(self.task_id(task.position))),
                Bind::Text(Some(self.worker)),
                Bind::Int(task.fence as i32),
            ],
        )
    }

    /// Splits newly `ready` tasks into those the worker claims (that it runs, up to its limit)
    /// and those left ready for any worker.
    fn split_ready(&self, ready: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let mine: Vec<usize> = ready
            .iter()
            .copied()
            .filter(|&p| self.runs(p))
            .take(self.claim.limit)
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

/// A ready task row as the claim queries read it.
#[derive(QueryableByName)]
struct ClaimedRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    execution_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    task_id: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    position: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempt: i32,
}

fn to_claims(rows: Vec<ClaimedRow>, started_at: DateTime<Utc>) -> Result<Vec<Claim>> {
    rows.into_iter()
        .map(|row| {
            Ok(Claim {
                execution_id: Uuid::parse_str(&row.execution_id).map_err(|_| {
                    Error::Database(format!(
                        "stored execution id {:?} is not valid",
                        row.execution_id
                    ))
                })?,
                position: row.position.max(0) as usize,
                task_id: row.task_id,
                attempt: row.attempt.max(0) as u32,
                started_at,
            })
        })
        .collect()
}

#[cfg(feature = "sqlite")]
fn sqlite_claim<'a>(
    conn: &mut diesel::SqliteConnection,
    write_turn: impl FnOnce() -> super::WriteTurn<'a>,
    worker: &str,
    task_ids: &[String],
    limit: usize,
) -> Result<Vec<Claim>> {
    use super::store::CHUNK;
    let started_at = now();
    let naive = started_at.naive_utc();
    // A read first: most wake-ups find nothing, and need no write lock to learn it.
    let mut any = false;
    for chunk in task_ids.chunks(CHUNK) {
        any |= diesel::select(diesel::dsl::exists(
            task_executions::table
                .filter(task_executions::queue.eq(DEFAULT_QUEUE))
                .filter(task_executions::status.eq(Pending))
                .filter(task_executions::ready_at.is_not_null())
                .filter(task_executions::task_id.eq_any(chunk)),
        ))
        .get_result::<bool>(conn)?;
        if any {
            break;
        }
    }
    if !any {
        return Ok(Vec::new());
    }
    let _turn = write_turn();
    conn.immediate_transaction(|conn| {
        let mut rows: Vec<ClaimedRow> = Vec::new();
        for chunk in task_ids.chunks(CHUNK) {
            let wanted = limit - rows.len();
            if wanted == 0 {
                break;
            }
            let found: Vec<(String, String, i32, i32)> = task_executions::table
                .filter(task_executions::queue.eq(DEFAULT_QUEUE))
                .filter(task_executions::status.eq(Pending))
                .filter(task_executions::ready_at.is_not_null())
                .filter(task_executions::task_id.eq_any(chunk))
                .order(task_executions::ready_at)
                .limit(wanted as i64)
                .select((
                    task_executions::execution_id,
                    task_executions::task_id,
                    task_executions::position,
                    task_executions::attempt,
                ))
                .load(conn)?;
            for (execution_id, task_id, position, attempt) in found {
                diesel::update(task_executions::table.find((&execution_id, &task_id)))
                    .set((
                        task_executions::status.eq(TaskStatus::Running.as_str()),
                        task_executions::worker_id.eq(Some(worker)),
                        task_executions::attempt.eq(attempt + 1),
                        task_executions::started_at.eq(Some(naive)),
                    ))
                    .execute(conn)?;
                rows.push(ClaimedRow {
                    execution_id,
                    task_id,
                    position,
                    attempt: attempt + 1,
                });
            }
        }
        let claims = to_claims(rows, started_at)?;
        conn.mark_running(&claims)?;
        Ok(claims)
    })
}

#[cfg(feature = "postgres")]
fn postgres_claim(
    conn: &mut diesel::PgConnection,
    worker: &str,
    task_ids: &[String],
    limit: usize,
) -> Result<Vec<Claim>> {
    use diesel::sql_types::{Array, BigInt, Text, Timestamp};
    let started_at = now();
    let rows: Vec<ClaimedRow> = diesel::sql_query(
        "WITH ready AS ( \
             SELECT execution_id, task_id FROM task_executions \
             WHERE queue = 'default' AND status = 'Pending' AND ready_at IS NOT NULL \
                 AND task_id IN (SELECT unnest($2::text[])) \
             ORDER BY ready_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
         UPDATE task_executions t SET status = 'Running', worker_id = $1, \
             attempt = t.attempt + 1, started_at = $4 \
         FROM ready WHERE t.execution_id = ready.execution_id AND t.task_id = ready.task_id \
         RETURNING t.execution_id, t.task_id, t.position, t.attempt",
    )
    .bind::<Text, _>(worker)
    .bind::<Array<Text>, _>(task_ids)
    .bind::<BigInt, _>(limit as i64)
    .bind::<Timestamp, _>(started_at.naive_utc())
    .load(conn)?;
    let claims = to_claims(rows, started_at)?;
    if !claims.is_empty() {
        conn.mark_running(&claims)?;
    }
    Ok(claims)
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::context::Context;
    use crate::database::leases::WorkerIdentity;
    use crate::database::store::StoredOutputs;
    use crate::database::url::DatabaseUrl;
    use crate::database::PoolOptions;
    use crate::model::ExecutionResult;
    use crate::task::FnTask;
    use crate::workflow::Workflow;

    /// Attempt `fence` of task 0, ended Completed with output `{"attempt": fence}`.
    fn completed(fence: u32) -> Arc<Vec<EndedTask>> {
        let at = now();
        Arc::new(vec![EndedTask {
            output_json: Some(format!("{{\"attempt\": {fence}}}")),
            last_attempt: Some(AttemptRecord {
                attempt: fence,
                status: TaskStatus::Completed,
                error: None,
                started_at: at,
                completed_at: at,
            }),
            ..EndedTask::new(0, fence, TaskStatus::Completed, fence, at, at)
        }])
    }

    /// The path the failover tests race into, step by step: worker A claims a task, B gives the
    /// claim back, A claims it again; the first claim's writes must all be refused, quietly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_attempt_of_the_same_worker_writes_nothing() {
        let db = Database::connect(DatabaseUrl::SqliteMemory, PoolOptions::default())
            .await
            .unwrap();
        let task = FnTask::new("t", &[], |context| async move { Ok(context) });
        let workflow = Workflow::new("wf", vec![task]).unwrap();
        let plan = Arc::new(ExecutionPlan::of(&workflow));
        let record = ExecutionResult::pending(
            Uuid::new_v4(),
            workflow.name(),
            workflow.version(),
            Context::new(),
            &plan,
        );
        let lease = Duration::from_secs(30);
        let execution = db
            .submit(record, (*plan).clone(), None, None, None, lease)
            .await
            .unwrap()
            .execution_id;
        let (a, b) = (
            WorkerIdentity::of_this_process("a".into()),
            WorkerIdentity::of_this_process("b".into()),
        );
        db.heartbeat(a.clone(), "[\"t\"]".into()).await.unwrap();
        let claim =
            |worker: &WorkerIdentity| db.claim_ready(worker.id.clone(), vec!["t".into()], 1);
        assert_eq!(claim(&a).await.unwrap()[0].attempt, 1);

        // B finds A's heartbeat older than its (tiny) lease and gives the claim back.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let given = db.reap_dead_workers(b, Duration::from_millis(10)).await;
        assert_eq!(given.unwrap(), 1);
        db.heartbeat(a.clone(), "[\"t\"]".into()).await.unwrap();
        assert_eq!(claim(&a).await.unwrap()[0].attempt, 2);

        let commit = |fence: u32| {
            let context: SharedContext = Arc::new(Mutex::new(StoredOutputs(Context::new())));
            db.commit_ended(
                execution,
                plan.clone(),
                a.id.clone(),
                completed(fence),
                ClaimRequest {
                    limit: 0,
                    registered: Arc::new(|_: &str| false),
                },
                context,
            )
        };
        let stale = commit(1).await.unwrap();
        assert_eq!(stale.lost, vec![(0, 1)]);
        assert!(stale.finished.is_none());
        let failed = AttemptRecord {
            attempt: 1,
            status: TaskStatus::Failed,
            error: Some("stale".into()),
            started_at: now(),
            completed_at: now(),
        };
        let retry = db.record_retry(execution, a.id.clone(), 1, "t".into(), failed);
        assert!(!retry.await.unwrap());

        let current = commit(2).await.unwrap();
        assert!(current.lost.is_empty());
        assert_eq!(current.finished, Some(ExecutionStatus::Completed));
        let stored = db.get_execution(execution).await.unwrap().unwrap();
        let history: Vec<TaskStatus> = stored.task_results[0]
            .history
            .iter()
            .map(|h| h.status)
            .collect();
        assert_eq!(history, [TaskStatus::Lost, TaskStatus::Completed]);
        assert_eq!(
            stored.final_context.unwrap().get("attempt"),
            Some(&serde_json::json!(2))
        );
    }
}

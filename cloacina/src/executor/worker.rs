//! The worker inside every executor: claims ready tasks of any execution in its database,
//! hands them to the execution's scheduler, and keeps its lease alive.
//!
//! New work is found when this process finishes a task (its commit claims what it unblocks),
//! when another process announces it (see `database::signals`), and by a safety poll every
//! [`SAFETY_POLL`]. Its heartbeats and other upkeep live in `maintenance`.

mod maintenance;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::finals::{Expected, Finals};
use super::registry::TaskRegistry;
use super::scheduler::{self, Claimed, Pace, Preloaded};
use super::{announce_submitted, root_count};
use crate::context::{Context, StoredContext};
use crate::database::claims::{Claim, ClaimRequest, Registered};
use crate::database::control::Submitted;
use crate::database::leases::WorkerIdentity;
use crate::database::limit_units::until_rate_allows;
use crate::database::signals::Signal;
use crate::database::waits::{parked_wake_noted, until_parked_wake};
use crate::database::Database;
use crate::error::Result;
use crate::events::Observers;
use crate::model::{ExecutionPlan, ExecutionResult};
use crate::spawn::panic_message;
use crate::task::Task;

/// How often a worker looks for ready work even when nothing announced any.
pub const SAFETY_POLL: Duration = Duration::from_secs(1);
/// Most tasks claimed in one query.
const CLAIM_BATCH: usize = 64;

/// Waits between retries of a database write that failed: 50 ms, doubling up to 5 s.
pub(crate) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(50))
    }
}

impl Backoff {
    /// Sleeps for the current delay, then doubles it (up to 5 s).
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// Sends the reason an execution must stop; every task runner of the execution listens.
pub(crate) type CancelSender = watch::Sender<Option<String>>;

/// The scheduler of an execution this worker is running tasks of.
struct Session {
    claims: mpsc::UnboundedSender<Vec<Claimed>>,
    cancel: Arc<CancelSender>,
}

/// One executor's worker: its identity, capacity, registered tasks and running sessions.
pub(crate) struct Worker {
    db: Database,
    identity: WorkerIdentity,
    permits: Arc<Semaphore>,
    registry: Arc<dyn TaskRegistry>,
    lease: Duration,
    /// Final contexts of executions ended here, for this process's `wait` calls.
    finals: Arc<Finals>,
    /// Who hears of executions ending and task attempts.
    observer: Observers,
    sessions: Mutex<HashMap<Uuid, Session>>,
    /// Executions whose results this worker cannot store right now: the database's error and
    /// when it last failed.
    stalled: Mutex<HashMap<Uuid, (String, tokio::time::Instant)>>,
    /// When a heartbeat last wrote to the database.
    last_beat: Mutex<Option<tokio::time::Instant>>,
    /// Set by shutdown: claim nothing more.
    closed: AtomicBool,
    /// Held from a claim's query until its tasks are dispatched, so `drain` never misses them.
    claiming: tokio::sync::Mutex<()>,
    closing: Notify,
    idle: Notify,
    /// How fast each workflow's tasks and commits went in its latest execution here.
    paces: Mutex<HashMap<Arc<str>, Pace>>,
}

impl Worker {
    /// A worker with a new id, running at most as many tasks at once as `permits` holds.
    pub(crate) fn new(
        db: Database,
        permits: Arc<Semaphore>,
        registry: Arc<dyn TaskRegistry>,
        lease: Duration,
        observer: Observers,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            identity: WorkerIdentity::of_this_process(Uuid::new_v4().to_string()),
            permits,
            registry,
            lease,
            finals: Arc::default(),
            observer,
            sessions: Mutex::default(),
            stalled: Mutex::default(),
            last_beat: Mutex::default(),
            closed: AtomicBool::new(false),
            claiming: tokio::sync::Mutex::new(()),
            closing: Notify::new(),
            idle: Notify::new(),
            paces: Mutex::default(),
        })
    }

    /// Registers this worker, gives back dead workers' tasks, then starts claiming, upkeep and
    /// schedule fires in the background; returns their tasks.
    pub(crate) async fn start(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        // Registered (and dead workers' tasks given back) before the first claim.
        self.beat().await;
        self.reap().await;
        vec![
            tokio::spawn(self.clone().claim_loop()),
            tokio::spawn(self.clone().maintenance_loop()),
            tokio::spawn(self.clone().fire_loop()),
        ]
    }

    /// This worker's id, as its claims and its row in `workers` record it.
    pub(crate) fn id(&self) -> &str {
        &self.identity.id
    }

    /// The database this worker runs the tasks of.
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// How long after its last heartbeat a worker is presumed dead.
    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    /// Who hears of executions ending and task attempts.
    pub(crate) fn observer(&self) -> &Observers {
        &self.observer
    }

    /// Registers a waiter for the final context of `execution`, should it end here.
    pub(crate) fn expect_final(&self, execution: Uuid) -> Expected {
        self.finals.expect(execution)
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Uuid, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that storing results of `execution` just failed with `error`, or (None) works.
    fn set_stalled(&self, execution: Uuid, error: Option<String>) {
        let mut stalled = self.stalled.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            Some(error) => stalled.insert(execution, (error, tokio::time::Instant::now())),
            None => stalled.remove(&execution),
        };
    }

    /// The database's error if storing results of `execution` failed here after `since`.
    pub(crate) fn stalled_since(
        &self,
        execution: Uuid,
        since: tokio::time::Instant,
    ) -> Option<String> {
        let stalled = self.stalled.lock().unwrap_or_else(|p| p.into_inner());
        let (error, at) = stalled.get(&execution)?;
        (*at > since).then(|| error.clone())
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Which task ids this worker claims, for the claiming transactions.
    fn registered(&self) -> Registered {
        let registry = self.registry.clone();
        Arc::new(move |id: &str| registry.contains(id))
    }

    /// Takes as many free slots as are available, up to `wanted`, for claims made in a commit.
    fn reserve(&self, wanted: usize) -> Vec<OwnedSemaphorePermit> {
        if self.is_closed() {
            return Vec::new();
        }
        let mut permits = Vec::new();
        while permits.len() < wanted {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        permits
    }

    /// A claim request for `permits` slots and `ahead` tasks (or map instances) beyond them.
    fn claim_request(
        &self,
        permits: usize,
        (ahead, instances_ahead): (usize, usize),
    ) -> ClaimRequest {
        ClaimRequest {
            limit: permits,
            ahead,
            instances_ahead,
            registered: self.registered(),
        }
    }

    /// Stores a new execution, claiming in the same transaction the root tasks it has free
    /// slots for, and starts them; returns what was stored, its claims handed on.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        record: ExecutionResult,
        plan: Arc<ExecutionPlan>,
        input: Context,
        idempotency_key: Option<String>,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Submitted> {
        let workflow_name: Arc<str> = record.workflow_name.as_str().into();
        let roots = root_count(&plan);
        let permits = self.reserve(roots);
        let claim = (
            self.id().to_string(),
            self.claim_request(permits.len(), (0, 0)),
        );
        let mut submitted = self
            .db
            .submit(
                record,
                plan.clone(),
                idempotency_key,
                deadline,
                Some(claim),
                self.lease,
            )
            .await?;
        announce_submitted(&self.observer, &self.db, &submitted, &workflow_name, roots);
        let preloaded = Preloaded {
            execution_id: submitted.execution_id,
            workflow_name,
            plan,
            input,
        };
        let claimed = std::mem::take(&mut submitted.claimed);
        self.dispatch(claimed, permits, Some(preloaded));
        Ok(submitted)
    }

    /// Hands claimed tasks to their execution's scheduler, starting one if needed.
    fn dispatch(
        self: &Arc<Self>,
        claims: Vec<Claim>,
        permits: Vec<OwnedSemaphorePermit>,
        preloaded: Option<Preloaded>,
    ) {
        let mut by_execution: HashMap<Uuid, Vec<Claimed>> = HashMap::new();
        for (claim, permit) in claims.into_iter().zip(permits) {
            by_execution
                .entry(claim.execution_id)
                .or_default()
                .push(Claimed { claim, permit });
        }
        let mut sessions = self.sessions();
        for (execution, mut claimed) in by_execution {
            if let Some(session) = sessions.get(&execution) {
                match session.claims.send(claimed) {
                    Ok(()) => continue,
                    // Its scheduler stopped without leaving the map (it panicked): start anew.
                    Err(returned) => claimed = returned.0,
                }
            }
            let (claims, receiver) = mpsc::unbounded_channel();
            let cancel = Arc::new(watch::channel(None).0);
            sessions.insert(
                execution,
                Session {
                    claims,
                    cancel: cancel.clone(),
                },
            );
            let preloaded = preloaded.clone().filter(|p| p.execution_id == execution);
            let handle = WorkerHandle {
                worker: self.clone(),
                execution,
            };
            let driving = tokio::spawn(scheduler::drive(
                handle, claimed, receiver, cancel, preloaded,
            ));
            tokio::spawn(self.clone().supervise(execution, driving));
        }
    }

    /// Waits for an execution's scheduler; if it panicked, fails the execution with the panic's
    /// message, as nobody else would end the tasks this live worker holds.
    async fn supervise(self: Arc<Self>, execution: Uuid, driving: JoinHandle<()>) {
        let Err(error) = driving.await else { return };
        let message = panic_message(error);
        let mut backoff = Backoff::default();
        while self
            .db
            .fail_execution(execution, message.clone())
            .await
            .is_err()
            && !self.is_closed()
        {
            backoff.wait().await;
        }
        self.db.signals().raise(Signal::Done);
        self.remove_session(&mut self.sessions(), execution);
    }

    /// Removes a session whose work is done, unless claims arrived for it meanwhile.
    fn end_session(
        &self,
        execution: Uuid,
        receiver: &mut mpsc::UnboundedReceiver<Vec<Claimed>>,
    ) -> Option<Vec<Claimed>> {
        let mut sessions = self.sessions();
        if let Ok(more) = receiver.try_recv() {
            return Some(more);
        }
        self.remove_session(&mut sessions, execution);
        None
    }

    /// Forgets an execution's session; once none is left, `drain` may return.
    fn remove_session(&self, sessions: &mut HashMap<Uuid, Session>, execution: Uuid) {
        sessions.remove(&execution);
        if sessions.is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// Tells the runners of an execution's tasks in this process to stop.
    pub(crate) fn cancel_local(&self, execution: Uuid, reason: &str) {
        if let Some(session) = self.sessions().get(&execution) {
            if session.cancel.borrow().is_none() {
                session.cancel.send_replace(Some(reason.to_string()));
            }
        }
    }

    /// Stops claiming; returns once every task this worker runs has ended and been committed.
    pub(crate) async fn drain(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.closing.notify_waiters();
        // A claim already made in the database is dispatched (its session opened) first.
        drop(self.claiming.lock().await);
        loop {
            let idle = self.idle.notified();
            if self.sessions().is_empty() {
                return;
            }
            idle.await;
        }
    }

    /// Resolves once shutdown has begun.
    pub(crate) async fn until_closed(&self) {
        let closing = self.closing.notified();
        if self.is_closed() {
            return;
        }
        closing.await;
    }

    /// Claims ready tasks whenever slots are free and work may be waiting, until shutdown;
    /// first wakes the waiting tasks whose time has come.
    async fn claim_loop(self: Arc<Self>) {
        let mut ready = self.db.signals().subscribe(Signal::Ready);
        // When the earliest waiting task wakes, as last looked up (or noted here); the first
        // pass wakes what came due while no worker ran.
        let mut wake = Some(Instant::now());
        while !self.is_closed() {
            let first = tokio::select! {
                permit = self.permits.clone().acquire_owned() => permit.expect("the executor never closes its semaphore"),
                () = self.closing.notified() => return,
            };
            if wake.is_some_and(|at| at <= Instant::now()) {
                // On an error, the next quiet pass looks again.
                let _ = self.db.wake_due().await;
                wake = self.next_wake().await;
            }
            let claiming = self.claiming.lock().await;
            if self.is_closed() {
                return; // drain has begun: claim nothing more
            }
            let mut permits = vec![first];
            permits.extend(self.reserve(CLAIM_BATCH - 1));
            ready.borrow_and_update();
            let wanted = permits.len();
            // On an error, the safety poll retries once the database answers.
            let claims = self
                .db
                .claim_ready(self.identity.id.clone(), self.registry.ids(), wanted)
                .await
                .unwrap_or_default();
            let got = claims.len();
            let unused = permits.split_off(got.min(permits.len()));
            self.dispatch(claims, permits, None);
            drop(claiming);
            drop(unused);
            if let Some(after) = until_parked_wake() {
                wake = earliest(wake, Instant::now() + after);
            }
            if got == wanted {
                continue;
            }
            // A task a limit's rate held back starts at its time, not at the next poll; so
            // does a waiting task.
            let rate = until_rate_allows().map_or(SAFETY_POLL, |wait| wait.min(SAFETY_POLL));
            loop {
                let poll = wake.map_or(rate, |at| {
                    rate.min(at.saturating_duration_since(Instant::now()))
                });
                tokio::select! {
                    _ = ready.changed() => break,
                    () = tokio::time::sleep(poll) => {
                        // Quiet for a while: tasks parked by other processes may wake sooner.
                        if wake.is_none_or(|at| at > Instant::now()) {
                            wake = self.next_wake().await.or(wake);
                        }
                        break;
                    }
                    () = parked_wake_noted() => {
                        if let Some(after) = until_parked_wake() {
                            wake = earliest(wake, Instant::now() + after);
                        }
                    }
                    () = self.closing.notified() => return,
                }
            }
        }
    }

    /// When the earliest waiting task in the database wakes; None when none waits for a time
    /// (or the database cannot say now).
    async fn next_wake(&self) -> Option<Instant> {
        let after = self.db.next_due().await.ok()??;
        Some(Instant::now() + after)
    }
}

/// The earlier of `known` and `at`.
fn earliest(known: Option<Instant>, at: Instant) -> Option<Instant> {
    Some(known.map_or(at, |known| known.min(at)))
}

/// The part of a worker that the scheduler of one execution uses: shared resources for its
/// task runners, slots for the tasks its commits claim, and its session's bookkeeping.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    worker: Arc<Worker>,
    execution: Uuid,
}

impl WorkerHandle {
    /// The execution whose scheduler holds this handle.
    pub(crate) fn execution(&self) -> Uuid {
        self.execution
    }

    /// The worker's id, which fences its writes about the tasks it claimed.
    pub(crate) fn worker_id(&self) -> &str {
        self.worker.id()
    }

    /// The database the execution is stored in.
    pub(crate) fn db(&self) -> &Database {
        &self.worker.db
    }

    /// Who hears of the execution ending and of task attempts.
    pub(crate) fn observer(&self) -> &Observers {
        &self.worker.observer
    }

    /// The worker's concurrency slots, which a task re-takes for each retry.
    pub(crate) fn permits(&self) -> &Arc<Semaphore> {
        &self.worker.permits
    }

    /// The task registered under `id` in this process.
    pub(crate) fn task(&self, id: &str) -> Option<Arc<dyn Task>> {
        self.worker.registry.get(id)
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_closed(&self) -> bool {
        self.worker.is_closed()
    }

    /// How long after its last heartbeat the worker is presumed dead.
    pub(crate) fn lease(&self) -> Duration {
        self.worker.lease
    }

    /// Takes as many free slots as are available, up to `wanted`, for claims made in a commit.
    pub(crate) fn reserve(&self, wanted: usize) -> Vec<OwnedSemaphorePermit> {
        self.worker.reserve(wanted)
    }

    /// How fast `workflow`'s tasks and commits went in its latest execution here.
    pub(crate) fn pace_of(&self, workflow: &str) -> Pace {
        let paces = self.worker.paces.lock().unwrap_or_else(|p| p.into_inner());
        paces.get(workflow).copied().unwrap_or_default()
    }

    /// Records how fast `workflow`'s tasks and commits go, for its next execution here.
    pub(crate) fn remember_pace(&self, workflow: &Arc<str>, pace: Pace) {
        let mut paces = self.worker.paces.lock().unwrap_or_else(|p| p.into_inner());
        paces.insert(workflow.clone(), pace);
    }

    /// A claim request for `permits` slots and `ahead` tasks and map instances beyond them.
    pub(crate) fn claim_request(&self, permits: usize, ahead: (usize, usize)) -> ClaimRequest {
        self.worker.claim_request(permits, ahead)
    }

    /// Whether a heartbeat wrote to the database after `since`: it accepts writes.
    pub(crate) fn wrote_since(&self, since: tokio::time::Instant) -> bool {
        self.worker.wrote_since(since)
    }

    /// Records that storing the execution's results just failed with `error`, or (None) works.
    pub(crate) fn set_stalled(&self, error: Option<String>) {
        self.worker.set_stalled(self.execution, error);
    }

    /// Tells the runners of the execution's tasks in this process to stop.
    pub(crate) fn cancel(&self, reason: &str) {
        self.worker.cancel_local(self.execution, reason);
    }

    /// Leaves the execution's final context for this process's `wait` calls.
    pub(crate) fn deposit_final(&self, context: StoredContext) {
        self.worker.finals.deposit(self.execution, context);
    }

    /// Ends the session once its work is done, unless claims arrived for it meanwhile.
    pub(crate) fn end_session(
        &self,
        receiver: &mut mpsc::UnboundedReceiver<Vec<Claimed>>,
    ) -> Option<Vec<Claimed>> {
        self.worker.end_session(self.execution, receiver)
    }
}

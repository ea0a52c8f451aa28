//! The executor: submits workflows, waits for them, cancels and resumes them, and — unless it
//! is submit-only — works as one of the database's workers.

mod attempt;
mod finals;
mod lineage;
mod named_limits;
mod registry;
mod scheduler;
mod schedules;
mod subworkflows;
mod waits;
mod worker;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use attempt::CurrentAttempt;
pub use registry::{SubmittedTasks, TaskRegistry};
pub use schedules::ScheduleOptions;
pub use worker::SAFETY_POLL;

use crate::context::Context;
use crate::database::control::{CancelOutcome, Submitted};
use crate::database::leases::WorkerInfo;
use crate::database::queries::ExecutionFilter;
use crate::database::signals::Signal;
use crate::database::url::DatabaseUrl;
use crate::database::{Database, PoolOptions};
use crate::error::{Error, Result};
use crate::events::{report, Event, Observer, Observers};
use crate::limits;
use crate::model::{now, ExecutionPlan, ExecutionResult};
use crate::workflow::Workflow;
use worker::Worker;

/// Default number of tasks one executor runs at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;
/// Default time after its last heartbeat that a worker is presumed dead.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `wait` re-reads an execution's status when nothing announced its end.
const WAIT_POLL: Duration = Duration::from_secs(1);

/// Settings of an executor.
#[derive(Clone)]
pub struct ExecutorConfig {
    /// Most tasks running at once in this executor.
    pub max_concurrency: usize,
    /// Connection pool settings.
    pub pool: PoolOptions,
    /// How long after its last heartbeat a worker is presumed dead and its tasks given back.
    pub lease_timeout: Duration,
    /// Whether this executor runs tasks; false makes it submit-only.
    pub worker: bool,
    /// Where the worker finds task functions; by default, the tasks of workflows it submitted.
    pub registry: Option<Arc<dyn TaskRegistry>>,
    /// Who hears of executions and task attempts (logs, traces).
    pub observer: Option<Arc<dyn Observer>>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            pool: PoolOptions::default(),
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            worker: true,
            registry: None,
            observer: None,
        }
    }
}

/// Settings of one submitted execution.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// The new execution's id; a random one when None.
    pub execution_id: Option<Uuid>,
    /// Submitting again with the same key returns the first execution's id and starts nothing.
    pub idempotency_key: Option<String>,
    /// Past this long after submission, the execution is cancelled.
    pub timeout: Option<Duration>,
    /// Added to each task's priority: ready tasks are claimed highest first.
    pub priority: i32,
}

struct Inner {
    db: Database,
    registry: Arc<dyn TaskRegistry>,
    worker: Option<Arc<Worker>>,
    observer: Observers,
    /// How long after its last heartbeat a worker is presumed dead.
    lease: Duration,
    background: Mutex<Vec<JoinHandle<()>>>,
    lifecycle: watch::Sender<Lifecycle>,
    /// Unfinished executions this executor submitted, cancelled by `shutdown(cancel=true)`.
    submitted: Mutex<HashSet<Uuid>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for handle in self
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            handle.abort();
        }
    }
}

/// Where an executor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lifecycle {
    Open,
    /// `shutdown` has begun: no new submissions or claims; running tasks finish.
    Closing,
    /// Every task this worker ran has ended and been stored.
    ShutDown,
}

/// Submits workflows to a database and runs the ready tasks of any execution in it.
#[derive(Clone)]
pub struct UnifiedExecutor {
    inner: Arc<Inner>,
}

impl UnifiedExecutor {
    /// Opens and migrates the database and, unless submit-only, starts working; call within a
    /// tokio runtime.
    pub async fn connect(url: DatabaseUrl, config: ExecutorConfig) -> Result<Self> {
        limits::MAX_CONCURRENCY.check(config.max_concurrency as u64)?;
        limits::LEASE_TIMEOUT.check(config.lease_timeout)?;
        let mut pool = config.pool;
        pool.idle_in_transaction_limit = pool
            .idle_in_transaction_limit
            .or(Some(idle_in_transaction_limit(config.lease_timeout)));
        let db = Database::connect(url, pool).await?;
        let registry = config
            .registry
            .unwrap_or_else(|| Arc::new(SubmittedTasks::default()));
        let worker = config.worker.then(|| {
            Worker::new(
                db.clone(),
                Arc::new(Semaphore::new(config.max_concurrency)),
                registry.clone(),
                config.lease_timeout,
                config.observer.clone(),
            )
        });
        let background = match &worker {
            Some(worker) => worker.start().await,
            None => Vec::new(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                registry,
                worker,
                observer: config.observer,
                lease: config.lease_timeout,
                background: Mutex::new(background),
                lifecycle: watch::channel(Lifecycle::Open).0,
                submitted: Mutex::default(),
            }),
        })
    }

    fn is_closed(&self) -> bool {
        *self.inner.lifecycle.borrow() != Lifecycle::Open
    }

    fn submitted(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.inner
            .submitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new execution of `workflow` on `input` and returns its id; a worker runs it.
    pub async fn submit(
        &self,
        workflow: &Workflow,
        input: Context,
        options: SubmitOptions,
    ) -> Result<Uuid> {
        if self.is_closed() {
            return Err(shut_down());
        }
        self.inner.registry.learn(workflow);
        let plan = workflow.plan();
        let mut record = ExecutionResult::pending(
            options.execution_id.unwrap_or_else(Uuid::new_v4),
            workflow.name(),
            workflow.version(),
            input.clone(),
            &plan,
        );
        record.priority = options.priority;
        let deadline = match options.timeout {
            Some(t) => Some(
                now()
                    + chrono::Duration::from_std(limits::EXECUTION_TIMEOUT.check(t)?)
                        .expect("a timeout within limits fits in a chrono::Duration"),
            ),
            None => None,
        };
        let submitted = match &self.inner.worker {
            Some(worker) => {
                let key = options.idempotency_key;
                worker.submit(record, plan, input, key, deadline).await?
            }
            None => {
                let submitted = self
                    .inner
                    .db
                    .submit(
                        record,
                        plan.clone(),
                        options.idempotency_key,
                        deadline,
                        None,
                        self.inner.lease,
                    )
                    .await?;
                let roots = root_count(&plan);
                let observer = &self.inner.observer;
                announce_submitted(observer, &self.inner.db, &submitted, workflow.name(), roots);
                submitted
            }
        };
        let id = submitted.execution_id;
        if submitted.created {
            self.submitted().insert(id);
            if let Some(timeout) = options.timeout {
                self.cancel_at(id, timeout);
            }
        }
        Ok(id)
    }

    /// Cancels `execution` once `timeout` has passed, unless it ended first.
    fn cancel_at(&self, execution: Uuid, timeout: Duration) {
        let weak = Arc::downgrade(&self.inner);
        let reason = crate::database::control::timed_out_reason(timeout.as_secs_f64());
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(inner) = weak.upgrade() {
                let _ = UnifiedExecutor { inner }.cancel(execution, reason).await;
            }
        });
    }

    /// Waits for an execution to end and returns its record; it may run anywhere.
    pub async fn wait(
        &self,
        execution: Uuid,
        timeout: Option<Duration>,
    ) -> Result<ExecutionResult> {
        let timeout = timeout.map(|t| limits::WAIT_TIMEOUT.check(t)).transpose()?;
        let began = tokio::time::Instant::now();
        let deadline = timeout.map(|t| began + t);
        let db = &self.inner.db;
        let mut done = db.signals().subscribe(Signal::Done);
        let mut lifecycle = self.inner.lifecycle.subscribe();
        let expected = self
            .inner
            .worker
            .as_ref()
            .map(|w| w.expect_final(execution));
        loop {
            done.borrow_and_update();
            let shut_down = *lifecycle.borrow_and_update() == Lifecycle::ShutDown;
            match db.execution_status(execution).await? {
                None => return Err(not_found(execution)),
                Some(status) if status.is_terminal() => {
                    self.submitted().remove(&execution);
                    let mut result = db
                        .get_execution(execution)
                        .await?
                        .ok_or_else(|| not_found(execution))?;
                    if let Some(context) = expected.as_ref().and_then(|e| e.context()) {
                        result.final_context = Some(context);
                    }
                    return Ok(result);
                }
                Some(_) => {
                    if let Some(error) = self.stalled_since(execution, began) {
                        return Err(Error::Database(format!(
                            "execution {execution} cannot store its progress ({error}); this worker keeps retrying and it goes on once the database accepts writes, so wait for it again later"
                        )));
                    }
                    if shut_down {
                        return Err(Error::ShutDown(format!(
                            "the executor was shut down before execution {execution} ended; it stays in the database and goes on when a worker runs it"
                        )));
                    }
                }
            }
            tokio::select! {
                _ = done.changed() => {}
                () = tokio::time::sleep(WAIT_POLL) => {}
                () = sleep_until(deadline) => {
                    return Err(Error::Timeout(format!(
                        "execution {execution} did not end within {} s; it goes on",
                        timeout.unwrap_or_default().as_secs_f64()
                    )));
                }
                _ = lifecycle.changed() => {}
            }
        }
    }

    /// The database's error if this executor's worker failed to store results of `execution`
    /// after `since`.
    fn stalled_since(&self, execution: Uuid, since: tokio::time::Instant) -> Option<String> {
        self.inner.worker.as_ref()?.stalled_since(execution, since)
    }

    /// Submits `workflow` and waits for it to end; a failing task yields a Failed result.
    pub async fn execute(&self, workflow: &Workflow, input: Context) -> Result<ExecutionResult> {
        let id = self
            .submit(workflow, input, SubmitOptions::default())
            .await?;
        self.wait(id, None).await
    }

    /// Asks an execution to stop, wherever it runs; false if it had already ended or is unknown.
    pub async fn cancel(&self, execution: Uuid, reason: impl Into<String>) -> Result<bool> {
        let reason = reason.into();
        let outcome = self.inner.db.cancel(execution, reason.clone()).await?;
        if outcome != CancelOutcome::Cancelled {
            return Ok(false);
        }
        if let Some(worker) = &self.inner.worker {
            worker.cancel_local(execution, &reason);
        }
        let signals = self.inner.db.signals();
        signals.raise(Signal::Cancelled);
        signals.raise(Signal::Done);
        Ok(true)
    }

    /// Runs a Failed or Cancelled execution again from where it stopped.
    pub async fn resume(&self, execution: Uuid) -> Result<()> {
        self.inner.db.resume(execution).await?;
        self.inner.db.signals().raise(Signal::Ready);
        Ok(())
    }

    /// Stops claiming work and waits for running tasks to end and be committed; unfinished
    /// executions stay in the database for the next worker. With `cancel`, the executions this
    /// executor submitted are cancelled first.
    pub async fn shutdown(&self, cancel: bool) {
        self.inner.lifecycle.send_replace(Lifecycle::Closing);
        if cancel {
            let submitted: Vec<Uuid> = self.submitted().drain().collect();
            for execution in submitted {
                let _ = self
                    .cancel(execution, "the executor is shutting down")
                    .await;
            }
        }
        if let Some(worker) = &self.inner.worker {
            worker.drain().await;
            for handle in self
                .inner
                .background
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
            {
                handle.abort();
            }
            let _ = self.inner.db.remove_worker(worker.id().to_string()).await;
        }
        let db = self.inner.db.clone();
        let _ = tokio::task::spawn_blocking(move || {
            db.signals().stop_listening();
            crate::database::connects::wait_for_connects(CONNECTS_GRACE);
        })
        .await;
        self.inner.lifecycle.send_replace(Lifecycle::ShutDown);
    }

    /// Reads an execution back from the database.
    pub async fn get_execution(&self, execution_id: Uuid) -> Result<Option<ExecutionResult>> {
        self.inner.db.get_execution(execution_id).await
    }

    /// A page of the instances of the mapped task `task_id` of an execution, in index order.
    pub async fn list_task_instances(
        &self,
        execution_id: Uuid,
        task_id: String,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<crate::model::InstanceResult>> {
        self.inner
            .db
            .list_task_instances(execution_id, task_id, offset, limit)
            .await
    }

    /// Lists recorded executions, newest first.
    pub async fn list_executions(&self, filter: ExecutionFilter) -> Result<Vec<ExecutionResult>> {
        self.inner.db.list_executions(filter).await
    }

    /// Every worker registered in the database, with its heartbeat and the tasks it runs.
    pub async fn list_workers(&self) -> Result<Vec<WorkerInfo>> {
        self.inner.db.list_workers(self.inner.lease).await
    }

    /// This executor's worker id, if it runs tasks.
    pub fn worker_id(&self) -> Option<&str> {
        self.inner.worker.as_ref().map(|w| w.id())
    }
}

/// Longest `shutdown` waits for connections its pool is still opening in the background.
pub(crate) const CONNECTS_GRACE: Duration = Duration::from_secs(5);

/// How long a worker's session may sit idle inside a transaction (PostgreSQL): the lease, so
/// a worker frozen mid-commit holds its locks no longer than it keeps its claims, but at least
/// [`MIN_IDLE_IN_TRANSACTION`] so that building a large final context is never cut short.
pub fn idle_in_transaction_limit(lease: Duration) -> Duration {
    lease.max(MIN_IDLE_IN_TRANSACTION)
}

/// The shortest idle-in-transaction limit an executor sets.
pub const MIN_IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// Tells observers of a newly stored execution, and other workers of the root tasks its
/// submitter did not claim.
fn announce_submitted(
    observer: &Observers,
    db: &Database,
    submitted: &Submitted,
    workflow_name: &str,
    roots: usize,
) {
    if !submitted.created {
        return;
    }
    report(
        observer,
        Event::ExecutionSubmitted {
            execution_id: submitted.execution_id,
            workflow_name,
        },
    );
    if submitted.claimed.len() < roots {
        db.signals().raise(Signal::Ready);
    }
}

/// How many tasks of `plan` depend on none: those ready as soon as it is submitted.
fn root_count(plan: &ExecutionPlan) -> usize {
    (0..plan.len()).filter(|&p| plan.is_root(p)).count()
}

/// The error of a call made after shutdown began.
pub(crate) fn shut_down() -> Error {
    Error::ShutDown("the executor is shut down".into())
}

fn not_found(execution: Uuid) -> Error {
    Error::NotFound(format!("no execution with id {execution} in this database"))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

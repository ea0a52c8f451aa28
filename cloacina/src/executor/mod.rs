//! The executor: runs workflows concurrently and durably.

mod attempt;
mod lineage;
mod result;
mod run;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use result::{AttemptRecord, ExecutionResult, ExecutionStatus, TaskResult, TaskStatus};

use crate::context::Context;
use crate::database::records::ExecutionFilter;
use crate::database::url::DatabaseUrl;
use crate::database::{Database, PoolOptions};
use crate::error::{Error, Result};
use crate::workflow::Workflow;
use run::CancelSender;

/// Default number of tasks one executor runs at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;

/// Settings of an executor.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Most tasks running at once, across all of this executor's executions.
    pub max_concurrency: usize,
    /// Connection pool settings.
    pub pool: PoolOptions,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            pool: PoolOptions::default(),
        }
    }
}

/// Settings of one execution.
#[derive(Debug, Clone, Default)]
pub struct ExecuteOptions {
    /// Past this long, the execution is cancelled.
    pub timeout: Option<Duration>,
}

/// The executions this executor is running, each with its cancel switch.
#[derive(Default)]
struct Running {
    executions: Mutex<HashMap<Uuid, Arc<CancelSender>>>,
    idle: Notify,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<CancelSender>>> {
        self.executions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes an execution from the running set when its run ends, however it ends.
struct Deregister {
    running: Arc<Running>,
    id: Uuid,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        let mut executions = self.running.lock();
        executions.remove(&self.id);
        if executions.is_empty() {
            self.running.idle.notify_waiters();
        }
    }
}

/// A started execution: its id now, its result when it ends.
pub struct ExecutionHandle {
    /// The execution's id, already recorded.
    pub execution_id: Uuid,
    join: JoinHandle<Result<ExecutionResult>>,
}

impl ExecutionHandle {
    /// Waits for the execution to end.
    pub async fn wait(self) -> Result<ExecutionResult> {
        self.join.await.map_err(|e| {
            Error::Database(format!(
                "execution {} stopped unexpectedly: {e}",
                self.execution_id
            ))
        })?
    }
}

/// Runs workflows, recording every execution and task result in a database.
#[derive(Clone)]
pub struct UnifiedExecutor {
    db: Database,
    permits: Arc<Semaphore>,
    running: Arc<Running>,
    closed: Arc<AtomicBool>,
}

impl UnifiedExecutor {
    /// Opens and migrates the database, ready to execute workflows.
    pub async fn connect(url: DatabaseUrl, config: ExecutorConfig) -> Result<Self> {
        if config.max_concurrency == 0 {
            return Err(Error::Configuration(
                "max_concurrency must be at least 1".into(),
            ));
        }
        let db = Database::connect(url, config.pool).await?;
        Ok(Self {
            db,
            permits: Arc::new(Semaphore::new(config.max_concurrency)),
            running: Arc::default(),
            closed: Arc::default(),
        })
    }

    /// Starts `workflow` in the background and returns at once with its id; call within a tokio runtime.
    pub fn start(
        &self,
        workflow: Workflow,
        input: Context,
        options: ExecuteOptions,
    ) -> Result<ExecutionHandle> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Configuration("the executor is shut down".into()));
        }
        let execution_id = Uuid::new_v4();
        let cancel = Arc::new(watch::channel(None).0);
        self.running.lock().insert(execution_id, cancel.clone());
        let deregister = Deregister {
            running: self.running.clone(),
            id: execution_id,
        };
        let db = self.db.clone();
        let permits = self.permits.clone();
        let join = tokio::spawn(async move {
            let _deregister = deregister;
            let record = run::new_record(&workflow, input, execution_id);
            run::execute(&db, permits, &workflow, record, cancel, options.timeout).await
        });
        Ok(ExecutionHandle { execution_id, join })
    }

    /// Runs `workflow` to the end; a failing task yields a Failed result, not an error.
    pub async fn execute(&self, workflow: &Workflow, input: Context) -> Result<ExecutionResult> {
        self.start(workflow.clone(), input, ExecuteOptions::default())?
            .wait()
            .await
    }

    /// Asks a running execution to stop; false if this executor is not running it.
    pub fn cancel(&self, execution_id: Uuid, reason: impl Into<String>) -> bool {
        let cancel = self.running.lock().get(&execution_id).cloned();
        match cancel {
            Some(cancel) => {
                cancel.send_replace(Some(reason.into()));
                true
            }
            None => false,
        }
    }

    /// Refuses new executions and waits for running ones to end, cancelling them first if asked.
    pub async fn shutdown(&self, cancel: bool) {
        self.closed.store(true, Ordering::SeqCst);
        loop {
            let idle = self.running.idle.notified();
            {
                let executions = self.running.lock();
                if executions.is_empty() {
                    return;
                }
                if cancel {
                    for switch in executions.values() {
                        switch.send_replace(Some("the executor is shutting down".into()));
                    }
                }
            }
            idle.await;
        }
    }

    /// Reads an execution back from the database.
    pub async fn get_execution(&self, execution_id: Uuid) -> Result<Option<ExecutionResult>> {
        self.db.get_execution(execution_id).await
    }

    /// Lists recorded executions, newest first.
    pub async fn list_executions(&self, filter: ExecutionFilter) -> Result<Vec<ExecutionResult>> {
        self.db.list_executions(filter).await
    }
}

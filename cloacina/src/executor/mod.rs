//! The executor: runs workflows concurrently and durably.

mod lineage;
mod result;
mod run;

use std::sync::Arc;

use tokio::sync::Semaphore;
use uuid::Uuid;

pub use result::{ExecutionResult, ExecutionStatus, TaskResult, TaskStatus};

use crate::context::Context;
use crate::database::records::ExecutionFilter;
use crate::database::url::DatabaseUrl;
use crate::database::{Database, PoolOptions};
use crate::error::{Error, Result};
use crate::workflow::Workflow;

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

/// Runs workflows, recording every execution and task result in a database.
#[derive(Clone)]
pub struct UnifiedExecutor {
    db: Database,
    permits: Arc<Semaphore>,
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
        })
    }

    /// Runs `workflow` to the end; a failing task yields a Failed result, not an error.
    pub async fn execute(&self, workflow: &Workflow, input: Context) -> Result<ExecutionResult> {
        run::execute(&self.db, &self.permits, workflow, input).await
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

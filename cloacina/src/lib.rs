//! Cloacina: an embedded workflow engine that runs DAGs of async tasks and records every
//! execution in SQLite or PostgreSQL, so work survives a crash.
//!
//! The crate's API is what this file re-exports; storage (`database`) is internal.

pub mod context;
pub(crate) mod database;
pub mod error;
pub mod events;
pub mod executor;
mod handoff;
mod host;
pub mod limits;
pub mod model;
pub mod policy;
pub mod schedule;
mod spawn;
pub mod task;
pub mod workflow;

#[cfg(feature = "python")]
pub mod python;

pub use context::{Context, Handoff, InputValue, Output, SharedInput, SharedValue, StoredContext};
pub use database::leases::WorkerInfo;
pub use database::queries::ExecutionFilter;
pub use database::schedules::Schedule;
pub use database::url::{BackendKind, DatabaseUrl};
pub use database::{
    PoolOptions, DEFAULT_IDLE_IN_TRANSACTION_LIMIT, DEFAULT_POSTGRES_POOL_SIZE,
    DEFAULT_SQLITE_POOL_SIZE,
};
pub use error::{Error, Result, WorkflowError};
pub use executor::{
    ExecutorConfig, ScheduleOptions, SubmitOptions, SubmittedTasks, TaskRegistry, UnifiedExecutor,
};
pub use model::{ExecutionPlan, ExecutionResult, ExecutionStatus, TaskResult, TaskStatus};
pub use policy::{MapOptions, RetryPolicy, TaskOptions, TriggerRule, UpstreamOutcome};
pub use task::{
    name_engine_failures, EngineFailure, FnTask, OutputFuture, Task, TaskError, TaskErrorKind,
    TaskFuture,
};
pub use workflow::Workflow;

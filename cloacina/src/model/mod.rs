//! The execution model shared by the database and the executor: statuses, results and plans.

pub(crate) mod decide;
pub mod hooks;
pub mod limits;
pub mod map;
mod plan;
mod result;
pub mod subworkflows;
pub mod waits;

pub use plan::{ExecutionPlan, PlannedTask};
pub(crate) use result::{now, storable_text};
pub use result::{
    AttemptRecord, ExecutionResult, ExecutionStatus, InstanceResult, MapCounts, TaskResult,
    TaskStatus,
};

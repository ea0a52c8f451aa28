//! Error types of the engine.

use thiserror::Error;

/// Why a set of tasks does not form a valid workflow.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WorkflowError {
    /// The workflow name is empty.
    #[error("workflow name must be a non-empty string")]
    EmptyName,
    /// The workflow has no tasks.
    #[error("workflow '{0}' has no tasks; pass at least one task")]
    Empty(String),
    /// Two tasks share one id.
    #[error("workflow '{workflow}' has more than one task with id '{task}'")]
    DuplicateTask { workflow: String, task: String },
    /// A task depends on an id that is not in the workflow.
    #[error("task '{task}' depends on unknown task '{dependency}'; register '{dependency}' or remove the dependency")]
    UnknownDependency { task: String, dependency: String },
    /// The dependencies form a cycle (ids listed in cycle order, first repeated last).
    #[error("tasks form a dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// Any failure of the engine itself (not of a task).
#[derive(Debug, Error)]
pub enum Error {
    /// The workflow graph is invalid.
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    /// A setting or URL is invalid.
    #[error("{0}")]
    Configuration(String),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(String),
    /// A context value is not representable as JSON.
    #[error("{0}")]
    Context(String),
    /// No execution has the given id.
    #[error("{0}")]
    NotFound(String),
    /// The execution's status does not allow the operation.
    #[error("{0}")]
    InvalidState(String),
    /// A wait ended before the execution did.
    #[error("{0}")]
    Timeout(String),
    /// The executor was shut down.
    #[error("{0}")]
    ShutDown(String),
}

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<diesel::result::Error> for Error {
    fn from(err: diesel::result::Error) -> Self {
        Error::Database(err.to_string())
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(err: diesel::r2d2::PoolError) -> Self {
        Error::Database(format!("could not get a connection from the pool: {err}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Database(format!("stored JSON is corrupt: {err}"))
    }
}

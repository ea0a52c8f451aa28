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
    /// A task's id is the key of an instance of a mapped task (`id[n]`).
    #[error("task id '{task}' looks like an instance of mapped task '{mapped}' ('{mapped}[n]'); rename one of them")]
    InstanceKeyClash { task: String, mapped: String },
    /// The dependencies form a cycle (ids listed in cycle order, first repeated last).
    #[error("tasks form a dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// Any failure of the engine itself (not of a task).
#[derive(Debug, Clone, Error)]
pub enum Error {
    /// The workflow graph is invalid.
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    /// A setting or URL is invalid.
    #[error("{0}")]
    Configuration(String),
    /// The database failed or could not be reached; the same write may succeed later.
    #[error("database error: {0}")]
    Database(String),
    /// The database refused a value it will always refuse (too big, not storable, a
    /// constraint); retrying the same write cannot succeed.
    #[error("database error: {0}")]
    Refused(String),
    /// A context value is not representable as JSON.
    #[error("{0}")]
    Context(String),
    /// No execution has the given id.
    #[error("{0}")]
    NotFound(String),
    /// No schedule has the given name.
    #[error("{0}")]
    UnknownSchedule(String),
    /// No limit has the given name.
    #[error("{0}")]
    UnknownLimit(String),
    /// The execution's status does not allow the operation.
    #[error("{0}")]
    InvalidState(String),
    /// A wait ended before the execution did.
    #[error("{0}")]
    Timeout(String),
    /// The executor was shut down.
    #[error("{0}")]
    ShutDown(String),
    /// The engine itself failed (a panic): a bug to report.
    #[error("internal error in cloacina (please report it): {0}")]
    Internal(String),
}

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<diesel::result::Error> for Error {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as Kind, Error as E};
        let message = err.to_string();
        let refused = match &err {
            E::DatabaseError(
                Kind::UniqueViolation
                | Kind::ForeignKeyViolation
                | Kind::NotNullViolation
                | Kind::CheckViolation,
                _,
            ) => true,
            E::DatabaseError(_, _) => refuses_value(&message),
            E::SerializationError(_) | E::QueryBuilderError(_) => true,
            _ => false,
        };
        if refused {
            Error::Refused(message)
        } else {
            Error::Database(message)
        }
    }
}

impl Error {
    /// Whether this is a database failure known to clear by itself: a full disk, a lock held by
    /// another process, an I/O error or a lost connection.
    pub fn is_transient(&self) -> bool {
        const TRANSIENT: [&str; 9] = [
            "full",
            "locked",
            "busy",
            "i/o error",
            "connection",
            "timed out",
            "timeout",
            "shutting down",
            "starting up",
        ];
        match self {
            Error::Database(message) => {
                let message = message.to_ascii_lowercase();
                TRANSIENT.iter().any(|t| message.contains(t))
            }
            _ => false,
        }
    }
}

/// Whether a database's error message says it refuses a value itself (as opposed to failing to
/// reach or write the database): SQLite's TOOBIG, PostgreSQL's data exceptions and size limits.
fn refuses_value(message: &str) -> bool {
    const REFUSALS: [&str; 8] = [
        "too big",
        "too long",
        "too large",
        "invalid byte sequence",
        "out of range",
        "invalid memory alloc request size",
        "exceeds the maximum",
        "unsupported unicode escape sequence",
    ];
    let message = message.to_ascii_lowercase();
    REFUSALS.iter().any(|refusal| message.contains(refusal))
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

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    fn database_error(kind: DatabaseErrorKind, message: &str) -> Error {
        DieselError::DatabaseError(kind, Box::new(message.to_string())).into()
    }

    #[test]
    fn values_a_database_refuses_are_told_from_failures_that_clear() {
        for refused in [
            "string or blob too big",
            "invalid byte sequence for encoding \"UTF8\": 0x00",
            "invalid memory alloc request size 1073741824",
        ] {
            let error = database_error(DatabaseErrorKind::Unknown, refused);
            assert!(matches!(error, Error::Refused(_)), "{refused}");
            assert!(!error.is_transient());
        }
        let unique = database_error(DatabaseErrorKind::UniqueViolation, "duplicate key");
        assert!(matches!(unique, Error::Refused(_)));
        for transient in [
            "database or disk is full",
            "database is locked",
            "disk I/O error",
            "server closed the connection unexpectedly",
        ] {
            let error = database_error(DatabaseErrorKind::Unknown, transient);
            assert!(matches!(error, Error::Database(_)), "{transient}");
            assert!(error.is_transient(), "{transient}");
        }
        let unknown = database_error(DatabaseErrorKind::Unknown, "something else");
        assert!(matches!(unknown, Error::Database(_)) && !unknown.is_transient());
    }
}

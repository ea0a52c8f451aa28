//! The Python exception hierarchy and the one mapping from engine errors to it.

use pyo3::exceptions::{
    PyException, PyLookupError, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::error::Error;
use crate::task::EngineFailure;

/// Module name shown in the exceptions' reprs: the public package name.
const MODULE: &str = "cloacina";

/// Which Python exception class to raise.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ErrorKind {
    /// Base of every engine error.
    Base,
    /// The database failed or could not be reached.
    Database,
    /// A workflow graph is invalid (also a ValueError).
    Workflow,
    /// A URL or setting is invalid (also a ValueError).
    Configuration,
    /// The executor is not initialised or was shut down (also a RuntimeError).
    NotInitialized,
    /// A context value is not JSON (also a TypeError).
    Context,
    /// No execution has the given id (also a LookupError).
    ExecutionNotFound,
    /// The execution's status does not allow the operation (also a ValueError).
    ExecutionState,
    /// No schedule has the given name (also a LookupError).
    ScheduleNotFound,
    /// No limit has the given name (also a LookupError).
    LimitNotFound,
}

/// (class name, extra builtin base, docstring) for each kind, in creation order.
const CLASSES: [(ErrorKind, &str, &str); 10] = [
    (
        ErrorKind::Base,
        "CloacinaError",
        "Base class of every error raised by the Cloacina engine.",
    ),
    (
        ErrorKind::Database,
        "DatabaseError",
        "The database failed, refused the connection or could not be reached.",
    ),
    (
        ErrorKind::Workflow,
        "WorkflowError",
        "The workflow graph is invalid: empty, unknown or duplicate tasks, or a cycle.",
    ),
    (
        ErrorKind::Configuration,
        "ConfigurationError",
        "A database URL or executor setting is invalid.",
    ),
    (
        ErrorKind::NotInitialized,
        "NotInitializedError",
        "The executor is not initialized (call `await executor.initialize(url)`) or was shut down.",
    ),
    (
        ErrorKind::Context,
        "ContextError",
        "A context value cannot be stored as JSON.",
    ),
    (
        ErrorKind::ExecutionNotFound,
        "ExecutionNotFoundError",
        "No execution with the given id is recorded in this database.",
    ),
    (
        ErrorKind::ExecutionState,
        "ExecutionStateError",
        "The execution's status does not allow this, e.g. resuming one that Completed.",
    ),
    (
        ErrorKind::ScheduleNotFound,
        "ScheduleNotFoundError",
        "No schedule with the given name is stored in this database.",
    ),
    (
        ErrorKind::LimitNotFound,
        "LimitNotFoundError",
        "No limit with the given name is stored in this database.",
    ),
];

static TYPES: GILOnceCell<Vec<Py<PyType>>> = GILOnceCell::new();

fn types(py: Python<'_>) -> &Vec<Py<PyType>> {
    TYPES
        .get_or_try_init(py, || create_types(py))
        .expect("creating Cloacina's exception classes cannot fail")
}

/// A new class `name(*bases)` in the public module, with a docstring.
fn new_class(
    py: Python<'_>,
    name: &str,
    bases: Bound<'_, PyTuple>,
    doc: &str,
) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new_bound(py);
    namespace.set_item("__module__", MODULE)?;
    namespace.set_item("__doc__", doc)?;
    let class = py
        .import_bound("builtins")?
        .getattr("type")?
        .call1((name, bases, namespace))?
        .downcast_into::<PyType>()?;
    Ok(class.unbind())
}

fn create_types(py: Python<'_>) -> PyResult<Vec<Py<PyType>>> {
    let mut created: Vec<Py<PyType>> = Vec::with_capacity(CLASSES.len());
    for (kind, name, doc) in CLASSES {
        let builtin = match kind {
            ErrorKind::Base => py.get_type_bound::<PyException>(),
            ErrorKind::Database => py.get_type_bound::<PyException>(),
            ErrorKind::Workflow | ErrorKind::Configuration | ErrorKind::ExecutionState => {
                py.get_type_bound::<PyValueError>()
            }
            ErrorKind::NotInitialized => py.get_type_bound::<PyRuntimeError>(),
            ErrorKind::Context => py.get_type_bound::<PyTypeError>(),
            ErrorKind::ExecutionNotFound
            | ErrorKind::ScheduleNotFound
            | ErrorKind::LimitNotFound => py.get_type_bound::<PyLookupError>(),
        };
        let bases = match created.first() {
            None => PyTuple::new_bound(py, [builtin]),
            Some(base) if matches!(kind, ErrorKind::Database) => {
                PyTuple::new_bound(py, [base.bind(py).clone()])
            }
            Some(base) => PyTuple::new_bound(py, [base.bind(py).clone(), builtin]),
        };
        created.push(new_class(py, name, bases, doc)?);
    }
    Ok(created)
}

/// An exception of `kind` carrying `message`.
pub(crate) fn new_err(kind: ErrorKind, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::with_gil(|py| {
        PyErr::from_type_bound(types(py)[kind as usize].bind(py).clone(), message)
    })
}

static SKIP_TASK: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// `SkipTask`: raised inside a task to mark it Skipped. Not an error, so not a CloacinaError.
pub(crate) fn skip_task_type(py: Python<'_>) -> &Bound<'_, PyType> {
    SKIP_TASK
        .get_or_try_init(py, || {
            new_class(
                py,
                "SkipTask",
                PyTuple::new_bound(py, [py.get_type_bound::<PyException>()]),
                "Raise inside a task to mark it Skipped with this reason; it is not a failure and is never retried.",
            )
        })
        .expect("creating SkipTask cannot fail")
        .bind(py)
}

/// Converts an engine error into the matching Python exception; a wait that ran out of time
/// raises the builtin `TimeoutError`, as `asyncio.wait_for` does.
pub(crate) fn to_py_err(err: Error) -> PyErr {
    let kind = match &err {
        Error::Workflow(_) => ErrorKind::Workflow,
        Error::Configuration(_) => ErrorKind::Configuration,
        Error::Database(_) | Error::Refused(_) => ErrorKind::Database,
        Error::Context(_) => ErrorKind::Context,
        Error::NotFound(_) => ErrorKind::ExecutionNotFound,
        Error::UnknownSchedule(_) => ErrorKind::ScheduleNotFound,
        Error::UnknownLimit(_) => ErrorKind::LimitNotFound,
        Error::InvalidState(_) => ErrorKind::ExecutionState,
        Error::ShutDown(_) => ErrorKind::NotInitialized,
        Error::Internal(_) => ErrorKind::Base,
        Error::Timeout(message) => return PyTimeoutError::new_err(message.clone()),
    };
    new_err(kind, err.to_string())
}

/// The builtin Python exception that names an engine-detected task failure in its message.
pub(crate) fn exception_name(failure: EngineFailure) -> &'static str {
    match failure {
        EngineFailure::TimedOut => "TimeoutError",
        EngineFailure::InvalidOutput => "ValueError",
        EngineFailure::NotRegistered => "RuntimeError",
    }
}

/// Adds every exception class to the module.
pub(crate) fn add_to_module(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    for ((_, name, _), class) in CLASSES.iter().zip(types(py)) {
        module.add(*name, class.bind(py))?;
    }
    module.add("SkipTask", skip_task_type(py))?;
    Ok(())
}

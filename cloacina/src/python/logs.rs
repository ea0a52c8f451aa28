//! The engine's events as records of Python's `logging`: executions on the logger
//! `cloacina.executor`, task attempts on `cloacina.task`, each record carrying
//! `execution_id`, `workflow_name` and, for attempts, `task_id` and `attempt` as extra fields.

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;

use crate::events::{Event, Level};

/// The loggers records go to.
const EXECUTOR_LOGGER: &str = "cloacina.executor";
const TASK_LOGGER: &str = "cloacina.task";

static LOGGERS: GILOnceCell<(PyObject, PyObject)> = GILOnceCell::new();

fn loggers(py: Python<'_>) -> PyResult<&(PyObject, PyObject)> {
    LOGGERS.get_or_try_init(py, || {
        let logging = py.import_bound("logging")?;
        Ok((
            logging
                .call_method1("getLogger", (EXECUTOR_LOGGER,))?
                .unbind(),
            logging.call_method1("getLogger", (TASK_LOGGER,))?.unbind(),
        ))
    })
}

/// Gives the `cloacina` logger a `NullHandler`, as a library should, unless it has one.
pub(crate) fn install_null_handler(py: Python<'_>) -> PyResult<()> {
    let logging = py.import_bound("logging")?;
    let root = logging.call_method1("getLogger", ("cloacina",))?;
    let null = logging.getattr("NullHandler")?;
    for handler in root.getattr("handlers")?.iter()? {
        if handler?.is_instance(&null)? {
            return Ok(());
        }
    }
    root.call_method1("addHandler", (null.call0()?,))?;
    Ok(())
}

/// The lowest level either logger has enabled (a `logging` level number); `u8::MAX` when none.
pub(crate) fn lowest_enabled(py: Python<'_>) -> u8 {
    let Ok((executor, task)) = loggers(py) else {
        return u8::MAX;
    };
    [Level::Debug, Level::Info, Level::Warning, Level::Error]
        .into_iter()
        .find(|&level| {
            [executor, task].iter().any(|logger| {
                logger
                    .call_method1(py, "isEnabledFor", (level as u8,))
                    .and_then(|enabled| enabled.is_truthy(py))
                    .unwrap_or(false)
            })
        })
        .map_or(u8::MAX, |level| level as u8)
}

/// Writes `event` to its logger if that logger has its level enabled.
pub(crate) fn log(py: Python<'_>, event: &Event<'_>) -> PyResult<()> {
    let (executor, task) = loggers(py)?;
    let logger = if event.attempt().is_some() {
        task
    } else {
        executor
    };
    let level = event.level() as u8;
    if !logger
        .call_method1(py, "isEnabledFor", (level,))?
        .is_truthy(py)?
    {
        return Ok(());
    }
    let extra = PyDict::new_bound(py);
    let (execution_id, workflow_name) = event.execution();
    extra.set_item("execution_id", execution_id.to_string())?;
    extra.set_item("workflow_name", workflow_name)?;
    if let Some(attempt) = event.attempt() {
        extra.set_item("task_id", attempt.task_id)?;
        extra.set_item("attempt", attempt.attempt)?;
    }
    let kwargs = PyDict::new_bound(py);
    kwargs.set_item("extra", extra)?;
    logger.call_method_bound(py, "log", (level, event.message()), Some(&kwargs))?;
    Ok(())
}

//! The engine's events as records of Python's `logging`: executions on the logger
//! `cloacina.executor`, task attempts on `cloacina.task`, each record carrying
//! `execution_id`, `workflow_name` and, for attempts, `task_id` and `attempt` as extra fields.
//!
//! Asking Python whether a level is enabled needs the GIL, so the lowest enabled level is kept
//! here: read again whenever Python calls into the executor, and at least once a second.
//! Events below it cost one atomic load and never touch Python.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;

use super::bridge::with_python;
use crate::events::{Event, Level, Observer};

/// The loggers records go to.
const EXECUTOR_LOGGER: &str = "cloacina.executor";
const TASK_LOGGER: &str = "cloacina.task";
/// Longest a cached level is trusted when nothing calls in from Python.
const REFRESH: Duration = Duration::from_secs(1);

/// The process's bridge from engine events to `logging`.
pub(crate) struct PythonLogs {
    /// The lowest level either logger has enabled (a `logging` level number).
    lowest_enabled: AtomicU8,
    /// When `lowest_enabled` was read, in milliseconds since `epoch`.
    read_at_ms: AtomicU64,
    epoch: Instant,
}

/// The one bridge of this process, shared by its executors.
pub(crate) static LOGS: Lazy<std::sync::Arc<PythonLogs>> = Lazy::new(|| {
    std::sync::Arc::new(PythonLogs {
        lowest_enabled: AtomicU8::new(Level::Warning as u8),
        read_at_ms: AtomicU64::new(0),
        epoch: Instant::now(),
    })
});

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

impl PythonLogs {
    /// Reads again which levels the loggers have enabled.
    pub(crate) fn refresh(&self, py: Python<'_>) {
        let lowest = loggers(py).ok().and_then(|(executor, task)| {
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
        });
        // Nothing enabled: above every level the engine reports.
        let lowest = lowest.map_or(u8::MAX, |level| level as u8);
        self.lowest_enabled.store(lowest, Ordering::Relaxed);
        self.read_at_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn stale(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(self.read_at_ms.load(Ordering::Relaxed)) > REFRESH.as_millis() as u64
    }
}

impl Observer for PythonLogs {
    fn wants(&self, level: Level) -> bool {
        if self.stale() {
            with_python(|py| self.refresh(py));
        }
        level as u8 >= self.lowest_enabled.load(Ordering::Relaxed)
    }

    fn observe(&self, event: &Event<'_>) {
        with_python(|py| {
            // A failing handler is `logging`'s business (it prints and goes on), never the engine's.
            let _ = log(py, event);
        });
    }
}

fn log(py: Python<'_>, event: &Event<'_>) -> PyResult<()> {
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

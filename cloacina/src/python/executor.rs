//! `UnifiedExecutor`: the asyncio face of the engine's executor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use pyo3::types::{PyBool, PyFloat, PyLong, PyString};
use uuid::Uuid;

use super::backend;
use super::bridge::{awaitable, running_loop};
use super::errors::{new_err, to_py_err, ErrorKind};
use super::marshal::{context_from_py, type_name};
use super::results::ExecutionRecord;
use super::workflow::PyWorkflow;
use crate::context::Context;
use crate::database::records::ExecutionFilter;
use crate::database::url::DatabaseUrl;
use crate::database::PoolOptions;
use crate::executor::{
    ExecuteOptions, ExecutionStatus, ExecutorConfig, UnifiedExecutor, DEFAULT_MAX_CONCURRENCY,
};
use pyo3_asyncio_0_21::TaskLocals;

/// Largest `limit` accepted by `list_executions`.
const MAX_LIST_LIMIT: i64 = 10_000;

/// Lifecycle of a Python-side executor.
enum State {
    New,
    Initializing,
    Ready(UnifiedExecutor),
    ShutDown,
}

/// Runs workflows durably: `await initialize(url)`, then `await execute(workflow, context)`.
#[pyclass(name = "UnifiedExecutor", module = "cloacina", frozen)]
pub(crate) struct PyUnifiedExecutor {
    max_concurrency: usize,
    state: Arc<Mutex<State>>,
}

impl PyUnifiedExecutor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running engine, or NotInitializedError saying what to do.
    fn engine(&self) -> PyResult<UnifiedExecutor> {
        match &*self.lock() {
            State::Ready(engine) => Ok(engine.clone()),
            State::ShutDown => Err(shut_down_error()),
            State::New | State::Initializing => Err(new_err(
                ErrorKind::NotInitialized,
                "the executor is not initialized; call `await executor.initialize(database_url)` first",
            )),
        }
    }
}

/// Cancels an execution when the coroutine awaiting it goes away first.
struct CancelOnDrop {
    engine: UnifiedExecutor,
    execution_id: Option<Uuid>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.execution_id {
            self.engine
                .cancel(id, "the coroutine awaiting execute() was cancelled");
        }
    }
}

fn shut_down_error() -> PyErr {
    new_err(
        ErrorKind::NotInitialized,
        "this executor was shut down; create a new UnifiedExecutor and initialize it",
    )
}

fn parse_execution_id(value: &Bound<'_, PyAny>) -> PyResult<Uuid> {
    let text: String = value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "execution_id must be a str, got {}",
            type_name(value)
        ))
    })?;
    Uuid::parse_str(&text).map_err(|_| {
        PyValueError::new_err(format!(
            "{text:?} is not a valid execution id (a UUID string)"
        ))
    })
}

/// A positive, finite number of seconds.
fn positive_seconds(value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if value.is_instance_of::<PyBool>()
        || !(value.is_instance_of::<PyLong>() || value.is_instance_of::<PyFloat>())
    {
        return Err(PyTypeError::new_err(format!(
            "timeout must be a number of seconds or None, got {}",
            type_name(value)
        )));
    }
    let seconds: f64 = value.extract()?;
    if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(PyValueError::new_err(format!(
            "timeout must be a positive number of seconds, got {seconds}"
        )))
    }
}

/// A positive int argument, or TypeError/ValueError naming it.
fn positive_int(name: &str, value: &Bound<'_, PyAny>) -> PyResult<usize> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyLong>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, got {}",
            type_name(value)
        )));
    }
    match value.extract::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be at least 1, got {}",
            value.repr()?
        ))),
    }
}

fn default_max_concurrency() -> PyObject {
    Python::with_gil(|py| DEFAULT_MAX_CONCURRENCY.into_py(py))
}

#[pymethods]
impl PyUnifiedExecutor {
    #[new]
    #[pyo3(signature = (max_concurrency=default_max_concurrency()), text_signature = "(max_concurrency=8)")]
    fn new(py: Python<'_>, max_concurrency: PyObject) -> PyResult<Self> {
        let max_concurrency = max_concurrency.bind(py);
        if max_concurrency.is_instance_of::<PyBool>() || !max_concurrency.is_instance_of::<PyLong>()
        {
            return Err(PyTypeError::new_err(format!(
                "max_concurrency must be an int, got {}",
                type_name(max_concurrency)
            )));
        }
        let value: i64 = max_concurrency.extract().unwrap_or(0);
        if value < 1 {
            return Err(PyValueError::new_err(format!(
                "max_concurrency must be at least 1, got {}",
                max_concurrency.repr()?
            )));
        }
        Ok(Self {
            max_concurrency: value as usize,
            state: Arc::new(Mutex::new(State::New)),
        })
    }

    /// The most tasks this executor runs at once.
    #[getter]
    fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// Connects to (and migrates) the database at `database_url`.
    #[pyo3(signature = (database_url, *, schema=None, pool_size=None))]
    fn initialize<'py>(
        &self,
        py: Python<'py>,
        database_url: &Bound<'py, PyAny>,
        schema: Option<String>,
        pool_size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let url = database_url
            .downcast::<PyString>()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "database_url must be a str, got {}",
                    type_name(database_url)
                ))
            })?
            .to_cow()?;
        let url = DatabaseUrl::parse(&url, backend()).map_err(to_py_err)?;
        let pool = PoolOptions {
            max_size: pool_size
                .map(|size| positive_int("pool_size", size))
                .transpose()?
                .map(|n| n.min(u32::MAX as usize) as u32),
            schema,
        };
        pool.validate(&url).map_err(to_py_err)?;
        {
            let mut state = self.lock();
            match &*state {
                State::New => *state = State::Initializing,
                State::Initializing | State::Ready(_) => {
                    return Err(new_err(
                        ErrorKind::Base,
                        "this executor is already initialized",
                    ))
                }
                State::ShutDown => return Err(shut_down_error()),
            }
        }
        let state = self.state.clone();
        let config = ExecutorConfig {
            max_concurrency: self.max_concurrency,
            pool,
        };
        awaitable(py, async move {
            let connected = UnifiedExecutor::connect(url, config).await;
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            match connected {
                Ok(engine) => {
                    *state = State::Ready(engine);
                    Ok(())
                }
                Err(err) => {
                    *state = State::New;
                    Err(err)
                }
            }
        })
    }

    /// Runs `workflow` on `context` and returns the execution's result dict.
    #[pyo3(signature = (workflow, context=None, *, timeout=None))]
    fn execute<'py>(
        &self,
        py: Python<'py>,
        workflow: &Bound<'py, PyAny>,
        context: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let workflow = workflow.downcast::<PyWorkflow>().map_err(|_| {
            PyTypeError::new_err(format!(
                "execute() expects a Workflow, got {}",
                type_name(workflow)
            ))
        })?;
        let input = match context {
            None => Context::new(),
            Some(c) if c.is_none() => Context::new(),
            Some(c) => context_from_py(c)
                .map_err(|e| new_err(ErrorKind::Context, e.describe("context")))?,
        };
        let options = ExecuteOptions {
            timeout: timeout
                .filter(|t| !t.is_none())
                .map(positive_seconds)
                .transpose()?,
        };
        let engine = self.engine()?;
        let locals = TaskLocals::new(running_loop(py)?).copy_context(py)?;
        let graph = workflow.get().bind(&locals);
        let handle = {
            let _runtime = pyo3_asyncio_0_21::tokio::get_runtime().enter();
            engine
                .start(graph, input, options)
                .map_err(|_| shut_down_error())?
        };
        // If the awaiting coroutine is cancelled, this future is dropped and the execution cancelled.
        let cancel_on_drop = CancelOnDrop {
            engine,
            execution_id: Some(handle.execution_id),
        };
        awaitable(py, async move {
            let mut cancel_on_drop = cancel_on_drop;
            let result = handle.wait().await;
            cancel_on_drop.execution_id = None;
            Ok(ExecutionRecord(result?))
        })
    }

    /// Cancels a running execution of this executor; False if it is not running here.
    fn cancel<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_execution_id(execution_id)?;
        let engine = self.engine()?;
        awaitable(py, async move {
            Ok(engine.cancel(id, "cancelled by UnifiedExecutor.cancel()"))
        })
    }

    /// Reads a recorded execution by id; None if there is none.
    fn get_execution<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_execution_id(execution_id)?;
        let engine = self.engine()?;
        awaitable(py, async move {
            Ok(engine.get_execution(id).await?.map(ExecutionRecord))
        })
    }

    /// Lists recorded executions, newest first, optionally filtered.
    #[pyo3(signature = (workflow=None, status=None, limit=50))]
    fn list_executions<'py>(
        &self,
        py: Python<'py>,
        workflow: Option<String>,
        status: Option<String>,
        limit: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let status = status
            .map(|s| {
                ExecutionStatus::parse(&s).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "unknown status {s:?}; expected one of {}",
                        ExecutionStatus::names().join(", ")
                    ))
                })
            })
            .transpose()?;
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(PyValueError::new_err(format!(
                "limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}"
            )));
        }
        let filter = ExecutionFilter {
            workflow_name: workflow,
            status,
            limit,
        };
        let engine = self.engine()?;
        awaitable(py, async move {
            let executions = engine.list_executions(filter).await?;
            Ok(executions
                .into_iter()
                .map(ExecutionRecord)
                .collect::<Vec<_>>())
        })
    }

    /// Stops accepting work and waits for running executions; `cancel=True` cancels them first.
    #[pyo3(signature = (*, cancel=false))]
    fn shutdown<'py>(&self, py: Python<'py>, cancel: bool) -> PyResult<Bound<'py, PyAny>> {
        let engine = match std::mem::replace(&mut *self.lock(), State::ShutDown) {
            State::Ready(engine) => Some(engine),
            _ => None,
        };
        awaitable(py, async move {
            if let Some(engine) = engine {
                engine.shutdown(cancel).await;
            }
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        let state = match &*self.lock() {
            State::New => "not initialized",
            State::Initializing => "initializing",
            State::Ready(_) => "ready",
            State::ShutDown => "shut down",
        };
        format!(
            "UnifiedExecutor(max_concurrency={}, backend={:?}, state={state:?})",
            self.max_concurrency,
            backend().name()
        )
    }
}

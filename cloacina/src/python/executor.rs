//! `UnifiedExecutor`: the asyncio face of the engine's executor.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use pyo3::types::PyString;
use uuid::Uuid;

use super::args;
use super::backend;
use super::bridge::{awaitable, running_loop};
use super::errors::{new_err, to_py_err, ErrorKind};
use super::marshal::{context_from_py, type_name};
use super::results::ExecutionRecord;
use super::task::RegisteredTasks;
use super::workflow::PyWorkflow;
use crate::context::Context;
use crate::database::queries::ExecutionFilter;
use crate::database::url::DatabaseUrl;
use crate::database::PoolOptions;
use crate::executor::{
    ExecutorConfig, SubmitOptions, UnifiedExecutor, DEFAULT_LEASE_TIMEOUT, DEFAULT_MAX_CONCURRENCY,
};
use crate::limits;
use crate::model::ExecutionStatus;
use crate::workflow::Workflow;
use pyo3_asyncio_0_21::TaskLocals;

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
            let engine = self.engine.clone();
            pyo3_asyncio_0_21::tokio::get_runtime().spawn(async move {
                let _ = engine
                    .cancel(id, "the coroutine awaiting execute() was cancelled")
                    .await;
            });
        }
    }
}

fn shut_down_error() -> PyErr {
    new_err(
        ErrorKind::NotInitialized,
        "this executor was shut down; create a new UnifiedExecutor and initialize it",
    )
}

/// The text of a str argument `name`: TypeError for another type (`expected` says what fits),
/// ValueError for a str holding a lone surrogate.
fn text_arg<'a>(
    name: &str,
    expected: &str,
    value: &'a Bound<'_, PyAny>,
) -> PyResult<std::borrow::Cow<'a, str>> {
    value
        .downcast::<PyString>()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{name} must be {expected}, got {}",
                type_name(value)
            ))
        })?
        .to_cow()
        .map_err(|_| {
            PyValueError::new_err(format!(
                "{name} is not valid Unicode text (it holds a lone surrogate)"
            ))
        })
}

fn parse_execution_id(value: &Bound<'_, PyAny>) -> PyResult<Uuid> {
    let text = text_arg("execution_id", "a str", value)?;
    Uuid::parse_str(&text).map_err(|_| {
        PyValueError::new_err(format!(
            "{text:?} is not a valid execution id (a UUID string)"
        ))
    })
}

/// The idempotency key of a submission: a non-empty str without NUL, or None.
fn idempotency_key(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let key = text_arg("idempotency_key", "a str or None", value)?;
    if key.is_empty() || key.len() > 1_000 || key.contains('\0') {
        return Err(PyValueError::new_err(format!(
            "idempotency_key must be 1 to 1000 characters without NUL, got {} characters",
            key.chars().count()
        )));
    }
    Ok(Some(key.to_string()))
}

/// The arguments of submit/execute, checked: the graph, its input and the submission options.
fn submission(
    method: &str,
    workflow: &Bound<'_, PyAny>,
    context: Option<&Bound<'_, PyAny>>,
    key: Option<&Bound<'_, PyAny>>,
    timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Workflow, Context, SubmitOptions)> {
    let graph = workflow
        .downcast::<PyWorkflow>()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{method}() expects a Workflow, got {}",
                type_name(workflow)
            ))
        })?
        .get()
        .graph()
        .clone();
    let input = match context {
        Some(c) if !c.is_none() => {
            context_from_py(c).map_err(|e| new_err(ErrorKind::Context, e.describe("context")))?
        }
        _ => Context::new(),
    };
    let options = SubmitOptions {
        idempotency_key: idempotency_key(key)?,
        timeout: args::optional_seconds(&limits::EXECUTION_TIMEOUT, timeout)?,
    };
    Ok((graph, input, options))
}

fn default_list_limit() -> PyObject {
    Python::with_gil(|py| ExecutionFilter::default().limit.into_py(py))
}

fn default_max_concurrency() -> PyObject {
    Python::with_gil(|py| DEFAULT_MAX_CONCURRENCY.into_py(py))
}

#[pymethods]
impl PyUnifiedExecutor {
    #[new]
    #[pyo3(signature = (max_concurrency=default_max_concurrency()), text_signature = "(max_concurrency=8)")]
    fn new(py: Python<'_>, max_concurrency: PyObject) -> PyResult<Self> {
        let max_concurrency = args::count(&limits::MAX_CONCURRENCY, max_concurrency.bind(py))?;
        Ok(Self {
            max_concurrency: max_concurrency as usize,
            state: Arc::new(Mutex::new(State::New)),
        })
    }

    /// The most tasks this executor runs at once.
    #[getter]
    fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// Connects to (and migrates) the database at `database_url`; unless `worker=False`, the
    /// executor then runs ready tasks of any execution in that database whose ids are registered.
    #[pyo3(signature = (database_url, *, schema=None, pool_size=None, lease_timeout=None, worker=true))]
    fn initialize<'py>(
        &self,
        py: Python<'py>,
        database_url: &Bound<'py, PyAny>,
        schema: Option<String>,
        pool_size: Option<&Bound<'py, PyAny>>,
        lease_timeout: Option<&Bound<'py, PyAny>>,
        worker: bool,
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
                .map(|size| args::count(&limits::POOL_SIZE, size))
                .transpose()?
                .map(|n| n as u32),
            schema,
        };
        pool.validate(&url).map_err(to_py_err)?;
        let lease_timeout = args::optional_seconds(&limits::LEASE_TIMEOUT, lease_timeout)?
            .unwrap_or(DEFAULT_LEASE_TIMEOUT);
        let locals = TaskLocals::new(running_loop(py)?).copy_context(py)?;
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
            lease_timeout,
            worker,
            registry: Some(Arc::new(RegisteredTasks { locals })),
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

    /// Records a new execution of `workflow` and returns its id at once; a worker runs it.
    #[pyo3(signature = (workflow, context=None, *, idempotency_key=None, timeout=None))]
    fn submit<'py>(
        &self,
        py: Python<'py>,
        workflow: &Bound<'py, PyAny>,
        context: Option<&Bound<'py, PyAny>>,
        idempotency_key: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (graph, input, options) =
            submission("submit", workflow, context, idempotency_key, timeout)?;
        let engine = self.engine()?;
        awaitable(py, async move {
            let id = engine.submit(&graph, input, options).await?;
            Ok(id.to_string())
        })
    }

    /// Waits for an execution to end and returns its result dict; raises TimeoutError when
    /// `timeout` passes first (the execution goes on).
    #[pyo3(signature = (execution_id, *, timeout=None))]
    fn wait<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'py, PyAny>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_execution_id(execution_id)?;
        let timeout = args::optional_seconds(&limits::WAIT_TIMEOUT, timeout)?;
        let engine = self.engine()?;
        awaitable(py, async move {
            Ok(ExecutionRecord(engine.wait(id, timeout).await?))
        })
    }

    /// Runs `workflow` on `context` and returns the execution's result dict (submit + wait).
    #[pyo3(signature = (workflow, context=None, *, timeout=None))]
    fn execute<'py>(
        &self,
        py: Python<'py>,
        workflow: &Bound<'py, PyAny>,
        context: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (graph, input, options) = submission("execute", workflow, context, None, timeout)?;
        let engine = self.engine()?;
        awaitable(py, async move {
            // If the awaiting coroutine is cancelled, this future is dropped and the execution cancelled.
            let mut cancel_on_drop = CancelOnDrop {
                engine: engine.clone(),
                execution_id: None,
            };
            let id = engine.submit(&graph, input, options).await?;
            cancel_on_drop.execution_id = Some(id);
            let result = engine.wait(id, None).await;
            cancel_on_drop.execution_id = None;
            Ok(ExecutionRecord(result?))
        })
    }

    /// Cancels a Pending or Running execution wherever it runs; False if it had already ended
    /// or does not exist.
    fn cancel<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_execution_id(execution_id)?;
        let engine = self.engine()?;
        awaitable(py, async move {
            engine
                .cancel(id, "cancelled by UnifiedExecutor.cancel()")
                .await
        })
    }

    /// Runs a Failed or Cancelled execution again from where it stopped; returns its id.
    fn resume<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_execution_id(execution_id)?;
        let engine = self.engine()?;
        awaitable(py, async move {
            engine.resume(id).await?;
            Ok(id.to_string())
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
    #[pyo3(signature = (workflow=None, status=None, limit=default_list_limit()), text_signature = "($self, workflow=None, status=None, limit=50)")]
    fn list_executions<'py>(
        &self,
        py: Python<'py>,
        workflow: Option<String>,
        status: Option<String>,
        limit: PyObject,
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
        let limit = args::count(&limits::LIST_LIMIT, limit.bind(py))? as i64;
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

    /// Stops claiming work and waits for running tasks to end and be stored; unfinished
    /// executions stay in the database for the next worker. `cancel=True` first cancels the
    /// executions this executor submitted.
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

//! `UnifiedExecutor`: the asyncio face of the engine's executor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use uuid::Uuid;

use super::args;
use super::backend;
use super::bridge::{awaitable, running_loop, runtime, with_python};
use super::errors::{new_err, to_py_err, ErrorKind};
use super::marshal::{context_from_py, type_name};
use super::named_limits::{limit_arg, LimitRecord};
use super::observer::OBSERVER;
use super::results::{ExecutionRecord, InstanceRecord, WorkerRecord};
use super::schedules::{schedule_options, ScheduleRecord};
use super::task::{current_attempt, EventLoop, RegisteredTasks};
use super::traces;
use super::workflow::PyWorkflow;
use crate::context::Context;
use crate::database::queries::ExecutionFilter;
use crate::database::url::{BackendKind, DatabaseUrl};
use crate::database::PoolOptions;
use crate::executor::{
    CurrentAttempt, ExecutorConfig, SubmitOptions, UnifiedExecutor, DEFAULT_LEASE_TIMEOUT,
    DEFAULT_MAX_CONCURRENCY,
};
use crate::limits;
use crate::model::{ExecutionResult, ExecutionStatus};
use crate::workflow::Workflow;
use pyo3_asyncio_0_21::TaskLocals;

/// Lifecycle of a Python-side executor.
enum State {
    New,
    /// `initialize` number n is connecting.
    Initializing(u64),
    Ready(UnifiedExecutor),
    ShutDown,
}

/// Runs workflows durably: `await initialize(url)`, then `await execute(workflow, context)`.
#[pyclass(name = "UnifiedExecutor", module = "cloacina", frozen)]
pub(crate) struct PyUnifiedExecutor {
    max_concurrency: usize,
    state: Arc<Mutex<State>>,
    /// The loop `initialize` was called on, watched until shutdown.
    event_loop: Arc<Mutex<Option<EventLoop>>>,
}

impl PyUnifiedExecutor {
    fn set_paused<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        paused: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = args::text("name", "a str", name)?.into_owned();
        let engine = self.engine()?;
        awaitable(py, async move {
            engine.set_schedule_paused(&name, paused).await
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running engine, or NotInitializedError saying what to do.
    fn engine(&self) -> PyResult<UnifiedExecutor> {
        match &*self.lock() {
            State::Ready(engine) => Ok(engine.clone()),
            State::ShutDown => Err(shut_down_error()),
            State::New | State::Initializing(_) => Err(new_err(
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
            // Only fails in a forked child, where nothing can be cancelled anyway.
            let Ok(runtime) = runtime() else { return };
            runtime.spawn(async move {
                let _ = engine
                    .cancel(id, "the coroutine awaiting execute() was cancelled")
                    .await;
            });
        }
    }
}

/// Numbers `initialize` calls, so a cancelled one cannot finish a later one's work.
static INITIALIZE_CALLS: AtomicU64 = AtomicU64::new(0);

/// Puts an executor whose initialization number `.1` did not finish back to `New` when dropped.
struct BackToNew(Arc<Mutex<State>>, u64);

impl BackToNew {
    fn reset(&self) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, State::Initializing(n) if n == self.1) {
            *state = State::New;
        }
    }

    /// Makes the executor ready with `engine`, unless this initialization was cancelled.
    fn finish(&self, engine: UnifiedExecutor) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, State::Initializing(n) if n == self.1) {
            *state = State::Ready(engine);
        }
    }
}

/// Done-callback of `initialize`'s awaitable: cancelled, the executor is `New` again at once;
/// cancelled or failed, its event loop is no longer watched.
#[pyclass(frozen)]
struct InitializeDone {
    back_to_new: BackToNew,
    event_loop: Arc<Mutex<Option<EventLoop>>>,
}

#[pymethods]
impl InitializeDone {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        let cancelled = future.call_method0("cancelled")?.is_truthy()?;
        if cancelled {
            self.back_to_new.reset();
        }
        if cancelled || !future.call_method0("exception")?.is_none() {
            unwatch(future.py(), &self.event_loop);
        }
        Ok(())
    }
}

/// Stops watching the executor's event loop, if it was watched.
fn unwatch(py: Python<'_>, event_loop: &Mutex<Option<EventLoop>>) {
    let event_loop = event_loop.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(event_loop) = event_loop {
        event_loop.unwatch(py);
    }
}

impl Drop for BackToNew {
    fn drop(&mut self) {
        self.reset();
    }
}

/// Awaits `waiting`; called from a running task, lends that task's slot meanwhile, so nested
/// executions run even when the parent tasks hold every slot.
async fn lending_parent_slot<T>(
    parent: Option<CurrentAttempt>,
    waiting: impl std::future::Future<Output = T>,
) -> T {
    match parent {
        Some(parent) => parent.lending_slot(waiting).await,
        None => waiting.await,
    }
}

/// Closes the span opened for `traced` when no execution of that id was recorded: the
/// submission failed, or its idempotency key returned an earlier execution.
fn close_unused_span(traced: Option<Uuid>, submitted: &crate::error::Result<Uuid>) {
    let Some(traced) = traced else { return };
    let unused = match submitted {
        Ok(id) if *id == traced => return,
        Ok(_) => ("NotSubmitted", None),
        Err(err) => ("NotSubmitted", Some(err.to_string())),
    };
    with_python(|py| traces::end_execution(py, traced, unused.0, unused.1.as_deref()));
}

/// An execution record this process has learned the end of: its span, if open here, closes.
fn ended(record: ExecutionResult) -> ExecutionResult {
    if traces::active() && record.status.is_terminal() {
        with_python(|py| {
            traces::end_execution(
                py,
                record.execution_id,
                record.status.as_str(),
                record.error.as_deref(),
            )
        });
    }
    record
}

fn shut_down_error() -> PyErr {
    new_err(
        ErrorKind::NotInitialized,
        "this executor was shut down; create a new UnifiedExecutor and initialize it",
    )
}

fn parse_execution_id(value: &Bound<'_, PyAny>) -> PyResult<Uuid> {
    let text = args::text("execution_id", "a str", value)?;
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
    let key = args::text("idempotency_key", "a str or None", value)?;
    if key.is_empty() || key.len() > 1_000 || key.contains('\0') {
        return Err(PyValueError::new_err(format!(
            "idempotency_key must be 1 to 1000 characters without NUL, got {} characters",
            key.chars().count()
        )));
    }
    Ok(Some(key.to_string()))
}

/// The workflow argument of `method`, as the engine's graph.
fn workflow_arg(method: &str, workflow: &Bound<'_, PyAny>) -> PyResult<Workflow> {
    Ok(workflow
        .downcast::<PyWorkflow>()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{method}() expects a Workflow, got {}",
                type_name(workflow)
            ))
        })?
        .get()
        .graph()
        .clone())
}

/// The arguments of submit/execute, checked: the graph, its input and the submission options.
fn submission(
    method: &str,
    workflow: &Bound<'_, PyAny>,
    context: Option<&Bound<'_, PyAny>>,
    key: Option<&Bound<'_, PyAny>>,
    timeout: Option<&Bound<'_, PyAny>>,
    priority: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Workflow, Context, SubmitOptions)> {
    let graph = workflow_arg(method, workflow)?;
    // Logging levels set since the last call take effect for this execution.
    OBSERVER.refresh(workflow.py());
    let input = match context {
        Some(c) if !c.is_none() => {
            context_from_py(c).map_err(|e| new_err(ErrorKind::Context, e.describe("context")))?
        }
        _ => Context::new(),
    };
    // With tracing, the execution's span opens here, under the caller's current span.
    let execution_id = traces::active().then(|| {
        let id = Uuid::new_v4();
        traces::start_execution(workflow.py(), id, graph.name());
        id
    });
    let options = SubmitOptions {
        execution_id,
        idempotency_key: idempotency_key(key)?,
        timeout: args::optional_seconds(&limits::EXECUTION_TIMEOUT, timeout)?,
        priority: priority
            .map(super::options::priority)
            .transpose()?
            .unwrap_or(0),
    };
    Ok((graph, input, options))
}

fn default_list_limit() -> PyObject {
    Python::with_gil(|py| ExecutionFilter::default().limit.into_py(py))
}

fn default_instance_limit() -> PyObject {
    Python::with_gil(|py| 100_i64.into_py(py))
}

fn default_list_offset() -> PyObject {
    Python::with_gil(|py| ExecutionFilter::default().offset.into_py(py))
}

/// The environment variable `initialize()` reads when given no URL.
const DATABASE_URL_VARIABLE: &str = "CLOACINA_DATABASE_URL";

/// `CLOACINA_DATABASE_URL`, else (SQLite only) the file `cloacina.db` in the working directory.
fn default_database_url() -> PyResult<String> {
    match std::env::var(DATABASE_URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        Err(std::env::VarError::NotUnicode(_)) => Err(new_err(
            ErrorKind::Configuration,
            format!("{DATABASE_URL_VARIABLE} is not valid Unicode text"),
        )),
        _ if backend() == BackendKind::Sqlite => Ok("sqlite:///cloacina.db".to_string()),
        _ => Err(new_err(
            ErrorKind::Configuration,
            format!(
                "no database URL: pass one to initialize() or set {DATABASE_URL_VARIABLE} \
                 (e.g. postgresql://user@host/db)"
            ),
        )),
    }
}

fn default_per() -> PyObject {
    Python::with_gil(|py| 1.0_f64.into_py(py))
}

fn default_timezone() -> PyObject {
    Python::with_gil(|py| "UTC".into_py(py))
}

fn default_catchup() -> PyObject {
    Python::with_gil(|py| "latest".into_py(py))
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
            event_loop: Arc::default(),
        })
    }

    /// The most tasks this executor runs at once.
    #[getter]
    fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// Connects to (and migrates) the database at `database_url` (by default
    /// `CLOACINA_DATABASE_URL`, else the SQLite file `cloacina.db` in the working directory);
    /// unless `worker=False`, the executor then runs ready tasks of any execution in that
    /// database whose ids are registered.
    #[pyo3(signature = (database_url=None, *, schema=None, pool_size=None, lease_timeout=None, worker=true))]
    fn initialize<'py>(
        &self,
        py: Python<'py>,
        database_url: Option<&Bound<'py, PyAny>>,
        schema: Option<String>,
        pool_size: Option<&Bound<'py, PyAny>>,
        lease_timeout: Option<&Bound<'py, PyAny>>,
        worker: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let url = match database_url.filter(|u| !u.is_none()) {
            // Not `to_cow()?`: a UnicodeEncodeError's repr would show the URL, password included.
            Some(url) => args::text("database_url", "a str or None", url)?.into_owned(),
            None => default_database_url()?,
        };
        let url = DatabaseUrl::parse(&url, backend()).map_err(to_py_err)?;
        let pool = PoolOptions {
            max_size: pool_size
                .map(|size| args::count(&limits::POOL_SIZE, size))
                .transpose()?
                .map(|n| n as u32),
            schema,
            ..PoolOptions::default()
        };
        pool.validate(&url).map_err(to_py_err)?;
        let lease_timeout = args::optional_seconds(&limits::LEASE_TIMEOUT, lease_timeout)?
            .unwrap_or(DEFAULT_LEASE_TIMEOUT);
        let locals = TaskLocals::new(running_loop(py)?).copy_context(py)?;
        let call = INITIALIZE_CALLS.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = self.lock();
            match &*state {
                State::New => *state = State::Initializing(call),
                State::Initializing(_) | State::Ready(_) => {
                    return Err(new_err(
                        ErrorKind::Base,
                        "this executor is already initialized",
                    ))
                }
                State::ShutDown => return Err(shut_down_error()),
            }
        }
        let state = self.state.clone();
        let event_loop = match EventLoop::watch(py, locals) {
            Ok(event_loop) => event_loop,
            Err(err) => {
                *self.lock() = State::New;
                return Err(err);
            }
        };
        *self.event_loop.lock().unwrap_or_else(|p| p.into_inner()) = Some(event_loop.clone());
        let config = ExecutorConfig {
            max_concurrency: self.max_concurrency,
            pool,
            lease_timeout,
            worker,
            registry: Some(Arc::new(RegisteredTasks { event_loop })),
            observer: Some(OBSERVER.clone()),
        };
        OBSERVER.refresh(py);
        traces::detect(py);
        // Cancelled, failed or panicked, initialize leaves the executor as it found it.
        let on_cancel = InitializeDone {
            back_to_new: BackToNew(state.clone(), call),
            event_loop: self.event_loop.clone(),
        };
        let future = awaitable(py, async move {
            let back_to_new = BackToNew(state, call);
            back_to_new.finish(UnifiedExecutor::connect(url, config).await?);
            Ok(())
        })?;
        future.call_method1("add_done_callback", (on_cancel.into_py(py),))?;
        Ok(future)
    }

    /// Records a new execution of `workflow` and returns its id at once; a worker runs it.
    #[pyo3(signature = (workflow, context=None, *, idempotency_key=None, timeout=None, priority=None))]
    fn submit<'py>(
        &self,
        py: Python<'py>,
        workflow: &Bound<'py, PyAny>,
        context: Option<&Bound<'py, PyAny>>,
        idempotency_key: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (graph, input, options) = submission(
            "submit",
            workflow,
            context,
            idempotency_key,
            timeout,
            priority,
        )?;
        let engine = self.engine()?;
        let traced = options.execution_id;
        awaitable(py, async move {
            let submitted = engine.submit(&graph, input, options).await;
            close_unused_span(traced, &submitted);
            Ok(submitted?.to_string())
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
        let parent = current_attempt(py)?;
        awaitable(py, async move {
            let waiting = engine.wait(id, timeout);
            Ok(ExecutionRecord(ended(
                lending_parent_slot(parent, waiting).await?,
            )))
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
        let (graph, input, options) =
            submission("execute", workflow, context, None, timeout, None)?;
        let engine = self.engine()?;
        let parent = current_attempt(py)?;
        let traced = options.execution_id;
        awaitable(py, async move {
            // If the awaiting coroutine is cancelled, this future is dropped and the execution cancelled.
            let mut cancel_on_drop = CancelOnDrop {
                engine: engine.clone(),
                execution_id: None,
            };
            let submitted = engine.submit(&graph, input, options).await;
            close_unused_span(traced, &submitted);
            let id = submitted?;
            cancel_on_drop.execution_id = Some(id);
            let result = lending_parent_slot(parent, engine.wait(id, None)).await;
            cancel_on_drop.execution_id = None;
            Ok(ExecutionRecord(ended(result?)))
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

    /// A page of the instances of the mapped task `task_id` of an execution, in index order:
    /// dicts of `map_index`, `status`, `attempts`, `error`, `started_at` and `completed_at`.
    #[pyo3(signature = (execution_id, task_id, *, offset=default_list_offset(), limit=default_instance_limit()), text_signature = "($self, execution_id, task_id, *, offset=0, limit=100)")]
    fn list_task_instances<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'py, PyAny>,
        task_id: String,
        offset: PyObject,
        limit: PyObject,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_execution_id(execution_id)?;
        let limit = args::count(&limits::LIST_LIMIT, limit.bind(py))? as i64;
        let offset = args::count(&limits::LIST_OFFSET, offset.bind(py))? as i64;
        let engine = self.engine()?;
        awaitable(py, async move {
            let instances = engine
                .list_task_instances(id, task_id, offset, limit)
                .await?;
            Ok(instances
                .into_iter()
                .map(InstanceRecord)
                .collect::<Vec<_>>())
        })
    }

    /// Lists recorded executions, newest first, optionally filtered.
    #[pyo3(signature = (workflow=None, status=None, limit=default_list_limit(), offset=default_list_offset()), text_signature = "($self, workflow=None, status=None, limit=50, offset=0)")]
    fn list_executions<'py>(
        &self,
        py: Python<'py>,
        workflow: Option<String>,
        status: Option<String>,
        limit: PyObject,
        offset: PyObject,
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
        let offset = args::count(&limits::LIST_OFFSET, offset.bind(py))? as i64;
        let filter = ExecutionFilter {
            workflow_name: workflow,
            status,
            limit,
            offset,
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

    /// Stores a schedule that submits `workflow` at each fire of the cron expression, for any
    /// worker of the database to fire; returns its name. Storing a name again updates it.
    #[pyo3(signature = (workflow, cron, *, name=None, timezone=default_timezone(), context=None, catchup=default_catchup()), text_signature = "($self, workflow, cron, *, name=None, timezone='UTC', context=None, catchup='latest')")]
    #[allow(clippy::too_many_arguments)]
    fn schedule<'py>(
        &self,
        py: Python<'py>,
        workflow: &Bound<'py, PyAny>,
        cron: &Bound<'py, PyAny>,
        name: Option<&Bound<'py, PyAny>>,
        timezone: PyObject,
        context: Option<&Bound<'py, PyAny>>,
        catchup: PyObject,
    ) -> PyResult<Bound<'py, PyAny>> {
        let graph = workflow_arg("schedule", workflow)?;
        let cron = args::text("cron", "a str such as \"*/5 * * * *\"", cron)?.into_owned();
        let options = schedule_options(name, timezone.bind(py), context, catchup.bind(py))?;
        let engine = self.engine()?;
        awaitable(
            py,
            async move { engine.schedule(&graph, &cron, options).await },
        )
    }

    /// Every worker registered in the database, most recent heartbeat first: whether it is
    /// alive and which tasks it is running.
    fn list_workers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?;
        awaitable(py, async move {
            let workers = engine.list_workers().await?;
            Ok(workers.into_iter().map(WorkerRecord).collect::<Vec<_>>())
        })
    }

    /// Every schedule in the database, by name, with its next and last fire.
    fn list_schedules<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?;
        awaitable(py, async move {
            let schedules = engine.list_schedules().await?;
            Ok(schedules
                .into_iter()
                .map(ScheduleRecord)
                .collect::<Vec<_>>())
        })
    }

    /// Stops a schedule firing, in every worker, until `resume_schedule`.
    fn pause_schedule<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.set_paused(py, name, true)
    }

    /// Lets a paused schedule fire again, from its next fire after now.
    fn resume_schedule<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.set_paused(py, name, false)
    }

    /// Deletes a schedule; the executions it submitted stay.
    fn unschedule<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = args::text("name", "a str", name)?.into_owned();
        let engine = self.engine()?;
        awaitable(py, async move { engine.unschedule(&name).await })
    }

    /// Creates or changes the limit `name` for every worker on the database: at most
    /// `concurrency` attempts holding it run at once, at most `rate` start in any `per` seconds.
    /// A name ending in `*` is the default of every key with that prefix.
    #[pyo3(signature = (name, *, concurrency=None, rate=None, per=default_per()), text_signature = "($self, name, *, concurrency=None, rate=None, per=1.0)")]
    fn set_limit<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        concurrency: Option<&Bound<'py, PyAny>>,
        rate: Option<&Bound<'py, PyAny>>,
        per: PyObject,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = limit_arg(name, concurrency, rate, per.bind(py))?;
        let engine = self.engine()?;
        awaitable(py, async move { engine.set_limit(limit).await })
    }

    /// Sends an event: every task waiting on `key` completes with `payload` (any JSON value);
    /// returns how many. A wait that starts later sees it too, if its execution was submitted
    /// before the event was sent; events are kept 7 days.
    #[pyo3(signature = (key, payload=None))]
    fn send_event<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        payload: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = args::text("key", "a str", key)?.into_owned();
        if key.is_empty() {
            return Err(PyValueError::new_err(
                "key must be a non-empty str, such as \"approve:42\"",
            ));
        }
        let payload = super::waits::payload_json(py, payload)?;
        let engine = self.engine()?;
        awaitable(py, async move { engine.send_event(&key, payload).await })
    }

    /// Deletes the limit `name`; LimitNotFoundError (a LookupError) if there is none.
    fn delete_limit<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = args::text("name", "a str", name)?.into_owned();
        let engine = self.engine()?;
        awaitable(py, async move { engine.delete_limit(&name).await })
    }

    /// Every limit in the database, by name: dicts of `name`, `concurrency`, `rate`, `per` and
    /// `running` (attempts holding a concrete key now; None for a `*` default).
    fn list_limits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?;
        awaitable(py, async move {
            let limits = engine.list_limits().await?;
            Ok(limits.into_iter().map(LimitRecord).collect::<Vec<_>>())
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
        unwatch(py, &self.event_loop);
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
            State::Initializing(_) => "initializing",
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

//! Python functions as engine tasks: sync ones on worker threads, async ones on the caller's loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::asyncio::CancelledError;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;
use pyo3_asyncio_0_21::TaskLocals;

use super::bridge::{call_in_scope, run_on_loop, with_python, Scope};
use super::errors::skip_task_type;
use super::marshal::{output_from_py, type_name, values_to_py};
use super::registry::{registry, TaskDefinition};
use super::threads;
use crate::context::{Context, Output, SharedInput};
use crate::executor::{CurrentAttempt, TaskRegistry};
use crate::policy::TaskOptions;
use crate::task::{OutputFuture, Task, TaskError, TaskErrorKind, TaskFuture};

/// The event loop an executor's async tasks run on, and whether it is shutting down or closed.
#[derive(Clone)]
pub(crate) struct EventLoop {
    pub locals: TaskLocals,
    pub closed: Arc<AtomicBool>,
    /// A task the loop's shutdown cancels (as `asyncio.run` cancels every task when it returns).
    watcher: Arc<Mutex<Option<PyObject>>>,
}

impl EventLoop {
    /// Watches the loop in `locals` (call on its thread): once it shuts down, `closed` is set.
    pub(crate) fn watch(py: Python<'_>, locals: TaskLocals) -> PyResult<Self> {
        let closed: Arc<AtomicBool> = Arc::default();
        let forever = py
            .import_bound("asyncio")?
            .getattr("Event")?
            .call0()?
            .call_method0("wait")?;
        let watcher = locals
            .event_loop(py)
            .call_method1("create_task", (forever,))?;
        watcher.call_method1(
            "set_name",
            ("cloacina: notices this event loop shutting down",),
        )?;
        watcher.call_method1(
            "add_done_callback",
            (LoopShutDown(closed.clone()).into_py(py),),
        )?;
        Ok(Self {
            locals,
            closed,
            watcher: Arc::new(Mutex::new(Some(watcher.unbind()))),
        })
    }

    /// Stops watching, when the executor shuts down (call on the loop's thread).
    pub(crate) fn unwatch(&self, py: Python<'_>) {
        let watcher = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(watcher) = watcher {
            let _ = watcher.call_method0(py, "cancel");
        }
    }
}

/// Done-callback of an [`EventLoop`]'s watcher: the loop is shutting down.
#[pyclass(frozen)]
struct LoopShutDown(Arc<AtomicBool>);

#[pymethods]
impl LoopShutDown {
    fn __call__(&self, _watcher: &Bound<'_, PyAny>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A registered Python function, bound to the event loop of the executor running it.
pub(crate) struct PythonTask {
    definition: Arc<TaskDefinition>,
    event_loop: Option<EventLoop>,
}

impl PythonTask {
    /// A task for building and validating graphs; it cannot run async functions.
    pub(crate) fn unbound(definition: Arc<TaskDefinition>) -> Arc<dyn Task> {
        Arc::new(Self {
            definition,
            event_loop: None,
        })
    }

    /// A task that runs async functions on `event_loop`.
    pub(crate) fn bound(definition: Arc<TaskDefinition>, event_loop: EventLoop) -> Arc<dyn Task> {
        Arc::new(Self {
            definition,
            event_loop: Some(event_loop),
        })
    }
}

/// The process's `@task` functions as a worker's registry: async ones run on the event loop
/// that initialized the executor, and are no longer claimed once that loop is closed.
pub(crate) struct RegisteredTasks {
    pub event_loop: EventLoop,
}

impl RegisteredTasks {
    fn runnable(&self, definition: &TaskDefinition) -> bool {
        !definition.is_async || !self.event_loop.closed.load(Ordering::SeqCst)
    }
}

impl TaskRegistry for RegisteredTasks {
    fn get(&self, id: &str) -> Option<Arc<dyn Task>> {
        let definition = registry().get(id)?;
        Some(PythonTask::bound(definition, self.event_loop.clone()))
    }

    fn contains(&self, id: &str) -> bool {
        registry().get(id).is_some_and(|d| self.runnable(&d))
    }

    fn ids(&self) -> Vec<String> {
        let registry = registry();
        if !self.event_loop.closed.load(Ordering::SeqCst) {
            return registry.ids().to_vec();
        }
        let runnable = |id: &&String| registry.get(id).is_some_and(|d| self.runnable(&d));
        registry.ids().iter().filter(runnable).cloned().collect()
    }
}

impl Task for PythonTask {
    fn id(&self) -> &str {
        &self.definition.id
    }

    fn dependencies(&self) -> &[String] {
        &self.definition.dependencies
    }

    fn options(&self) -> &TaskOptions {
        &self.definition.options
    }

    fn execute(&self, context: Context) -> TaskFuture {
        let running = self.execute_shared(context.into());
        Box::pin(async move {
            running.await.map(|output| {
                output
                    .values
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value().clone()))
                    .collect()
            })
        })
    }

    fn execute_shared(&self, context: SharedInput) -> OutputFuture {
        let definition = self.definition.clone();
        let current = CurrentAttempt::get();
        if !definition.is_async {
            return Box::pin(async move {
                threads::run(move || {
                    with_python(|py| run_sync(py, &definition, &context, current))
                        .unwrap_or_else(|| Err(interpreter_exiting()))
                })
                .await
                .unwrap_or_else(|e| Err(TaskError::fatal(format!("RuntimeError: {e}"))))
            });
        }
        Box::pin(run_async(
            definition,
            self.event_loop.clone(),
            context,
            current,
        ))
    }
}

/// Runs an `async def` task's coroutine on its event loop and reads its result there.
async fn run_async(
    definition: Arc<TaskDefinition>,
    event_loop: Option<EventLoop>,
    context: SharedInput,
    current: Option<CurrentAttempt>,
) -> Result<Output, TaskError> {
    let Some(EventLoop { locals, closed, .. }) = event_loop else {
        return Err(TaskError::fatal(
            "RuntimeError: async task run without an event loop",
        ));
    };
    // Converting the context, calling the function and reading its result all happen on
    // the loop thread. Dropping `running` (timeout, cancellation) cancels the coroutine.
    let instance = current.as_ref().and_then(|c| c.map_index).is_some();
    let input: Arc<Mutex<Option<Py<PyDict>>>> = Arc::default();
    let (start_def, finish_def, kept) = (definition.clone(), definition.clone(), input.clone());
    let loop_for_call = locals.clone();
    let running = with_python(move |py| {
        let scope = current.map(|current| scope(py, current)).transpose()?;
        run_on_loop(
            py,
            &loop_for_call,
            scope,
            move |py| {
                let dict = values_to_py(py, &context)?;
                *kept.lock().unwrap_or_else(|p| p.into_inner()) = Some(dict.clone().unbind());
                start_def.function.call1(py, (dict,))
            },
            move |py, returned| {
                if let Err(err) = &returned {
                    if err.is_instance_of::<CancelledError>(py) {
                        return Err(stopped_outside(
                            "its coroutine was cancelled (is its event loop shutting down?)",
                        ));
                    }
                }
                let dict = input.lock().unwrap_or_else(|p| p.into_inner()).take();
                match (dict, returned) {
                    (Some(dict), returned) => {
                        task_output(py, &finish_def, returned, dict.bind(py), instance)
                    }
                    (None, Err(err)) => Err(python_error(py, &finish_def, &err)),
                    (None, Ok(_)) => Err(TaskError::fatal(
                        "RuntimeError: task started without its context",
                    )),
                }
            },
        )
    })
    .unwrap_or_else(|| Err(PyRuntimeError::new_err("the Python interpreter is exiting")))
    .map_err(|e| {
        with_python(|py| {
            let is_closed = locals
                .event_loop(py)
                .call_method0("is_closed")
                .and_then(|c| c.is_truthy())
                .unwrap_or(false);
            if is_closed {
                // This executor can run no async task any more: stop claiming them.
                closed.store(true, Ordering::SeqCst);
                return stopped_outside("its event loop is closed");
            }
            python_error(py, &definition, &e)
        })
        .unwrap_or_else(interpreter_exiting)
    })?;
    running
        .result()
        .await
        .unwrap_or_else(|| Err(stopped_outside("the event loop running it stopped")))
}

/// The task attempt whose code is running in this asyncio context, if any.
#[pyclass(frozen, name = "_CurrentTask", module = "cloacina")]
pub(crate) struct CurrentTask(pub CurrentAttempt);

static CURRENT_TASK: GILOnceCell<PyObject> = GILOnceCell::new();

/// The context variable holding the running task's [`CurrentTask`].
fn current_task_variable(py: Python<'_>) -> PyResult<&PyObject> {
    CURRENT_TASK.get_or_try_init(py, || {
        Ok(py
            .import_bound("contextvars")?
            .getattr("ContextVar")?
            .call1(("cloacina_current_task",))?
            .unbind())
    })
}

/// The variable and value a task's code runs with.
fn scope(py: Python<'_>, current: CurrentAttempt) -> PyResult<Scope> {
    let variable = current_task_variable(py)?.clone_ref(py);
    Ok((variable, Py::new(py, CurrentTask(current))?.into_py(py)))
}

/// The task attempt whose coroutine (or code it awaits) calls this, if any.
pub(crate) fn current_attempt(py: Python<'_>) -> PyResult<Option<CurrentAttempt>> {
    let value = current_task_variable(py)?.call_method1(py, "get", (py.None(),))?;
    Ok(value
        .bind(py)
        .downcast::<CurrentTask>()
        .ok()
        .map(|task| task.get().0.clone()))
}

/// The running task attempt: a dict of `execution_id`, `workflow_name`, `task_id`, `attempt`,
/// `map_index` and `snoozes`; raises RuntimeError outside a task.
#[pyfunction]
pub(crate) fn current_task(py: Python<'_>) -> PyResult<PyObject> {
    let Some(current) = current_attempt(py)? else {
        return Err(PyRuntimeError::new_err(
            "cloacina.current_task() was called outside a running task; call it from the code \
             of a @task function (or code it calls) while a worker runs it",
        ));
    };
    let dict = PyDict::new_bound(py);
    dict.set_item("execution_id", current.execution_id.to_string())?;
    dict.set_item("workflow_name", &*current.workflow_name)?;
    dict.set_item("task_id", &current.task_id)?;
    dict.set_item("attempt", current.attempt)?;
    dict.set_item("map_index", current.map_index)?;
    dict.set_item("snoozes", current.snoozes)?;
    Ok(dict.into_any().unbind())
}

/// A task attempt stopped by something outside the engine: it ends Cancelled, not Failed.
fn stopped_outside(why: &str) -> TaskError {
    TaskError {
        message: format!("stopped from outside the engine: {why}"),
        traceback: None,
        kind: TaskErrorKind::Cancelled,
    }
}

fn interpreter_exiting() -> TaskError {
    TaskError::fatal("RuntimeError: the Python interpreter is exiting")
}

/// Calls a sync task's function on this thread, with the current task's variable set when it
/// runs in an attempt (coroutines it hands to a loop inherit it).
fn run_sync(
    py: Python<'_>,
    definition: &TaskDefinition,
    context: &SharedInput,
    current: Option<CurrentAttempt>,
) -> Result<Output, TaskError> {
    let dict = values_to_py(py, context).map_err(|e| python_error(py, definition, &e))?;
    let instance = current.as_ref().and_then(|c| c.map_index).is_some();
    let returned = current
        .map(|current| scope(py, current))
        .transpose()
        .and_then(|scope| {
            call_in_scope(
                py,
                scope.as_ref(),
                definition.function.bind(py),
                dict.clone(),
            )
        })
        .map(Bound::unbind);
    task_output(py, definition, returned, &dict, instance)
}

/// What a task's return value means: a dict is its output; None keeps the (mutated) input dict.
/// A map instance's return value, whatever it is, is its value (`{"value": returned}`).
/// The output's objects are handed, not copied, to the next task of this process that reads them.
fn task_output(
    py: Python<'_>,
    definition: &TaskDefinition,
    returned: PyResult<PyObject>,
    input: &Bound<'_, PyDict>,
    instance: bool,
) -> Result<Output, TaskError> {
    let task_id = &definition.id;
    let returned = returned
        .map_err(|e| python_error(py, definition, &e))?
        .into_bound(py);
    let output = if instance {
        let value = PyDict::new_bound(py);
        value
            .set_item(crate::model::map::VALUE_KEY, returned)
            .map_err(|e| python_error(py, definition, &e))?;
        value.into_any()
    } else if returned.is_none() {
        input.as_any().clone()
    } else if returned.is_instance_of::<PyDict>() {
        returned
    } else {
        let message = format!(
            "task '{task_id}' returned {}; return a dict (merged into the context) or None",
            type_name(&returned)
        );
        return Err(python_error(py, definition, &PyTypeError::new_err(message)));
    };
    output_from_py(&output).map_err(|e| {
        let message = if instance {
            format!(
                "map instance of task '{task_id}' returned a value that is not JSON: {}",
                e.describe("value")
            )
        } else {
            format!(
                "task '{task_id}' produced a context that is not JSON: {}",
                e.describe("context")
            )
        };
        python_error(py, definition, &PyTypeError::new_err(message))
    })
}

/// The engine's view of a Python exception: `Type: message`, traceback, and whether to retry.
fn python_error(py: Python<'_>, definition: &TaskDefinition, err: &PyErr) -> TaskError {
    let value = err.value_bound(py);
    if err.is_instance_bound(py, skip_task_type(py)) {
        let reason = value.str().map(|s| s.to_string()).unwrap_or_default();
        return TaskError::skip(if reason.is_empty() {
            "skipped by the task".to_string()
        } else {
            reason
        });
    }
    if err.is_instance_bound(py, super::waits::snooze_type(py)) {
        return TaskError::snooze(super::waits::snoozed_for(value));
    }
    let type_name = err
        .get_type_bound(py)
        .qualname()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let text = value.str().map(|s| s.to_string()).unwrap_or_default();
    let message = if text.is_empty() {
        type_name
    } else {
        format!("{type_name}: {text}")
    };
    let traceback = py
        .import_bound("traceback")
        .and_then(|tb| {
            tb.call_method1(
                "format_exception",
                (err.get_type_bound(py), value, err.traceback_bound(py)),
            )
        })
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|lines| lines.concat())
        .ok();
    let retryable = value
        .is_instance(definition.retry_on.bind(py))
        .unwrap_or(false);
    TaskError {
        message,
        traceback,
        kind: if retryable {
            TaskErrorKind::Retryable
        } else {
            TaskErrorKind::Fatal
        },
    }
}

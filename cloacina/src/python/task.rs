//! Python functions as engine tasks: sync ones on worker threads, async ones on the caller's loop.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_asyncio_0_21::TaskLocals;

use super::bridge::{run_on_loop, with_python};
use super::errors::skip_task_type;
use super::marshal::{context_from_py, context_to_py, type_name};
use super::registry::{registry, TaskDefinition};
use crate::context::Context;
use crate::executor::TaskRegistry;
use crate::policy::TaskOptions;
use crate::task::{Task, TaskError, TaskErrorKind, TaskFuture};

/// A registered Python function, bound to the event loop of the `execute` call running it.
pub(crate) struct PythonTask {
    definition: Arc<TaskDefinition>,
    locals: Option<TaskLocals>,
}

impl PythonTask {
    /// A task for building and validating graphs; it cannot run async functions.
    pub(crate) fn unbound(definition: Arc<TaskDefinition>) -> Arc<dyn Task> {
        Arc::new(Self {
            definition,
            locals: None,
        })
    }

    /// A task that runs async functions on the event loop in `locals`.
    pub(crate) fn bound(definition: Arc<TaskDefinition>, locals: TaskLocals) -> Arc<dyn Task> {
        Arc::new(Self {
            definition,
            locals: Some(locals),
        })
    }
}

/// The process's `@task` functions as a worker's registry: async ones run on the event loop
/// that initialized the executor.
pub(crate) struct RegisteredTasks {
    pub locals: TaskLocals,
}

impl TaskRegistry for RegisteredTasks {
    fn get(&self, id: &str) -> Option<Arc<dyn Task>> {
        let definition = registry().get(id)?;
        Some(PythonTask::bound(definition, self.locals.clone()))
    }

    fn contains(&self, id: &str) -> bool {
        registry().get(id).is_some()
    }

    fn ids(&self) -> Vec<String> {
        registry().ids().to_vec()
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
        let definition = self.definition.clone();
        if !definition.is_async {
            return Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    with_python(|py| run_sync(py, &definition, &context))
                        .unwrap_or_else(|| Err(interpreter_exiting()))
                })
                .await
                .unwrap_or_else(|e| {
                    Err(TaskError::new(format!(
                        "RuntimeError: task thread failed: {e}"
                    )))
                })
            });
        }
        let locals = self.locals.clone();
        Box::pin(async move {
            let Some(locals) = locals else {
                return Err(TaskError::fatal(
                    "RuntimeError: async task run without an event loop",
                ));
            };
            // Converting the context, calling the function and reading its result all happen on
            // the loop thread. Dropping `running` (timeout, cancellation) cancels the coroutine.
            let input: Arc<Mutex<Option<Py<PyDict>>>> = Arc::default();
            let (start_def, finish_def, kept) =
                (definition.clone(), definition.clone(), input.clone());
            let running = with_python(move |py| {
                run_on_loop(
                    py,
                    &locals,
                    move |py| {
                        let dict = context_to_py(py, &context)?;
                        *kept.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(dict.clone().unbind());
                        start_def.function.call1(py, (dict,))
                    },
                    move |py, returned| {
                        let dict = input.lock().unwrap_or_else(|p| p.into_inner()).take();
                        match (dict, returned) {
                            (Some(dict), returned) => {
                                task_output(py, &finish_def, returned, dict.bind(py))
                            }
                            (None, Err(err)) => Err(python_error(py, &finish_def, &err)),
                            (None, Ok(_)) => Err(TaskError::fatal(
                                "RuntimeError: task started without its context",
                            )),
                        }
                    },
                )
                .map_err(|e| python_error(py, &definition, &e))
            })
            .unwrap_or_else(|| Err(interpreter_exiting()))?;
            running.result().await.unwrap_or_else(|| {
                Err(TaskError::fatal(
                    "RuntimeError: the event loop running the task stopped",
                ))
            })
        })
    }
}

fn interpreter_exiting() -> TaskError {
    TaskError::fatal("RuntimeError: the Python interpreter is exiting")
}

fn run_sync(
    py: Python<'_>,
    definition: &TaskDefinition,
    context: &Context,
) -> Result<Context, TaskError> {
    let dict = context_to_py(py, context).map_err(|e| python_error(py, definition, &e))?;
    let returned = definition.function.call1(py, (dict.clone(),));
    task_output(py, definition, returned, &dict)
}

/// What a task's return value means: a dict is its output; None keeps the (mutated) input dict.
fn task_output(
    py: Python<'_>,
    definition: &TaskDefinition,
    returned: PyResult<PyObject>,
    input: &Bound<'_, PyDict>,
) -> Result<Context, TaskError> {
    let task_id = &definition.id;
    let returned = returned
        .map_err(|e| python_error(py, definition, &e))?
        .into_bound(py);
    let output = if returned.is_none() {
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
    context_from_py(&output).map_err(|e| {
        let message = format!(
            "task '{task_id}' produced a context that is not JSON: {}",
            e.describe("context")
        );
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

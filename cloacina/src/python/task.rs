//! Python functions as engine tasks: sync ones on worker threads, async ones on the caller's loop.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_asyncio_0_21::TaskLocals;

use super::bridge::with_python;
use super::marshal::{context_from_py, context_to_py, type_name};
use super::registry::TaskDefinition;
use crate::context::Context;
use crate::task::{Task, TaskError, TaskFuture};

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

impl Task for PythonTask {
    fn id(&self) -> &str {
        &self.definition.id
    }

    fn dependencies(&self) -> &[String] {
        &self.definition.dependencies
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
                return Err(TaskError::new(
                    "RuntimeError: async task run without an event loop",
                ));
            };
            let (awaiting, dict) = with_python(|py| {
                let dict = context_to_py(py, &context).map_err(|e| python_error(py, &e))?;
                let coroutine = definition
                    .function
                    .call1(py, (dict.clone(),))
                    .map_err(|e| python_error(py, &e))?;
                let awaiting =
                    pyo3_asyncio_0_21::into_future_with_locals(&locals, coroutine.into_bound(py))
                        .map_err(|e| python_error(py, &e))?;
                Ok::<_, TaskError>((awaiting, dict.unbind()))
            })
            .unwrap_or_else(|| Err(interpreter_exiting()))?;
            let returned = awaiting.await;
            with_python(|py| task_output(py, &definition.id, returned, dict.bind(py)))
                .unwrap_or_else(|| Err(interpreter_exiting()))
        })
    }
}

fn interpreter_exiting() -> TaskError {
    TaskError::new("RuntimeError: the Python interpreter is exiting")
}

fn run_sync(
    py: Python<'_>,
    definition: &TaskDefinition,
    context: &Context,
) -> Result<Context, TaskError> {
    let dict = context_to_py(py, context).map_err(|e| python_error(py, &e))?;
    let returned = definition.function.call1(py, (dict.clone(),));
    task_output(py, &definition.id, returned, &dict)
}

/// What a task's return value means: a dict is its output; None keeps the (mutated) input dict.
fn task_output(
    py: Python<'_>,
    task_id: &str,
    returned: PyResult<PyObject>,
    input: &Bound<'_, PyDict>,
) -> Result<Context, TaskError> {
    let returned = returned.map_err(|e| python_error(py, &e))?.into_bound(py);
    let output = if returned.is_none() {
        input.as_any().clone()
    } else if returned.is_instance_of::<PyDict>() {
        returned
    } else {
        return Err(TaskError::new(format!(
            "TypeError: task '{task_id}' returned {}; return a dict (merged into the context) or None",
            type_name(&returned)
        )));
    };
    context_from_py(&output).map_err(|e| {
        TaskError::new(format!(
            "TypeError: task '{task_id}' produced a context that is not JSON: {}",
            e.describe("context")
        ))
    })
}

/// `Type: message` and the formatted traceback of a Python exception.
pub(crate) fn python_error(py: Python<'_>, err: &PyErr) -> TaskError {
    let type_name = err
        .get_type_bound(py)
        .qualname()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let text = err
        .value_bound(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
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
                (
                    err.get_type_bound(py),
                    err.value_bound(py),
                    err.traceback_bound(py),
                ),
            )
        })
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|lines| lines.concat())
        .ok();
    TaskError { message, traceback }
}

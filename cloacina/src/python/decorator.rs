//! The `@task` decorator.

use std::collections::HashSet;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::marshal::type_name;
use pyo3::types::{PyList, PyString, PyTuple};

use super::registry::{registry, TaskDefinition};

/// Attribute set on decorated functions, holding their task id.
pub(crate) const TASK_ID_ATTR: &str = "__cloacina_task_id__";

/// Registers a function as a task. Use as `@task`, `@task("id")` or `@task(dependencies=[...])`.
///
/// Re-registering an id replaces the earlier definition for workflows built afterwards.
#[pyfunction]
#[pyo3(signature = (task_id=None, *, dependencies=None), text_signature = "(task_id=None, *, dependencies=())")]
pub(crate) fn task(
    py: Python<'_>,
    task_id: Option<Bound<'_, PyAny>>,
    dependencies: Option<Bound<'_, PyAny>>,
) -> PyResult<PyObject> {
    let dependencies = match dependencies {
        Some(deps) => {
            let mut seen = HashSet::new();
            task_ids(&deps)?
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .collect()
        }
        None => Vec::new(),
    };
    match task_id {
        Some(function) if function.is_callable() && !function.is_instance_of::<PyString>() => {
            Ok(register(&function, None, dependencies)?.unbind())
        }
        Some(id) => {
            let id = id
                .downcast::<PyString>()
                .map_err(|_| {
                    PyTypeError::new_err(format!("task_id must be a str, got {}", type_name(&id)))
                })?
                .to_cow()?
                .into_owned();
            validate_id(&id)?;
            Ok(TaskDecorator {
                task_id: Some(id),
                dependencies,
            }
            .into_py(py))
        }
        None => Ok(TaskDecorator {
            task_id: None,
            dependencies,
        }
        .into_py(py)),
    }
}

/// What `task(...)` returns: call it on the function to register.
#[pyclass(module = "cloacina", frozen)]
pub(crate) struct TaskDecorator {
    task_id: Option<String>,
    dependencies: Vec<String>,
}

#[pymethods]
impl TaskDecorator {
    fn __call__<'py>(&self, function: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        register(&function, self.task_id.clone(), self.dependencies.clone())
    }

    fn __repr__(&self) -> String {
        format!(
            "task({:?}, dependencies={:?})",
            self.task_id, self.dependencies
        )
    }
}

fn register<'py>(
    function: &Bound<'py, PyAny>,
    task_id: Option<String>,
    dependencies: Vec<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = function.py();
    if !function.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "@task must decorate a function, got {}",
            function.repr()?
        )));
    }
    let id = match task_id {
        Some(id) => id,
        None => function
            .getattr("__name__")
            .and_then(|n| n.extract::<String>())
            .map_err(|_| {
                PyTypeError::new_err(
                    "this callable has no __name__; pass task_id explicitly: @task(\"my_task\")",
                )
            })?,
    };
    validate_id(&id)?;
    if dependencies.contains(&id) {
        return Err(PyValueError::new_err(format!(
            "task '{id}' cannot depend on itself"
        )));
    }
    let inspect = py.import_bound("inspect")?;
    let is_async = inspect
        .call_method1("iscoroutinefunction", (function,))?
        .is_truthy()?;
    check_takes_one_argument(&inspect, function, &id)?;
    function.setattr(TASK_ID_ATTR, &id).map_err(|e| {
        PyTypeError::new_err(format!(
            "cannot register {} as task '{id}': {e}",
            function.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })?;
    registry().register(TaskDefinition {
        id,
        dependencies,
        function: function.clone().unbind(),
        is_async,
    });
    Ok(function.clone())
}

/// A task is called with exactly one positional argument, the context dict.
fn check_takes_one_argument(
    inspect: &Bound<'_, PyModule>,
    function: &Bound<'_, PyAny>,
    id: &str,
) -> PyResult<()> {
    let Ok(signature) = inspect.call_method1("signature", (function,)) else {
        return Ok(()); // builtins without a signature are checked when called
    };
    if signature
        .call_method1("bind", (function.py().None(),))
        .is_err()
    {
        return Err(PyTypeError::new_err(format!(
            "task '{id}' must take exactly one argument, the context dict; its signature is {}",
            signature.str()?
        )));
    }
    Ok(())
}

fn validate_id(id: &str) -> PyResult<()> {
    if id.trim().is_empty() {
        return Err(PyValueError::new_err("task_id must be a non-empty string"));
    }
    Ok(())
}

/// Task ids from a list of ids and decorated functions, in order, repeats included.
pub(crate) fn task_ids(items: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if !(items.is_instance_of::<PyList>() || items.is_instance_of::<PyTuple>()) {
        return Err(PyTypeError::new_err(format!(
            "expected a list of task ids or @task functions, got {}",
            type_name(items)
        )));
    }
    items.iter()?.map(|item| task_id_of(&item?)).collect()
}

/// The id of a task given as an id or as a decorated function.
pub(crate) fn task_id_of(item: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(id) = item.downcast::<PyString>() {
        let id = id.to_cow()?.into_owned();
        validate_id(&id)?;
        return Ok(id);
    }
    if let Ok(id) = item.getattr(TASK_ID_ATTR) {
        return id.extract();
    }
    if item.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "{} is not a task; decorate it with @task first",
            item.repr()?
        )));
    }
    Err(PyTypeError::new_err(format!(
        "expected a task id (str) or an @task function, got {}",
        type_name(item)
    )))
}

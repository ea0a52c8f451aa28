//! The `@task` decorator.

use std::collections::HashSet;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::marshal::type_name;
use super::options::{RawOptions, TaskSettings};
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::registry::{registry, TaskDefinition};

/// Attribute set on decorated functions, holding their task id.
pub(crate) const TASK_ID_ATTR: &str = "__cloacina_task_id__";

/// Registers a function as a task. Use as `@task`, `@task("id")` or `@task(dependencies=[...], retries=3)`.
///
/// Re-registering an id replaces the earlier definition for workflows built afterwards.
#[pyfunction]
#[pyo3(
    signature = (task_id=None, **options),
    text_signature = "(task_id=None, *, dependencies=(), retries=0, retry_delay=1.0, retry_backoff=2.0, retry_max_delay=60.0, retry_jitter=0.0, retry_on=(Exception,), timeout=None, trigger_rule='all_success', map_over=None, map_item='item', map_limit=None, collect_as=None, limits=(), priority=0)"
)]
pub(crate) fn task<'py>(
    py: Python<'py>,
    task_id: Option<Bound<'py, PyAny>>,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<PyObject> {
    let raw = RawOptions::from_kwargs(options)?;
    let dependencies = match &raw.dependencies {
        Some(deps) if !deps.is_none() => {
            let mut seen = HashSet::new();
            task_ids(deps)?
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .collect()
        }
        _ => Vec::new(),
    };
    let settings = raw.validate(py)?;
    let (task_id, function) = match task_id {
        Some(function) if function.is_callable() && !function.is_instance_of::<PyString>() => {
            (None, Some(function))
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
            (Some(id), None)
        }
        None => (None, None),
    };
    let decorator = TaskDecorator {
        task_id,
        dependencies,
        settings,
    };
    match function {
        Some(function) => Ok(decorator.__call__(function)?.unbind()),
        None => Ok(decorator.into_py(py)),
    }
}

/// What `task(...)` returns: call it on the function to register.
#[pyclass(module = "cloacina", frozen)]
pub(crate) struct TaskDecorator {
    task_id: Option<String>,
    dependencies: Vec<String>,
    settings: TaskSettings,
}

#[pymethods]
impl TaskDecorator {
    fn __call__<'py>(&self, function: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = function.py();
        if !function.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "@task must decorate a function, got {}",
                function.repr()?
            )));
        }
        let id = match &self.task_id {
            Some(id) => id.clone(),
            None => function
                .getattr("__name__")
                .and_then(|n| n.extract::<String>())
                .map_err(|_| PyTypeError::new_err("this callable has no __name__; pass task_id explicitly: @task(\"my_task\")"))?,
        };
        validate_id(&id)?;
        if self.dependencies.contains(&id) {
            return Err(PyValueError::new_err(format!(
                "task '{id}' cannot depend on itself"
            )));
        }
        let inspect = py.import_bound("inspect")?;
        let is_async = inspect
            .call_method1("iscoroutinefunction", (&function,))?
            .is_truthy()?;
        check_takes_one_argument(&inspect, &function, &id)?;
        function.setattr(TASK_ID_ATTR, &id).map_err(|e| {
            PyTypeError::new_err(format!(
                "cannot register {} as task '{id}': {e}",
                function.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let replaced = registry().register(TaskDefinition {
            id,
            dependencies: self.dependencies.clone(),
            function: function.clone().unbind(),
            is_async,
            options: self.settings.options.clone(),
            retry_on: self.settings.retry_on.clone_ref(py),
        });
        drop(replaced);
        Ok(function)
    }

    fn __repr__(&self) -> String {
        format!(
            "task({:?}, dependencies={:?})",
            self.task_id, self.dependencies
        )
    }
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
    if id.contains('\0') {
        return Err(PyValueError::new_err(format!(
            "task_id {id:?} contains a NUL character; databases cannot store it, remove it"
        )));
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

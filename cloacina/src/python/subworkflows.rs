//! Sub-workflows in Python: `subworkflow(workflow, ...)` registers a task that runs `workflow`
//! as a child execution and returns a reference to it.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::args;
use super::errors::{new_err, ErrorKind};
use super::marshal::type_name;
use super::options::RawOptions;
use super::waits::{register_task_ref, seconds_arg, TaskRef};
use super::workflow::PyWorkflow;
use crate::limits::EVENT_TIMEOUT;
use crate::model::subworkflows::{check_nesting, Subworkflow};

/// Registers a task that runs `workflow` as a child execution and completes with the child's
/// final context as `{task_id: context}`; returns a reference to it.
#[pyfunction]
#[pyo3(signature = (workflow, *, task_id=None, dependencies=None, input_keys=None, map_over=None, map_item=None, retries=None, timeout=None), text_signature = "(workflow, *, task_id=None, dependencies=(), input_keys=None, map_over=None, map_item='item', retries=0, timeout=None)")]
#[allow(clippy::too_many_arguments)] // the Python signature the issue names
pub(crate) fn subworkflow(
    py: Python<'_>,
    workflow: &Bound<'_, PyAny>,
    task_id: Option<&Bound<'_, PyAny>>,
    dependencies: Option<&Bound<'_, PyAny>>,
    input_keys: Option<&Bound<'_, PyAny>>,
    map_over: Option<&Bound<'_, PyAny>>,
    map_item: Option<&Bound<'_, PyAny>>,
    retries: Option<&Bound<'_, PyAny>>,
    timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<TaskRef>> {
    let child = workflow.downcast::<PyWorkflow>().map_err(|_| {
        PyTypeError::new_err(format!(
            "subworkflow() takes a cloacina.Workflow, got {}",
            type_name(workflow)
        ))
    })?;
    let graph = child.get().graph();
    let id = match task_id.filter(|t| !t.is_none()) {
        Some(id) => args::text("task_id", "a str", id)?.into_owned(),
        None => graph.name().to_string(),
    };
    // The options @task shares: dependencies, retries, the map.
    let kwargs = PyDict::new_bound(py);
    for (name, value) in [
        ("dependencies", dependencies),
        ("retries", retries),
        ("map_over", map_over),
        ("map_item", map_item),
    ] {
        if let Some(value) = value.filter(|v| !v.is_none()) {
            kwargs.set_item(name, value)?;
        }
    }
    let raw = RawOptions::from_kwargs(Some(&kwargs))?;
    let mut settings = raw.validate(py)?;
    let dependencies = match &raw.dependencies {
        Some(deps) => super::decorator::task_ids(deps)?,
        None => Vec::new(),
    };
    let input_keys = match input_keys.filter(|k| !k.is_none()) {
        None => None,
        Some(keys) => Some(key_list(keys)?),
    };
    let timeout = match timeout.filter(|t| !t.is_none()) {
        Some(timeout) => Some(seconds_arg(&EVENT_TIMEOUT, timeout)?),
        None => None,
    };
    let plan = graph.plan();
    check_nesting(graph.name(), &plan).map_err(|e| new_err(ErrorKind::Workflow, e))?;
    settings.options.subworkflow = Some(Subworkflow {
        workflow_name: graph.name().to_string(),
        workflow_version: graph.version().to_string(),
        plan,
        input_keys,
        timeout,
    });
    register_task_ref(py, id, dependencies, settings.options)
}

/// `input_keys`: a list or tuple of str.
fn key_list(keys: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if !(keys.is_instance_of::<PyList>() || keys.is_instance_of::<PyTuple>()) {
        return Err(PyTypeError::new_err(format!(
            "input_keys must be a list of str (context keys), got {}",
            type_name(keys)
        )));
    }
    let keys: Vec<String> = keys
        .iter()?
        .map(|key| Ok(args::text("input_keys item", "a str", &key?)?.into_owned()))
        .collect::<PyResult<_>>()?;
    if let Some(empty) = keys.iter().find(|k| k.is_empty()) {
        return Err(PyValueError::new_err(format!(
            "input_keys holds an empty key {empty:?}; name context keys"
        )));
    }
    Ok(keys)
}

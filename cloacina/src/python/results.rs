//! Execution and worker records as the dicts the Python API returns.

use chrono::{DateTime, SecondsFormat, Utc};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::json_text::json_to_py;
use super::marshal::values_to_py;
use crate::database::leases::WorkerInfo;
use crate::model::{ExecutionResult, InstanceResult, MapCounts, TaskResult};

/// A time as the API shows it: ISO 8601 with microseconds and the UTC offset.
pub(crate) fn iso(time: Option<DateTime<Utc>>) -> Option<String> {
    time.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, false))
}

/// An execution record on its way to Python, converted to a dict when the GIL is held.
pub(crate) struct ExecutionRecord(pub ExecutionResult);

impl IntoPy<PyObject> for ExecutionRecord {
    fn into_py(self, py: Python<'_>) -> PyObject {
        execution_to_py(py, &self.0).unwrap_or_else(|err| err.into_value(py).into_py(py))
    }
}

/// The dict for one execution: ids, status, contexts, timestamps and `task_results`.
pub(crate) fn execution_to_py(py: Python<'_>, execution: &ExecutionResult) -> PyResult<PyObject> {
    let dict = PyDict::new_bound(py);
    dict.set_item("execution_id", execution.execution_id.to_string())?;
    dict.set_item("workflow_name", &execution.workflow_name)?;
    dict.set_item("workflow_version", &execution.workflow_version)?;
    dict.set_item("status", execution.status.as_str())?;
    dict.set_item(
        "input_context",
        json_to_py(py, execution.input_context.json())?,
    )?;
    let final_context = match &execution.final_context {
        // Built by this process: its values, and the objects no task has taken, without decoding.
        Some(context) => match context.values() {
            Some(values) => values_to_py(py, values)?.into_any().unbind(),
            None => json_to_py(py, context.json())?,
        },
        None => py.None(),
    };
    dict.set_item("final_context", final_context)?;
    dict.set_item("error", &execution.error)?;
    dict.set_item("reason", &execution.reason)?;
    dict.set_item(
        "parent_execution_id",
        execution.parent_execution_id.map(|p| p.to_string()),
    )?;
    dict.set_item("parent_task_id", &execution.parent_task_id)?;
    dict.set_item("started_at", iso(Some(execution.started_at)))?;
    dict.set_item("completed_at", iso(execution.completed_at))?;
    let tasks = PyList::empty_bound(py);
    for task in &execution.task_results {
        tasks.append(task_to_py(py, task)?)?;
    }
    dict.set_item("task_results", tasks)?;
    Ok(dict.into_any().unbind())
}

/// A worker on its way to Python, converted to a dict when the GIL is held.
pub(crate) struct WorkerRecord(pub WorkerInfo);

impl IntoPy<PyObject> for WorkerRecord {
    fn into_py(self, py: Python<'_>) -> PyObject {
        worker_to_py(py, &self.0).unwrap_or_else(|err| err.into_value(py).into_py(py))
    }
}

fn worker_to_py(py: Python<'_>, worker: &WorkerInfo) -> PyResult<PyObject> {
    let dict = PyDict::new_bound(py);
    dict.set_item("worker_id", &worker.id)?;
    dict.set_item("hostname", &worker.hostname)?;
    dict.set_item("pid", worker.pid)?;
    dict.set_item("task_ids", &worker.task_ids)?;
    dict.set_item("started_at", iso(Some(worker.started_at)))?;
    dict.set_item("heartbeat_at", iso(Some(worker.heartbeat_at)))?;
    dict.set_item("alive", worker.alive)?;
    let running = PyList::empty_bound(py);
    for (execution_id, task_id) in &worker.running {
        let entry = PyDict::new_bound(py);
        entry.set_item("execution_id", execution_id.to_string())?;
        entry.set_item("task_id", task_id)?;
        running.append(entry)?;
    }
    dict.set_item("running", running)?;
    Ok(dict.into_any().unbind())
}

fn task_to_py<'py>(py: Python<'py>, task: &TaskResult) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new_bound(py);
    dict.set_item("task_id", &task.task_id)?;
    dict.set_item("dependencies", &task.dependencies)?;
    dict.set_item("status", task.status.as_str())?;
    dict.set_item("attempts", task.attempts)?;
    dict.set_item("error", &task.error)?;
    dict.set_item("traceback", &task.traceback)?;
    dict.set_item("reason", &task.reason)?;
    dict.set_item("started_at", iso(task.started_at))?;
    dict.set_item("completed_at", iso(task.completed_at))?;
    let history = PyList::empty_bound(py);
    for attempt in &task.history {
        let entry = PyDict::new_bound(py);
        entry.set_item("attempt", attempt.attempt)?;
        entry.set_item("status", attempt.status.as_str())?;
        entry.set_item("error", &attempt.error)?;
        entry.set_item("started_at", iso(Some(attempt.started_at)))?;
        entry.set_item("completed_at", iso(Some(attempt.completed_at)))?;
        history.append(entry)?;
    }
    dict.set_item("history", history)?;
    dict.set_item(
        "child_execution_id",
        task.child_execution_id.map(|c| c.to_string()),
    )?;
    let map = task
        .map
        .as_ref()
        .map(|counts| map_to_py(py, counts))
        .transpose()?;
    dict.set_item("map", map)?;
    Ok(dict)
}

/// A mapped task's instance counts.
fn map_to_py<'py>(py: Python<'py>, counts: &MapCounts) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new_bound(py);
    for (name, value) in MapCounts::NAMES.into_iter().zip(counts.values()) {
        dict.set_item(name, value)?;
    }
    Ok(dict)
}

/// An instance of a mapped task on its way to Python, converted when the GIL is held.
pub(crate) struct InstanceRecord(pub InstanceResult);

impl IntoPy<PyObject> for InstanceRecord {
    fn into_py(self, py: Python<'_>) -> PyObject {
        instance_to_py(py, &self.0)
            .map(|d| d.into_any().unbind())
            .unwrap_or_else(|err| err.into_value(py).into_py(py))
    }
}

fn instance_to_py<'py>(py: Python<'py>, instance: &InstanceResult) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new_bound(py);
    dict.set_item("map_index", instance.map_index)?;
    dict.set_item("status", instance.status.as_str())?;
    dict.set_item("attempts", instance.attempts)?;
    dict.set_item("error", &instance.error)?;
    dict.set_item("started_at", iso(instance.started_at))?;
    dict.set_item("completed_at", iso(instance.completed_at))?;
    dict.set_item(
        "child_execution_id",
        instance.child_execution_id.map(|c| c.to_string()),
    )?;
    Ok(dict)
}

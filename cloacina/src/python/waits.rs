//! Durable waits in Python: `sleep` and `wait_for_event` register wait tasks and return a
//! [`TaskRef`]; `Snooze` is raised inside a task to run it again later; `send_event`'s payload.

use std::collections::HashSet;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use super::args;
use super::decorator::task_ids;
use super::marshal::{context_from_py, type_name};
use super::registry::{registry, TaskDefinition};
use crate::limits::{Seconds, EVENT_TIMEOUT, SLEEP_SECONDS, SNOOZE_SECONDS};
use crate::model::limits::KeyTemplate;
use crate::model::waits::{parse_instant, OnTimeout, SleepUntil, WaitFor};
use crate::policy::TaskOptions;

/// A registered wait or sub-workflow task, usable in `dependencies` and `Workflow(tasks=...)` like a decorated
/// function.
#[pyclass(module = "cloacina", name = "TaskRef", frozen)]
pub(crate) struct TaskRef {
    /// The task's id.
    #[pyo3(get)]
    task_id: String,
    /// What the engine does for it: "wait" or "sub-workflow".
    kind: &'static str,
}

#[pymethods]
impl TaskRef {
    /// The task's id, as decorated functions carry it.
    #[getter(__cloacina_task_id__)]
    fn cloacina_task_id(&self) -> String {
        self.task_id.clone()
    }

    fn __repr__(&self) -> String {
        format!("<cloacina {} task '{}'>", self.kind, self.task_id)
    }
}

/// A number of seconds or a `timedelta`, within `rule`'s range.
pub(crate) fn seconds_arg(rule: &Seconds, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let timedelta = value.py().import_bound("datetime")?.getattr("timedelta")?;
    if value.is_instance(&timedelta)? {
        let seconds: f64 = value.call_method0("total_seconds")?.extract()?;
        return args::seconds(rule, &seconds.into_py(value.py()).into_bound(value.py()));
    }
    args::seconds(rule, value)
}

/// The id and dependencies of a wait task, checked.
fn id_and_dependencies(
    task_id: &Bound<'_, PyAny>,
    dependencies: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, Vec<String>)> {
    let id = args::text("task_id", "a str", task_id)?.into_owned();
    if id.trim().is_empty() {
        return Err(PyValueError::new_err("task_id must be a non-empty string"));
    }
    let mut seen = HashSet::new();
    let dependencies: Vec<String> = match dependencies.filter(|d| !d.is_none()) {
        Some(deps) => task_ids(deps)?
            .into_iter()
            .filter(|d| seen.insert(d.clone()))
            .collect(),
        None => Vec::new(),
    };
    if dependencies.contains(&id) {
        return Err(PyValueError::new_err(format!(
            "task '{id}' cannot depend on itself"
        )));
    }
    Ok((id, dependencies))
}

/// Registers wait task `id` waiting for `wait`; its reference.
fn register_wait(
    py: Python<'_>,
    id: String,
    dependencies: Vec<String>,
    wait: WaitFor,
) -> PyResult<Py<TaskRef>> {
    let options = TaskOptions {
        wait: Some(wait),
        ..TaskOptions::new()
    };
    register_task_ref(py, id, dependencies, options)
}

/// Registers task `id`, run by the engine itself as `options` say (a wait, a sub-workflow), not
/// by a Python function; its reference.
pub(crate) fn register_task_ref(
    py: Python<'_>,
    id: String,
    dependencies: Vec<String>,
    options: TaskOptions,
) -> PyResult<Py<TaskRef>> {
    if id.trim().is_empty() {
        return Err(PyValueError::new_err("task_id must be a non-empty string"));
    }
    if dependencies.contains(&id) {
        return Err(PyValueError::new_err(format!(
            "task '{id}' cannot depend on itself"
        )));
    }
    let reference = Py::new(
        py,
        TaskRef {
            task_id: id.clone(),
            kind: match options.subworkflow {
                Some(_) => "sub-workflow",
                None => "wait",
            },
        },
    )?;
    let replaced = registry().register(TaskDefinition {
        id,
        dependencies,
        function: reference.clone_ref(py).into_any(),
        is_async: false,
        options,
        retry_on: PyTuple::empty_bound(py).unbind(),
    });
    drop(replaced);
    Ok(reference)
}

/// When a sleep ends, from `until`: an aware datetime, an ISO 8601 string, or `"{key}"`.
fn until_arg(until: &Bound<'_, PyAny>) -> PyResult<SleepUntil> {
    if let Ok(text) = until.downcast::<PyString>() {
        let text = text.to_cow()?;
        if let Some(key) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            if key.trim().is_empty() || key.contains(['{', '}']) {
                return Err(PyValueError::new_err(format!(
                    "until={text:?} names no context key; write \"{{remind_at}}\" to read the instant from the context key remind_at"
                )));
            }
            return Ok(SleepUntil::AtKey(key.to_string()));
        }
        return parse_instant(&text)
            .map(SleepUntil::At)
            .map_err(|e| PyValueError::new_err(format!("until: {e}")));
    }
    let datetime = until.py().import_bound("datetime")?.getattr("datetime")?;
    if !until.is_instance(&datetime)? {
        return Err(PyTypeError::new_err(format!(
            "until must be a timezone-aware datetime, an ISO 8601 str or \"{{key}}\", got {}",
            type_name(until)
        )));
    }
    if until.call_method0("utcoffset")?.is_none() {
        return Err(PyValueError::new_err(format!(
            "until={} has no time zone; pass an aware datetime such as datetime.now(timezone.utc) + timedelta(days=1)",
            until.repr()?
        )));
    }
    let text: String = until.call_method0("isoformat")?.extract()?;
    parse_instant(&text)
        .map(SleepUntil::At)
        .map_err(|e| PyValueError::new_err(format!("until: {e}")))
}

/// Registers a task that completes `seconds` after it becomes ready, or at `until`, holding no
/// worker while it waits; returns a reference to it.
#[pyfunction]
#[pyo3(signature = (task_id, seconds=None, *, until=None, dependencies=None), text_signature = "(task_id, seconds=None, *, until=None, dependencies=())")]
pub(crate) fn sleep(
    py: Python<'_>,
    task_id: &Bound<'_, PyAny>,
    seconds: Option<&Bound<'_, PyAny>>,
    until: Option<&Bound<'_, PyAny>>,
    dependencies: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<TaskRef>> {
    let (id, dependencies) = id_and_dependencies(task_id, dependencies)?;
    let seconds = seconds.filter(|s| !s.is_none());
    let until = until.filter(|u| !u.is_none());
    let wait = match (seconds, until) {
        (Some(seconds), None) => SleepUntil::After(seconds_arg(&SLEEP_SECONDS, seconds)?),
        (None, Some(until)) => until_arg(until)?,
        (Some(_), Some(_)) => {
            return Err(PyValueError::new_err(format!(
                "sleep task '{id}' got both seconds and until; pass one of them"
            )))
        }
        (None, None) => {
            return Err(PyValueError::new_err(format!(
                "sleep task '{id}' needs seconds (a number or timedelta) or until (a datetime, ISO 8601 str or \"{{key}}\")"
            )))
        }
    };
    register_wait(py, id, dependencies, WaitFor::Sleep(wait))
}

/// Registers a task that completes when an event with `key` is sent (`{name}` parts filled from
/// its input), with the event's payload as its output `{task_id: payload}`; returns a
/// reference to it.
#[pyfunction]
#[pyo3(signature = (task_id, *, key, timeout=None, on_timeout=None, dependencies=None), text_signature = "(task_id, *, key, timeout=None, on_timeout='fail', dependencies=())")]
pub(crate) fn wait_for_event(
    py: Python<'_>,
    task_id: &Bound<'_, PyAny>,
    key: &Bound<'_, PyAny>,
    timeout: Option<&Bound<'_, PyAny>>,
    on_timeout: Option<&Bound<'_, PyAny>>,
    dependencies: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<TaskRef>> {
    let (id, dependencies) = id_and_dependencies(task_id, dependencies)?;
    let key = args::text("key", "a str such as \"approve:{order_id}\"", key)?;
    let key = KeyTemplate::parse_event(&key).map_err(PyValueError::new_err)?;
    let timeout = match timeout.filter(|t| !t.is_none()) {
        Some(timeout) => Some(seconds_arg(&EVENT_TIMEOUT, timeout)?),
        None => None,
    };
    let on_timeout = match on_timeout.filter(|m| !m.is_none()) {
        Some(mode) => {
            let mode = args::text("on_timeout", "\"fail\", \"skip\" or \"continue\"", mode)?;
            OnTimeout::parse(&mode).map_err(PyValueError::new_err)?
        }
        None => OnTimeout::Fail,
    };
    let wait = WaitFor::Event {
        key,
        timeout,
        on_timeout,
    };
    register_wait(py, id, dependencies, wait)
}

/// Checks a snooze's delay: seconds (a number or timedelta, at least 0) as a float.
#[pyfunction]
fn check_snooze(seconds: &Bound<'_, PyAny>) -> PyResult<f64> {
    Ok(seconds_arg(&SNOOZE_SECONDS, seconds)?.as_secs_f64())
}

static SNOOZE: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// The Python source of `Snooze`; `_check` is [`check_snooze`].
const SNOOZE_SOURCE: &str = r#"
class Snooze(Exception):
    """Raise inside a task to end this attempt without failing and run the task again after
    `seconds` (a number or timedelta) on any worker, holding nothing meanwhile; no retry is
    used."""

    def __init__(self, seconds):
        seconds = _check(seconds)
        super().__init__(seconds)
        self.seconds = seconds

    def __str__(self):
        return f"snoozed for {self.seconds:g} s"
"#;

/// `Snooze`: raised inside a task to run it again later. Not an error, so not a CloacinaError.
pub(crate) fn snooze_type(py: Python<'_>) -> &Bound<'_, PyType> {
    SNOOZE
        .get_or_try_init(py, || -> PyResult<Py<PyType>> {
            let namespace = PyDict::new_bound(py);
            namespace.set_item("_check", wrap_pyfunction_bound!(check_snooze, py)?)?;
            namespace.set_item("__name__", "cloacina")?;
            py.run_bound(SNOOZE_SOURCE, Some(&namespace), None)?;
            let class = namespace
                .get_item("Snooze")?
                .expect("the source defines Snooze")
                .downcast_into::<PyType>()?;
            Ok(class.unbind())
        })
        .expect("creating Snooze cannot fail")
        .bind(py)
}

/// How long a raised `Snooze` asks to wait.
pub(crate) fn snoozed_for(value: &Bound<'_, PyAny>) -> Duration {
    value
        .getattr("seconds")
        .and_then(|s| s.extract::<f64>())
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or_default()
}

/// An event's payload as JSON text; TypeError when it is not JSON.
pub(crate) fn payload_json(py: Python<'_>, payload: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
    let Some(payload) = payload else {
        return Ok("null".to_string());
    };
    let wrapper = PyDict::new_bound(py);
    wrapper.set_item("payload", payload)?;
    let context = context_from_py(wrapper.as_any()).map_err(|e| {
        PyTypeError::new_err(format!(
            "{}; send a JSON value (dict, list, str, number, bool or None)",
            e.describe("context")
                .replacen("context['payload']", "payload", 1)
        ))
    })?;
    let value = context.get("payload").cloned().unwrap_or_default();
    Ok(value.to_string())
}

/// Adds the wait API to a backend's module.
pub(crate) fn add_to_module(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add_class::<TaskRef>()?;
    module.add_function(wrap_pyfunction!(sleep, module)?)?;
    module.add_function(wrap_pyfunction!(wait_for_event, module)?)?;
    module.add_function(wrap_pyfunction!(super::subworkflows::subworkflow, module)?)?;
    module.add("Snooze", snooze_type(py))?;
    Ok(())
}

//! Parsing and validating the keyword options of `@task`.

use pyo3::exceptions::{PyException, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use super::args;
use super::marshal::type_name;
use crate::limits;
use crate::policy::{MapOptions, RetryPolicy, TaskOptions, TriggerRule};

/// The validated keyword options of one `@task(...)` call.
pub(crate) struct TaskSettings {
    pub options: TaskOptions,
    pub retry_on: Py<PyTuple>,
}

/// The options as passed to `task(...)`, still Python objects.
#[derive(Default)]
pub(crate) struct RawOptions<'py> {
    pub dependencies: Option<Bound<'py, PyAny>>,
    pub retries: Option<Bound<'py, PyAny>>,
    pub retry_delay: Option<Bound<'py, PyAny>>,
    pub retry_backoff: Option<Bound<'py, PyAny>>,
    pub retry_max_delay: Option<Bound<'py, PyAny>>,
    pub retry_jitter: Option<Bound<'py, PyAny>>,
    pub retry_on: Option<Bound<'py, PyAny>>,
    pub timeout: Option<Bound<'py, PyAny>>,
    pub trigger_rule: Option<Bound<'py, PyAny>>,
    pub map_over: Option<Bound<'py, PyAny>>,
    pub map_item: Option<Bound<'py, PyAny>>,
    pub map_limit: Option<Bound<'py, PyAny>>,
    pub collect_as: Option<Bound<'py, PyAny>>,
    pub limits: Option<Bound<'py, PyAny>>,
    pub priority: Option<Bound<'py, PyAny>>,
}

/// Every keyword `task()` accepts.
const OPTION_NAMES: [&str; 15] = [
    "dependencies",
    "retries",
    "retry_delay",
    "retry_backoff",
    "retry_max_delay",
    "retry_jitter",
    "retry_on",
    "timeout",
    "trigger_rule",
    "map_over",
    "map_item",
    "map_limit",
    "collect_as",
    "limits",
    "priority",
];

/// The options that may be given as None (their default).
const NONE_ALLOWED: [&str; 5] = [
    "timeout",
    "dependencies",
    "map_over",
    "map_limit",
    "collect_as",
];

impl<'py> RawOptions<'py> {
    /// Sorts `task()`'s keyword arguments; unknown names and `None` where no option takes it are errors.
    pub(crate) fn from_kwargs(kwargs: Option<&Bound<'py, PyDict>>) -> PyResult<Self> {
        let mut raw = RawOptions::default();
        let Some(kwargs) = kwargs else {
            return Ok(raw);
        };
        for (key, value) in kwargs.iter() {
            let name: String = key.extract()?;
            if value.is_none() && !NONE_ALLOWED.contains(&name.as_str()) {
                return Err(PyTypeError::new_err(format!(
                    "{name} cannot be None; leave it out to use the default"
                )));
            }
            let slot = match name.as_str() {
                "dependencies" => &mut raw.dependencies,
                "retries" => &mut raw.retries,
                "retry_delay" => &mut raw.retry_delay,
                "retry_backoff" => &mut raw.retry_backoff,
                "retry_max_delay" => &mut raw.retry_max_delay,
                "retry_jitter" => &mut raw.retry_jitter,
                "retry_on" => &mut raw.retry_on,
                "timeout" => &mut raw.timeout,
                "trigger_rule" => &mut raw.trigger_rule,
                "map_over" => &mut raw.map_over,
                "map_item" => &mut raw.map_item,
                "map_limit" => &mut raw.map_limit,
                "collect_as" => &mut raw.collect_as,
                "limits" => &mut raw.limits,
                "priority" => &mut raw.priority,
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "task() got an unexpected keyword argument {name:?}; options are {}",
                        OPTION_NAMES.join(", ")
                    )))
                }
            };
            *slot =
                Some(value).filter(|v| !v.is_none() || name == "dependencies" || name == "timeout");
        }
        Ok(raw)
    }

    /// Checks every option, raising TypeError/ValueError that names the option and the fix.
    pub(crate) fn validate(&self, py: Python<'_>) -> PyResult<TaskSettings> {
        let defaults = RetryPolicy::default();
        let retries = match &self.retries {
            None => defaults.retries,
            Some(v) => u32::try_from(args::count(&limits::RETRIES, v)?)
                .expect("limits::RETRIES fits in u32"),
        };
        let seconds = |value: &Option<Bound<'_, PyAny>>, rule, default| match value {
            None => Ok(default),
            Some(v) => args::seconds(rule, v),
        };
        let delay = seconds(&self.retry_delay, &limits::RETRY_DELAY, defaults.delay)?;
        let max_delay = seconds(
            &self.retry_max_delay,
            &limits::RETRY_MAX_DELAY,
            defaults.max_delay,
        )?;
        let number = |value: &Option<Bound<'_, PyAny>>, rule, default| match value {
            None => Ok(default),
            Some(v) => args::number(rule, v),
        };
        let backoff = number(
            &self.retry_backoff,
            &limits::RETRY_BACKOFF,
            defaults.backoff,
        )?;
        let jitter = number(&self.retry_jitter, &limits::RETRY_JITTER, defaults.jitter)?;
        let timeout = args::optional_seconds(&limits::TASK_TIMEOUT, self.timeout.as_ref())?;
        let trigger_rule = match &self.trigger_rule {
            None => TriggerRule::default(),
            Some(v) => {
                let name = v
                    .downcast::<PyString>()
                    .map_err(|_| {
                        PyTypeError::new_err(format!(
                            "trigger_rule must be a str, got {}",
                            type_name(v)
                        ))
                    })?
                    .to_cow()?;
                TriggerRule::parse(&name).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "unknown trigger_rule {name:?}; expected one of {}",
                        TriggerRule::NAMES.join(", ")
                    ))
                })?
            }
        };
        let retry_on = exception_types(py, self.retry_on.as_ref())?;
        let retry_timeouts = py
            .get_type_bound::<PyTimeoutError>()
            .is_subclass(retry_on.bind(py).as_any())
            .unwrap_or(false);
        Ok(TaskSettings {
            options: TaskOptions {
                retry: RetryPolicy {
                    retries,
                    delay,
                    backoff,
                    max_delay,
                    jitter,
                },
                timeout,
                retry_timeouts,
                trigger_rule,
                map: self.map()?,
                limits: limit_keys("limits", self.limits.as_ref())?,
                priority: self
                    .priority
                    .as_ref()
                    .map(priority)
                    .transpose()?
                    .unwrap_or(0),
                wait: None,
                subworkflow: None,
                hook: None,
            },
            retry_on,
        })
    }

    /// The map options, if `map_over` is given; the other map options need it.
    fn map(&self) -> PyResult<Option<MapOptions>> {
        let Some(over) = &self.map_over else {
            let given = [
                ("map_item", &self.map_item),
                ("map_limit", &self.map_limit),
                ("collect_as", &self.collect_as),
            ];
            if let Some((name, _)) = given.iter().find(|(_, v)| v.is_some()) {
                return Err(PyValueError::new_err(format!(
                    "{name} applies to mapped tasks only; give map_over (the context key holding the list) too"
                )));
            }
            return Ok(None);
        };
        let over = key_option("map_over", over)?;
        if over.split('.').any(str::is_empty) {
            return Err(PyValueError::new_err(format!(
                "map_over {over:?} has an empty part; write a key or a dotted path such as \"batch.files\""
            )));
        }
        let item = match &self.map_item {
            Some(item) => key_option("map_item", item)?,
            None => "item".to_string(),
        };
        let limit = self
            .map_limit
            .as_ref()
            .map(|v| args::count(&limits::MAP_LIMIT, v))
            .transpose()?
            .map(|n| u32::try_from(n).expect("limits::MAP_LIMIT fits in u32"));
        let collect_as = self
            .collect_as
            .as_ref()
            .map(|v| key_option("collect_as", v))
            .transpose()?;
        Ok(Some(MapOptions {
            over,
            item,
            limit,
            collect_as,
        }))
    }
}

/// Limit keys (`limits=[...]` of a task or a workflow): a list of str templates such as
/// `"tenant:{tenant_id}"`.
pub(crate) fn limit_keys(
    name: &str,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<crate::model::limits::KeyTemplate>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(Vec::new());
    };
    if value.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a list of keys such as [\"openai\", \"tenant:{{tenant_id}}\"], not a str"
        )));
    }
    let mut keys = Vec::new();
    for item in value.iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} must be a list of str keys, got {}",
            type_name(value)
        ))
    })? {
        let item = item?;
        let text = item
            .downcast::<PyString>()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "{name} must hold str keys, got {}",
                    type_name(&item)
                ))
            })?
            .to_cow()?;
        let key = crate::model::limits::KeyTemplate::parse(&text).map_err(PyValueError::new_err)?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Most a priority may differ from 0 either way.
pub(crate) const MAX_PRIORITY: i32 = 1_000_000;

/// A priority (of a task or a submit): an int from -1,000,000 to 1,000,000, higher first.
pub(crate) fn priority(value: &Bound<'_, PyAny>) -> PyResult<i32> {
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err("priority must be an int, not a bool"));
    }
    let n: i64 = value.extract().map_err(|_| {
        PyTypeError::new_err(format!("priority must be an int, got {}", type_name(value)))
    })?;
    i32::try_from(n)
        .ok()
        .filter(|p| p.abs() <= MAX_PRIORITY)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "priority={n} is out of range; give an int from -{MAX_PRIORITY} to {MAX_PRIORITY} (higher runs first)"
            ))
        })
}

/// A non-empty str option naming a context key.
fn key_option(name: &str, value: &Bound<'_, PyAny>) -> PyResult<String> {
    let text = value
        .downcast::<PyString>()
        .map_err(|_| {
            PyTypeError::new_err(format!("{name} must be a str, got {}", type_name(value)))
        })?
        .to_cow()?
        .into_owned();
    if text.is_empty() {
        return Err(PyValueError::new_err(format!(
            "{name} must be a non-empty context key"
        )));
    }
    Ok(text)
}

/// `retry_on` as a tuple of exception classes; default `(Exception,)`.
fn exception_types(py: Python<'_>, value: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyTuple>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(PyTuple::new_bound(py, [py.get_type_bound::<PyException>()]).unbind());
    };
    let items: Vec<Bound<'_, PyAny>> = if value.is_instance_of::<PyType>() {
        vec![value.clone()]
    } else if let Ok(tuple) = value.downcast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        return Err(PyTypeError::new_err(format!(
            "retry_on must be an exception class or a tuple of them, got {}",
            type_name(value)
        )));
    };
    let base = py.get_type_bound::<pyo3::exceptions::PyBaseException>();
    for item in &items {
        let is_exception = item
            .downcast::<PyType>()
            .map(|t| t.is_subclass(&base).unwrap_or(false))
            .unwrap_or(false);
        if !is_exception {
            return Err(PyTypeError::new_err(format!(
                "retry_on must hold exception classes, got {}",
                item.repr()?
            )));
        }
    }
    Ok(PyTuple::new_bound(py, items).unbind())
}

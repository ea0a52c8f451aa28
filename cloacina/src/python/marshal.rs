//! Conversion between Python objects and JSON contexts, naming the path of any bad value.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyLong, PyString};
use serde_json::{Map, Number, Value};

use crate::context::Context;

/// Deepest nesting accepted; stored contexts must parse back within serde_json's recursion limit.
const MAX_DEPTH: usize = 100;

/// A value that cannot be stored, with the path to it (outermost segment last while unwinding).
#[derive(Debug)]
pub(crate) struct MarshalError {
    segments: Vec<String>,
    problem: String,
}

impl MarshalError {
    fn new(problem: String) -> Self {
        Self {
            segments: Vec::new(),
            problem,
        }
    }

    fn at(mut self, segment: String) -> Self {
        self.segments.push(segment);
        self
    }

    /// The message naming the value's path below `root`, e.g. `context['a'][0]: set is not JSON ...`.
    pub(crate) fn describe(&self, root: &str) -> String {
        let path: String = self.segments.iter().rev().map(String::as_str).collect();
        format!("{root}{path}: {}", self.problem)
    }
}

/// Converts a Python dict into a context; anything but JSON-compatible values is an error.
pub(crate) fn context_from_py(obj: &Bound<'_, PyAny>) -> Result<Context, MarshalError> {
    let dict = obj.downcast::<PyDict>().map_err(|_| {
        MarshalError::new(format!(
            "expected a dict, got {}; pass a dict with str keys",
            type_name(obj)
        ))
    })?;
    dict_from_py(dict, 0).map(Context::from)
}

fn dict_from_py(
    dict: &Bound<'_, PyDict>,
    depth: usize,
) -> Result<Map<String, Value>, MarshalError> {
    let mut map = Map::new();
    for (key, value) in dict.iter() {
        let key = match key.downcast::<PyString>() {
            Ok(k) => k
                .to_cow()
                .map_err(|e| MarshalError::new(format!("key is not valid UTF-8: {e}")))?
                .into_owned(),
            Err(_) => {
                return Err(MarshalError::new(format!(
                    "key {} is a {}, but JSON object keys must be str",
                    repr(&key),
                    type_name(&key)
                )))
            }
        };
        let converted = value_from_py(&value, depth + 1).map_err(|e| {
            e.at(format!(
                "['{}']",
                key.replace('\\', "\\\\").replace('\'', "\\'")
            ))
        })?;
        map.insert(key, converted);
    }
    Ok(map)
}

fn value_from_py(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, MarshalError> {
    if depth > MAX_DEPTH {
        return Err(MarshalError::new(format!(
            "nested deeper than {MAX_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        Ok(Value::Null)
    } else if let Ok(b) = obj.downcast::<PyBool>() {
        Ok(Value::Bool(b.is_true()))
    } else if obj.is_instance_of::<PyLong>() {
        if let Ok(i) = obj.extract::<i64>() {
            Ok(Value::from(i))
        } else if let Ok(u) = obj.extract::<u64>() {
            Ok(Value::from(u))
        } else {
            Err(MarshalError::new(format!(
                "integer {} does not fit in 64 bits; store it as a str",
                repr(obj)
            )))
        }
    } else if let Ok(f) = obj.downcast::<PyFloat>() {
        Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| {
                MarshalError::new(format!(
                    "float {} is not finite; JSON has no NaN or infinity",
                    repr(obj)
                ))
            })
    } else if let Ok(s) = obj.downcast::<PyString>() {
        s.to_cow()
            .map(|s| Value::String(s.into_owned()))
            .map_err(|e| MarshalError::new(format!("str is not valid UTF-8: {e}")))
    } else if let Ok(list) = obj.downcast::<PyList>() {
        list.iter()
            .enumerate()
            .map(|(i, item)| value_from_py(&item, depth + 1).map_err(|e| e.at(format!("[{i}]"))))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    } else if let Ok(dict) = obj.downcast::<PyDict>() {
        dict_from_py(dict, depth).map(Value::Object)
    } else {
        Err(MarshalError::new(format!(
            "{} is not JSON-compatible; use dict (str keys), list, str, int, float, bool or None",
            type_name(obj)
        )))
    }
}

/// Converts a context into a new Python dict.
pub(crate) fn context_to_py<'py>(
    py: Python<'py>,
    context: &Context,
) -> PyResult<Bound<'py, PyDict>> {
    let object = pythonize::pythonize(py, context.as_map())?;
    Ok(object.into_bound(py).downcast_into::<PyDict>()?)
}

/// The unqualified name of `obj`'s type, e.g. `set`.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .getattr("__name__")
        .and_then(|n| n.extract())
        .unwrap_or_else(|_| "object".to_string())
}

/// `obj`'s repr, cut to 60 characters.
pub(crate) fn repr(obj: &Bound<'_, PyAny>) -> String {
    let text = obj
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unrepresentable>".into());
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

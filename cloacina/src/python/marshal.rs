//! Conversion between Python objects and JSON contexts, naming the path of any bad value.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyLong, PyString};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use crate::context::{Context, SharedInput};

/// Deepest nesting accepted; stored contexts must parse back within serde_json's recursion limit.
const MAX_DEPTH: usize = 100;

/// Path segments shown at each end of a long path in a message.
const PATH_ENDS: usize = 3;

/// Characters of a key shown in a path segment.
const KEY_CHARS: usize = 40;

/// A value that cannot be stored, with the path to it (outermost segment last while unwinding).
#[derive(Debug)]
pub(crate) struct MarshalError {
    segments: Vec<String>,
    /// For a value nested too deep: the ids of the containers on its path, outermost last, and
    /// the value's own id first; they show whether the nesting is a reference cycle.
    ids: Option<Vec<usize>>,
    problem: String,
}

impl MarshalError {
    fn new(problem: String) -> Self {
        Self {
            segments: Vec::new(),
            ids: None,
            problem,
        }
    }

    /// The value `obj` lies deeper than [`MAX_DEPTH`].
    fn too_deep(obj: &Bound<'_, PyAny>) -> Self {
        Self {
            segments: Vec::new(),
            ids: Some(vec![obj.as_ptr() as usize]),
            problem: format!("nested deeper than {MAX_DEPTH} levels"),
        }
    }

    /// The error one level up: `segment` leads from `container` to where it occurred.
    fn at(mut self, segment: String, container: &Bound<'_, PyAny>) -> Self {
        self.segments.push(segment);
        if let Some(ids) = &mut self.ids {
            ids.push(container.as_ptr() as usize);
        }
        self
    }

    /// The message naming the value's path below `root`, e.g. `context['a'][0]: set is not JSON ...`;
    /// a reference cycle is named as one, and a long path is shortened in the middle.
    pub(crate) fn describe(&self, root: &str) -> String {
        let segments: Vec<&str> = self.segments.iter().rev().map(String::as_str).collect();
        if let Some((earlier, later)) = self.cycle() {
            return format!(
                "{root} contains a reference cycle: {} refers back to {}",
                path(root, &segments[..later]),
                path(root, &segments[..earlier]),
            );
        }
        format!("{}: {}", path(root, &segments), self.problem)
    }

    /// For a value nested too deep through a cycle: the depths of the first container on the path
    /// that appears again, and of where it appears again.
    fn cycle(&self) -> Option<(usize, usize)> {
        let ids: Vec<usize> = self.ids.as_ref()?.iter().rev().copied().collect();
        let mut seen = std::collections::HashMap::new();
        for (depth, id) in ids.into_iter().enumerate() {
            if let Some(&earlier) = seen.get(&id) {
                return Some((earlier, depth));
            }
            seen.insert(id, depth);
        }
        None
    }
}

/// `root` followed by `segments`, keeping the first and last few of a long path.
fn path(root: &str, segments: &[&str]) -> String {
    if segments.len() <= 2 * PATH_ENDS + 1 {
        return format!("{root}{}", segments.concat());
    }
    let skipped = segments.len() - 2 * PATH_ENDS;
    format!(
        "{root}{}...({skipped} more levels)...{}",
        segments[..PATH_ENDS].concat(),
        segments[segments.len() - PATH_ENDS..].concat()
    )
}

/// The path segment of a dict key, e.g. `['name']`.
fn key_segment(key: &str) -> String {
    format!("[{}]", quoted(key))
}

/// `text` in single quotes as Python writes it, control characters (NUL included) escaped, cut
/// short after [`KEY_CHARS`] characters.
fn quoted(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    for (count, c) in text.chars().enumerate() {
        if count == KEY_CHARS {
            escaped.push_str("...");
            break;
        }
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\'' => escaped.push_str("\\'"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => escaped.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    format!("'{escaped}'")
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

/// A dict's entries: straight from the table for a `dict`, through `items()` for a subclass
/// (as `json.dumps` does), so an overridden `items()` is honored.
fn dict_from_py(
    dict: &Bound<'_, PyDict>,
    depth: usize,
) -> Result<Map<String, Value>, MarshalError> {
    let mut map = Map::new();
    if dict.is_exact_instance_of::<PyDict>() {
        for (key, value) in dict.iter() {
            insert_entry(&mut map, dict, &key, &value, depth)?;
        }
        return Ok(map);
    }
    let class = type_name(dict);
    let items = dict
        .call_method0("items")
        .and_then(|items| items.iter())
        .map_err(|e| MarshalError::new(format!("{class}.items() raised {e}")))?;
    for item in items {
        let item = item.map_err(|e| MarshalError::new(format!("{class}.items() raised {e}")))?;
        let (key, value) = item
            .extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>()
            .map_err(|_| {
                MarshalError::new(format!(
                    "{class}.items() yielded {}, not a (key, value) pair",
                    repr(&item)
                ))
            })?;
        insert_entry(&mut map, dict, &key, &value, depth)?;
    }
    Ok(map)
}

/// Converts one entry of `dict` into `map`; a key that is not a str, or whose text another key
/// already has (str subclasses may compare unequal with equal text), is an error.
fn insert_entry(
    map: &mut Map<String, Value>,
    dict: &Bound<'_, PyDict>,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    depth: usize,
) -> Result<(), MarshalError> {
    let text = match key.downcast::<PyString>() {
        Ok(k) => k
            .to_cow()
            .map_err(|_| {
                MarshalError::new(format!(
                    "key {} is not valid Unicode text (it holds a lone surrogate)",
                    repr(key)
                ))
            })?
            .into_owned(),
        Err(_) => {
            return Err(MarshalError::new(format!(
                "key {} is a {}, but JSON object keys must be str",
                repr(key),
                type_name(key)
            )))
        }
    };
    let slot = match map.entry(text) {
        Entry::Vacant(slot) => slot,
        Entry::Occupied(other) => {
            return Err(MarshalError::new(format!(
                "two keys have the text {}; JSON object keys must be distinct (a key of a str subclass counts as its text)",
                quoted(other.key())
            )))
        }
    };
    let converted = value_from_py(value, depth + 1)
        .map_err(|e| e.at(key_segment(slot.key()), dict.as_any()))?;
    slot.insert(converted);
    Ok(())
}

fn value_from_py(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, MarshalError> {
    if depth > MAX_DEPTH {
        return Err(MarshalError::too_deep(obj));
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
            .map_err(|_| {
                MarshalError::new(
                    "str is not valid Unicode text (it holds a lone surrogate)".to_string(),
                )
            })
    } else if let Ok(list) = obj.downcast::<PyList>() {
        list.iter()
            .enumerate()
            .map(|(i, item)| {
                value_from_py(&item, depth + 1).map_err(|e| e.at(format!("[{i}]"), obj))
            })
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

/// A task's input as a new dict, converted from the shared values without copying them first.
pub(crate) fn input_to_py<'py>(
    py: Python<'py>,
    input: &SharedInput,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new_bound(py);
    for (key, value) in input.iter() {
        dict.set_item(key, pythonize::pythonize(py, value)?)?;
    }
    Ok(dict)
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

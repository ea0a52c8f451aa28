//! Conversion between Python objects and JSON contexts, naming the path of any bad value.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyLong, PyString};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use super::json_text::json_to_py;
use crate::context::{Context, Handoff, InputValue, Output, SharedInput, SharedValue};

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

/// `obj` as a dict, or the error telling what a context must be.
fn expect_dict<'a, 'py>(
    obj: &'a Bound<'py, PyAny>,
) -> Result<&'a Bound<'py, PyDict>, MarshalError> {
    obj.downcast::<PyDict>().map_err(|_| {
        MarshalError::new(format!(
            "expected a dict, got {}; pass a dict with str keys",
            type_name(obj)
        ))
    })
}

/// The error left in `slot` by a [`Json`] walk, or the serializer's own.
fn walk_error(slot: &RefCell<Option<MarshalError>>, error: impl std::fmt::Display) -> MarshalError {
    slot.take()
        .unwrap_or_else(|| MarshalError::new(error.to_string()))
}

/// Converts a Python dict into a context; anything but JSON-compatible values is an error.
pub(crate) fn context_from_py(obj: &Bound<'_, PyAny>) -> Result<Context, MarshalError> {
    let dict = expect_dict(obj)?;
    let error = RefCell::new(None);
    match serde_json::value::to_value(Json::new(dict.as_any(), 0, &error)) {
        Ok(Value::Object(map)) => Ok(Context::from(map)),
        Ok(other) => Err(MarshalError::new(format!("a dict became {other}"))),
        Err(e) => Err(walk_error(&error, e)),
    }
}

/// A task's output dict as one JSON text per key, handing a plain dict of the same objects (not
/// copies) to the next task in this process.
pub(crate) fn output_from_py(obj: &Bound<'_, PyAny>) -> Result<Output, MarshalError> {
    let dict = expect_dict(obj)?;
    let objects = PyDict::new_bound(obj.py());
    let mut values = Vec::with_capacity(dict.len());
    let error = RefCell::new(None);
    for_each_entry(
        dict,
        |e| e,
        |key, value| {
            let json = serde_json::value::to_raw_value(&Json::new(value, 1, &error))
                .map_err(|e| walk_error(&error, e).at(key_segment(key), dict.as_any()))?;
            objects
                .set_item(key, value)
                .map_err(|e| MarshalError::new(e.to_string()))?;
            values.push((key.to_string(), Arc::new(SharedValue::from_json(json))));
            Ok(())
        },
    )?;
    Ok(Output {
        values,
        handoff: Some(Handoff::new(objects.unbind())),
    })
}

/// Calls `f` with the text and value of each entry of `dict`: straight from the table for a
/// `dict`, through `items()` for a subclass (as `json.dumps` does, so an overridden `items()`
/// is honored). A key that is not a str, or whose text another key already has (str subclasses
/// may compare unequal with equal text), is an error.
fn for_each_entry<'py, E>(
    dict: &Bound<'py, PyDict>,
    fail: impl Fn(MarshalError) -> E,
    mut f: impl FnMut(&str, &Bound<'py, PyAny>) -> Result<(), E>,
) -> Result<(), E> {
    let mut keys = DistinctKeys::new(dict);
    if dict.is_exact_instance_of::<PyDict>() {
        for (key, value) in dict.iter() {
            let text = keys.check(&key).map_err(&fail)?;
            f(&text, &value)?;
        }
        return Ok(());
    }
    let class = type_name(dict);
    let items = dict
        .call_method0("items")
        .and_then(|items| items.iter())
        .map_err(|e| fail(MarshalError::new(format!("{class}.items() raised {e}"))))?;
    for item in items {
        let item =
            item.map_err(|e| fail(MarshalError::new(format!("{class}.items() raised {e}"))))?;
        let (key, value) = item
            .extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>)>()
            .map_err(|_| {
                fail(MarshalError::new(format!(
                    "{class}.items() yielded {}, not a (key, value) pair",
                    repr(&item)
                )))
            })?;
        let text = keys.check(&key).map_err(&fail)?;
        f(&text, &value)?;
    }
    Ok(())
}

/// The key texts of one dict, remembered only once two could be equal: in a `dict`, only a key
/// of a str subclass can have another key's text.
struct DistinctKeys<'a, 'py> {
    dict: &'a Bound<'py, PyDict>,
    seen: Option<HashSet<String>>,
}

impl<'a, 'py> DistinctKeys<'a, 'py> {
    fn new(dict: &'a Bound<'py, PyDict>) -> Self {
        let exact = dict.is_exact_instance_of::<PyDict>();
        Self {
            dict,
            seen: (!exact).then(HashSet::new),
        }
    }

    /// The text of `key`, which must be a str whose text no earlier key has.
    fn check<'k>(&mut self, key: &'k Bound<'py, PyAny>) -> Result<Cow<'k, str>, MarshalError> {
        let text = key_text(key)?;
        if key.is_exact_instance_of::<PyString>() && self.seen.is_none() {
            return Ok(text);
        }
        let dict = self.dict;
        let seen = self.seen.get_or_insert_with(|| {
            dict.iter()
                .filter(|(k, _)| k.is_exact_instance_of::<PyString>())
                .filter_map(|(k, _)| key_text(&k).ok().map(Cow::into_owned))
                .collect()
        });
        let is_exact_in_dict =
            key.is_exact_instance_of::<PyString>() && dict.is_exact_instance_of::<PyDict>();
        if !is_exact_in_dict && !seen.insert(text.to_string()) {
            return Err(MarshalError::new(format!(
                "two keys have the text {}; JSON object keys must be distinct (a key of a str subclass counts as its text)",
                quoted(&text)
            )));
        }
        Ok(text)
    }
}

/// The text of a dict key, which must be a str.
fn key_text<'k>(key: &'k Bound<'_, PyAny>) -> Result<Cow<'k, str>, MarshalError> {
    match key.downcast::<PyString>() {
        Ok(k) => k.to_cow().map_err(|_| {
            MarshalError::new(format!(
                "key {} is not valid Unicode text (it holds a lone surrogate)",
                repr(key)
            ))
        }),
        Err(_) => Err(MarshalError::new(format!(
            "key {} is a {}, but JSON object keys must be str",
            repr(key),
            type_name(key)
        ))),
    }
}

/// A Python object serialized as JSON (to text or to a [`Value`]), checked on the way: the
/// first value that is not JSON stops it, and its error, with its path, is left in `error`.
struct Json<'a, 'py> {
    obj: &'a Bound<'py, PyAny>,
    depth: usize,
    error: &'a RefCell<Option<MarshalError>>,
}

impl<'a, 'py> Json<'a, 'py> {
    fn new(
        obj: &'a Bound<'py, PyAny>,
        depth: usize,
        error: &'a RefCell<Option<MarshalError>>,
    ) -> Self {
        Self { obj, depth, error }
    }

    fn child<'b>(&'b self, obj: &'b Bound<'py, PyAny>) -> Json<'b, 'py> {
        Json::new(obj, self.depth + 1, self.error)
    }

    /// Leaves `problem` for the caller and stops the serializer.
    fn fail<E: ser::Error>(&self, problem: MarshalError) -> E {
        *self.error.borrow_mut() = Some(problem);
        E::custom("not JSON")
    }

    /// Adds `segment` (inside this object) to the path of a nested value's error.
    fn locate<T, E>(&self, result: Result<T, E>, segment: impl FnOnce() -> String) -> Result<T, E> {
        if result.is_err() {
            let mut slot = self.error.borrow_mut();
            if let Some(error) = slot.take() {
                *slot = Some(error.at(segment(), self.obj));
            }
        }
        result
    }

    fn text<S: Serializer>(
        &self,
        s: &Bound<'py, PyString>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match s.to_cow() {
            Ok(text) => serializer.serialize_str(&text),
            Err(_) => Err(self.fail(MarshalError::new(
                "str is not valid Unicode text (it holds a lone surrogate)".to_string(),
            ))),
        }
    }

    fn int<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let Ok(i) = self.obj.extract::<i64>() {
            serializer.serialize_i64(i)
        } else if let Ok(u) = self.obj.extract::<u64>() {
            serializer.serialize_u64(u)
        } else {
            Err(self.fail(MarshalError::new(format!(
                "integer {} does not fit in 64 bits; store it as a str",
                repr(self.obj)
            ))))
        }
    }

    fn float<S: Serializer>(
        &self,
        f: &Bound<'py, PyFloat>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let value = f.value();
        if value.is_finite() {
            serializer.serialize_f64(value)
        } else {
            Err(self.fail(MarshalError::new(format!(
                "float {} is not finite; JSON has no NaN or infinity",
                repr(self.obj)
            ))))
        }
    }

    fn list<S: Serializer>(
        &self,
        list: &Bound<'py, PyList>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(list.len()))?;
        for (i, item) in list.iter().enumerate() {
            let done = seq.serialize_element(&self.child(&item));
            self.locate(done, || format!("[{i}]"))?;
        }
        seq.end()
    }

    fn dict<S: Serializer>(
        &self,
        dict: &Bound<'py, PyDict>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(dict.len()))?;
        for_each_entry(
            dict,
            |problem| self.fail(problem),
            |key, value| {
                map.serialize_key(key)?;
                let done = map.serialize_value(&self.child(value));
                self.locate(done, || key_segment(key))
            },
        )?;
        map.end()
    }
}

impl Serialize for Json<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let obj = self.obj;
        if self.depth > MAX_DEPTH {
            return Err(self.fail(MarshalError::too_deep(obj)));
        }
        // Exact built-in types first: they are nearly every value.
        if let Ok(s) = obj.downcast_exact::<PyString>() {
            self.text(s, serializer)
        } else if obj.is_exact_instance_of::<PyLong>() {
            self.int(serializer)
        } else if let Ok(f) = obj.downcast_exact::<PyFloat>() {
            self.float(f, serializer)
        } else if let Ok(d) = obj.downcast_exact::<PyDict>() {
            self.dict(d, serializer)
        } else if let Ok(l) = obj.downcast_exact::<PyList>() {
            self.list(l, serializer)
        } else if obj.is_none() {
            serializer.serialize_unit()
        } else if let Ok(b) = obj.downcast::<PyBool>() {
            serializer.serialize_bool(b.is_true())
        } else if obj.is_instance_of::<PyLong>() {
            self.int(serializer)
        } else if let Ok(f) = obj.downcast::<PyFloat>() {
            self.float(f, serializer)
        } else if let Ok(s) = obj.downcast::<PyString>() {
            self.text(s, serializer)
        } else if let Ok(l) = obj.downcast::<PyList>() {
            self.list(l, serializer)
        } else if let Ok(d) = obj.downcast::<PyDict>() {
            self.dict(d, serializer)
        } else {
            Err(self.fail(MarshalError::new(format!(
                "{} is not JSON-compatible; use dict (str keys), list, str, int, float, bool or None",
                type_name(obj)
            ))))
        }
    }
}

/// A context's values as a new dict: each value is the object a task of this process
/// handed over when it is the first to take it, else converted from the shared value.
pub(crate) fn values_to_py<'py>(
    py: Python<'py>,
    input: &SharedInput,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new_bound(py);
    let mut taken: HashMap<usize, Option<Py<PyDict>>> = HashMap::new();
    for InputValue {
        key,
        value,
        handoff,
    } in input.values()
    {
        let handed = handoff.as_ref().and_then(|handoff| {
            taken
                .entry(handoff.id())
                .or_insert_with(|| handoff.take::<Py<PyDict>>())
                .as_ref()
                .and_then(|objects| objects.bind(py).get_item(key).ok().flatten())
        });
        match handed {
            Some(object) => dict.set_item(key, object)?,
            None => dict.set_item(key, json_to_py(py, value.json())?)?,
        }
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

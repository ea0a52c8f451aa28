//! Context values as the engine holds them between tasks: JSON text shared by reference,
//! and the objects a task hands to the next reader in its process.

use std::any::Any;
use std::sync::{Arc, Mutex};

use once_cell::sync::OnceCell;
use serde_json::value::RawValue;
use serde_json::Value;

use super::Context;

/// One context value as the engine holds it: its JSON text, and the parsed value once
/// something needs it. Shared between the lineages and attempts that read it.
#[derive(Debug)]
pub struct SharedValue {
    json: Box<RawValue>,
    value: OnceCell<Value>,
}

impl SharedValue {
    /// A value known by its JSON text.
    pub fn from_json(json: Box<RawValue>) -> Self {
        Self {
            json,
            value: OnceCell::new(),
        }
    }

    /// A value and its JSON text.
    pub fn from_value(value: Value) -> Self {
        let json = serde_json::value::to_raw_value(&value).expect("a JSON value always serialises");
        Self {
            json,
            value: OnceCell::with_value(value),
        }
    }

    /// The value's JSON text.
    pub fn json(&self) -> &str {
        self.json.get()
    }

    /// The value, if it was parsed (or given) already.
    pub(crate) fn parsed(&self) -> Option<&Value> {
        self.value.get()
    }

    /// The value, parsed from its JSON text on first use.
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            serde_json::from_str(self.json.get()).expect("a stored JSON value parses back")
        })
    }
}

/// Objects a task's language hands, once, to one later reader in the same process (a task, or
/// the caller waiting for the execution) instead of it decoding the output's JSON (for Python:
/// the very objects the task returned).
#[derive(Clone)]
pub struct Handoff(Arc<Mutex<Option<Box<dyn Any + Send>>>>);

impl Handoff {
    /// Offers `objects` to the first taker.
    pub fn new(objects: impl Any + Send) -> Self {
        Handoff(Arc::new(Mutex::new(Some(Box::new(objects)))))
    }

    /// The objects, to the first caller only (and only if they are a `T`).
    pub fn take<T: Any>(&self) -> Option<T> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take()?.downcast::<T>() {
            Ok(objects) => Some(*objects),
            Err(other) => {
                *slot = Some(other);
                None
            }
        }
    }

    /// A number that tells this handoff apart from every other one alive.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as *const () as usize
    }
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handoff")
    }
}

/// A task's output as the engine holds it: each value with its JSON text, and what the task's
/// language may hand to the next task of this process.
#[derive(Debug, Default)]
pub struct Output {
    /// The output's keys and values.
    pub values: Vec<(String, Arc<SharedValue>)>,
    /// The output's own objects, for one later task of this process.
    pub handoff: Option<Handoff>,
}

impl Output {
    /// The output as one JSON object, keys sorted as in a [`Context`].
    pub fn to_json(&self) -> String {
        object_json(self.values.iter().map(|(k, v)| (k.as_str(), &**v)))
    }
}

impl From<Context> for Output {
    fn from(context: Context) -> Self {
        Output {
            values: context
                .into_map()
                .into_iter()
                .map(|(k, v)| (k, Arc::new(SharedValue::from_value(v))))
                .collect(),
            handoff: None,
        }
    }
}

/// A JSON object from its entries' texts, keys sorted as in a [`Context`].
pub(crate) fn object_json<'a>(entries: impl Iterator<Item = (&'a str, &'a SharedValue)>) -> String {
    let mut sorted: Vec<_> = entries.collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let size: usize = sorted
        .iter()
        .map(|(k, v)| k.len() + v.json().len() + 4)
        .sum();
    let mut json = String::with_capacity(size + 2);
    json.push('{');
    for (i, (key, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&serde_json::to_string(key).expect("a str always serialises"));
        json.push(':');
        json.push_str(value.json());
    }
    json.push('}');
    json
}

/// One value of a task's input: its key, the value, and the handoff of the output it came from.
#[derive(Debug, Clone)]
pub struct InputValue {
    /// The context key.
    pub key: String,
    /// The value.
    pub value: Arc<SharedValue>,
    /// The handoff of the output that wrote the value, if it had one.
    pub handoff: Option<Handoff>,
}

/// A context whose values are shared with the engine instead of copied (a task's input, or a
/// final context built here): cheap to hand to each attempt of a task, and readable without
/// copying by tasks that convert it anyway.
#[derive(Debug, Clone, Default)]
pub struct SharedInput(Vec<InputValue>);

impl SharedInput {
    /// The values, keys sorted as in a [`Context`].
    pub fn values(&self) -> &[InputValue] {
        &self.0
    }

    /// A plain context holding copies of the values.
    pub fn to_context(&self) -> Context {
        self.0
            .iter()
            .map(|v| (v.key.clone(), v.value.value().clone()))
            .collect()
    }
}

impl From<Vec<InputValue>> for SharedInput {
    fn from(values: Vec<InputValue>) -> Self {
        SharedInput(values)
    }
}

impl From<Context> for SharedInput {
    fn from(context: Context) -> Self {
        SharedInput(
            Output::from(context)
                .values
                .into_iter()
                .map(|(key, value)| InputValue {
                    key,
                    value,
                    handoff: None,
                })
                .collect(),
        )
    }
}

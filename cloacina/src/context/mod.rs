//! The JSON context that flows from task to task, as users see it and as the engine holds it.

mod shared;
mod stored;

pub(crate) use shared::object_json;
pub use shared::{Handoff, InputValue, Output, SharedInput, SharedValue};
pub use stored::StoredContext;

use serde_json::{Map, Value};

/// A workflow context: a JSON object that tasks read and extend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context(Map<String, Value>);

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Stores `value` under `key`, replacing any earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.0.insert(key.into(), value.into());
    }

    /// Copies every key of `other` into this context; `other` wins on conflicts.
    pub fn merge(&mut self, other: &Context) {
        for (key, value) in &other.0 {
            self.0.insert(key.clone(), value.clone());
        }
    }

    /// The underlying JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Consumes the context, returning the JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// Number of top-level keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the context has no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Serialises the context as a JSON string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("a JSON map always serialises")
    }

    /// Parses a context from a JSON object string.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text).map(Context)
    }
}

impl From<Map<String, Value>> for Context {
    fn from(map: Map<String, Value>) -> Self {
        Context(map)
    }
}

impl FromIterator<(String, Value)> for Context {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Context(iter.into_iter().collect())
    }
}

//! The JSON context that flows from task to task.

use std::sync::Arc;

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

/// A task's input context whose values are shared with the engine instead of copied: cheap to
/// hand to each attempt of a task, and readable without copying by tasks that convert it anyway.
#[derive(Debug, Clone, Default)]
pub struct SharedInput(Vec<(String, Arc<Value>)>);

impl SharedInput {
    /// The (key, value) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), &**v))
    }

    /// A plain context holding copies of the values.
    pub fn to_context(&self) -> Context {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

impl From<Vec<(String, Arc<Value>)>> for SharedInput {
    fn from(pairs: Vec<(String, Arc<Value>)>) -> Self {
        SharedInput(pairs)
    }
}

impl From<Context> for SharedInput {
    fn from(context: Context) -> Self {
        SharedInput(
            context
                .into_map()
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
        )
    }
}

//! A context as the database holds it.

use once_cell::sync::OnceCell;

use super::{Context, SharedInput};

/// A context as stored: its JSON text, parsed into a [`Context`] only when something reads it
/// that way (the Python layer converts the text directly).
#[derive(Clone)]
pub struct StoredContext {
    json: String,
    parsed: OnceCell<Context>,
    values: Option<SharedInput>,
}

impl StoredContext {
    /// A stored context from its JSON text, which must hold one JSON object.
    pub fn from_json(json: String) -> serde_json::Result<Self> {
        serde_json::from_str::<serde::de::IgnoredAny>(&json)?;
        if !json.trim_start().starts_with('{') {
            return Err(serde::de::Error::custom("a context must be a JSON object"));
        }
        Ok(Self {
            json,
            parsed: OnceCell::new(),
            values: None,
        })
    }

    /// A context its worker just built: its JSON text and the values it was built from.
    pub(crate) fn built(json: String, values: SharedInput) -> Self {
        Self {
            json,
            parsed: OnceCell::new(),
            values: Some(values),
        }
    }

    /// The values the context was built from, with their handoffs, when this process built it.
    pub fn values(&self) -> Option<&SharedInput> {
        self.values.as_ref()
    }

    /// The context's JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The context, parsed on first use.
    pub fn context(&self) -> &Context {
        self.parsed.get_or_init(|| {
            Context::from_json(&self.json).expect("a stored context was checked to be an object")
        })
    }
}

impl std::ops::Deref for StoredContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        self.context()
    }
}

impl From<Context> for StoredContext {
    fn from(context: Context) -> Self {
        Self {
            json: context.to_json(),
            parsed: OnceCell::with_value(context),
            values: None,
        }
    }
}

impl PartialEq for StoredContext {
    fn eq(&self, other: &Self) -> bool {
        self.context() == other.context()
    }
}

impl PartialEq<Context> for StoredContext {
    fn eq(&self, other: &Context) -> bool {
        self.context() == other
    }
}

impl std::fmt::Debug for StoredContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.context().fmt(f)
    }
}

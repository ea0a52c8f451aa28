//! Which value each context key holds for a task: the one written last in topological order.

use std::collections::HashMap;
use std::sync::Arc;

use crate::context::{
    object_json, Context, Handoff, InputValue, Output, SharedInput, SharedValue, StoredContext,
};
use crate::database::store::ContextSource;
use crate::spawn::drop_later;

/// Position of the workflow input, before every task.
pub(crate) const INPUT: i64 = -1;

/// A value in a lineage: the topological position of the task that wrote it, and that task's handoff.
#[derive(Debug, Clone)]
struct Written {
    position: i64,
    value: Arc<SharedValue>,
    handoff: Option<Handoff>,
}

/// A context whose every key remembers the topological position of the task that wrote it.
///
/// A task's input is the union of its direct upstream lineages, keeping for each key the latest
/// writer. Each upstream lineage already holds its own ancestors, so this equals merging every
/// transitive ancestor's output in topological order, without storing ancestor sets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lineage(HashMap<String, Written>);

impl Lineage {
    /// Writes `output` at `position`; an existing key written later in topological order is
    /// kept. The output's handoff goes with its values to whoever reads them.
    pub(crate) fn absorb(&mut self, position: i64, output: &Output) {
        for (key, value) in &output.values {
            let written = Written {
                position,
                value: value.clone(),
                handoff: output.handoff.clone(),
            };
            match self.0.get_mut(key) {
                Some(entry) if entry.position > position => {}
                Some(entry) => drop_later(std::mem::replace(entry, written).value),
                None => {
                    self.0.insert(key.clone(), written);
                }
            }
        }
    }

    /// Drops the value at `path`: a key, or a dotted path to a key inside objects.
    pub(crate) fn without(&mut self, path: &str) {
        let (top, rest) = match path.split_once('.') {
            Some((top, rest)) => (top, Some(rest)),
            None => (path, None),
        };
        let Some(rest) = rest else {
            if let Some(written) = self.0.remove(top) {
                drop_later(written.value);
            }
            return;
        };
        if let Some(written) = self.0.get_mut(top) {
            let mut value = written.value.value().clone();
            if remove_path(&mut value, rest) {
                written.value = Arc::new(SharedValue::from_value(value));
                // The handed-over object still holds the list.
                written.handoff = None;
            }
        }
    }

    /// Merges several lineages, keeping each key's latest writer.
    pub(crate) fn union<'a>(mut parts: impl Iterator<Item = &'a Lineage>) -> Lineage {
        let mut merged = parts.next().cloned().unwrap_or_default();
        for part in parts {
            for (key, written) in &part.0 {
                match merged.0.get_mut(key) {
                    Some(entry) if entry.position >= written.position => {}
                    Some(entry) => *entry = written.clone(),
                    None => {
                        merged.0.insert(key.clone(), written.clone());
                    }
                }
            }
        }
        merged
    }

    /// The current values, shared rather than copied, keys sorted as in a [`Context`].
    pub(crate) fn to_shared(&self) -> SharedInput {
        let mut values: Vec<InputValue> = self
            .0
            .iter()
            .map(|(key, written)| InputValue {
                key: key.clone(),
                value: written.value.clone(),
                handoff: written.handoff.clone(),
            })
            .collect();
        values.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        values.into()
    }

    /// The current values as a JSON object, keys sorted as in a [`Context`], from their texts.
    pub(crate) fn to_json(&self) -> String {
        object_json(self.0.iter().map(|(k, w)| (k.as_str(), &*w.value)))
    }
}

/// Removes the value at the dotted `path` inside `value`; whether there was one.
fn remove_path(value: &mut serde_json::Value, path: &str) -> bool {
    match path.split_once('.') {
        Some((key, rest)) => value.get_mut(key).is_some_and(|v| remove_path(v, rest)),
        None => value
            .as_object_mut()
            .is_some_and(|object| object.remove(path).is_some()),
    }
}

/// An execution's final context as one worker builds it: the input plus the outputs of the
/// tasks it ran, completed from storage with the rest when the execution ends.
pub(crate) struct FinalContext {
    lineage: Lineage,
    held: Vec<bool>,
    /// The JSON stored when the execution ended.
    built: Option<String>,
}

impl FinalContext {
    /// Starts from the execution's input, for a plan of `len` tasks.
    pub(crate) fn new(input: &Lineage, len: usize) -> Self {
        Self {
            lineage: input.clone(),
            held: vec![false; len],
            built: None,
        }
    }

    /// Takes in the output of the task at `position`.
    pub(crate) fn absorb(&mut self, position: usize, output: &Output) {
        self.lineage.absorb(position as i64, output);
        self.held[position] = true;
    }

    /// The final context stored when the execution ended, with the values and handoffs it was
    /// built from; None before.
    pub(crate) fn finished(&mut self) -> Option<StoredContext> {
        let json = self.built.take()?;
        Some(StoredContext::built(json, self.lineage.to_shared()))
    }
}

impl ContextSource for FinalContext {
    fn holds(&self, position: usize) -> bool {
        self.held.get(position).copied().unwrap_or(false)
    }

    fn build_json(&mut self, loaded: Vec<(usize, Context)>) -> String {
        for (position, output) in loaded {
            self.absorb(position, &Output::from(output));
        }
        let json = self.lineage.to_json();
        self.built = Some(json.clone());
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn output(pairs: &[(&str, Value)]) -> Output {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Context>()
            .into()
    }

    #[test]
    fn later_writer_wins_regardless_of_merge_order() {
        let mut early = Lineage::default();
        early.absorb(1, &output(&[("k", json!("early"))]));
        let mut late = Lineage::default();
        late.absorb(5, &output(&[("k", json!("late"))]));
        for merged in [
            Lineage::union([&early, &late].into_iter()),
            Lineage::union([&late, &early].into_iter()),
        ] {
            assert_eq!(
                merged.to_shared().to_context().get("k"),
                Some(&json!("late"))
            );
        }
    }
}

//! Which value each context key holds for a task: the one written last in topological order.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::context::{Context, SharedInput};
use crate::database::store::ContextSource;
use crate::spawn::drop_later;

/// Position of the workflow input, before every task.
pub(crate) const INPUT: i64 = -1;

/// A context whose every key remembers the topological position of the task that wrote it.
///
/// A task's input is the union of its direct upstream lineages, keeping for each key the latest
/// writer. Each upstream lineage already holds its own ancestors, so this equals merging every
/// transitive ancestor's output in topological order, without storing ancestor sets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lineage(HashMap<String, (i64, Arc<Value>)>);

/// A task's output with values shared between the lineages that take it in.
pub(crate) type SharedOutput = Vec<(String, Arc<Value>)>;

/// Moves a context's values behind `Arc`s so several lineages can hold them without copying.
pub(crate) fn share(context: Context) -> SharedOutput {
    context
        .into_map()
        .into_iter()
        .map(|(k, v)| (k, Arc::new(v)))
        .collect()
}

impl Lineage {
    /// Writes `output` at `position`; an existing key written later in topological order is kept.
    pub(crate) fn absorb(&mut self, position: i64, output: &SharedOutput) {
        for (key, value) in output {
            match self.0.get_mut(key) {
                Some(entry) if entry.0 > position => {}
                Some(entry) => drop_later(std::mem::replace(entry, (position, value.clone())).1),
                None => {
                    self.0.insert(key.clone(), (position, value.clone()));
                }
            }
        }
    }

    /// Merges several lineages, keeping each key's latest writer.
    pub(crate) fn union<'a>(mut parts: impl Iterator<Item = &'a Lineage>) -> Lineage {
        let mut merged = parts.next().cloned().unwrap_or_default();
        for part in parts {
            for (key, (position, value)) in &part.0 {
                match merged.0.get_mut(key) {
                    Some(entry) if entry.0 >= *position => {}
                    Some(entry) => *entry = (*position, value.clone()),
                    None => {
                        merged.0.insert(key.clone(), (*position, value.clone()));
                    }
                }
            }
        }
        merged
    }

    /// The current values, shared rather than copied.
    pub(crate) fn to_shared(&self) -> SharedInput {
        self.0
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
            .into()
    }

    /// The current values as a JSON object, keys sorted as in a [`Context`], without copying them.
    pub(crate) fn to_json(&self) -> String {
        let sorted: std::collections::BTreeMap<&str, &Value> = self
            .0
            .iter()
            .map(|(k, (_, v))| (k.as_str(), &**v))
            .collect();
        serde_json::to_string(&sorted).expect("a JSON map always serialises")
    }
}

/// An execution's final context as one worker builds it: the input plus the outputs of the
/// tasks it ran, completed from storage with the rest when the execution ends.
pub(crate) struct FinalContext {
    lineage: Lineage,
    held: Vec<bool>,
}

impl FinalContext {
    /// Starts from the execution's input, for a plan of `len` tasks.
    pub(crate) fn new(input: &Lineage, len: usize) -> Self {
        Self {
            lineage: input.clone(),
            held: vec![false; len],
        }
    }

    /// Takes in the output of the task at `position`.
    pub(crate) fn absorb(&mut self, position: usize, output: &SharedOutput) {
        self.lineage.absorb(position as i64, output);
        self.held[position] = true;
    }
}

impl ContextSource for FinalContext {
    fn holds(&self, position: usize) -> bool {
        self.held.get(position).copied().unwrap_or(false)
    }

    fn build_json(&mut self, loaded: Vec<(usize, Context)>) -> String {
        for (position, output) in loaded {
            self.absorb(position, &share(output));
        }
        self.lineage.to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn output(pairs: &[(&str, Value)]) -> SharedOutput {
        share(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
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

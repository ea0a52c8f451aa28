//! Decisions about mapped tasks ("nodes"): which elements a node runs over, how an instance's
//! row is keyed, and what the node's end is once its instances have ended.

use serde_json::Value;

use super::TaskStatus;
use crate::policy::MapOptions;

/// Most elements one map may have.
pub const MAX_MAP_ELEMENTS: usize = 100_000;

/// Failed indices a node's error lists before it says how many more there are.
const LISTED_FAILURES: usize = 5;

/// The key an instance's output stores its value under.
pub const VALUE_KEY: &str = "value";

/// The row key of instance `index` of the node `task_id`.
pub fn instance_key(task_id: &str, index: u32) -> String {
    format!("{task_id}[{index}]")
}

/// The elements a node maps over, read from its input context; the node's error when the key
/// is missing, holds no list, or holds too many elements.
pub fn elements(input: &Value, map: &MapOptions) -> Result<Vec<Value>, String> {
    let mut value = input;
    for part in map.over.split('.') {
        match value.get(part) {
            Some(found) => value = found,
            None => {
                return Err(format!(
                    "map_over key '{}' is not in the task's input context",
                    map.over
                ))
            }
        }
    }
    let Value::Array(list) = value else {
        return Err(format!(
            "map_over key '{}' holds {}, not a list",
            map.over,
            json_type(value)
        ));
    };
    if list.len() > MAX_MAP_ELEMENTS {
        return Err(format!(
            "map_over key '{}' holds {} elements; a map may have at most {MAX_MAP_ELEMENTS}",
            map.over,
            list.len()
        ));
    }
    Ok(list.clone())
}

/// The name of a JSON value's type, as Python calls it.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "None",
        Value::Bool(_) => "a bool",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an int",
        Value::String(_) => "a str",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dict",
    }
}

/// One ended instance as the node's end reads it.
pub struct InstanceEnd<'a> {
    /// Its index.
    pub index: u32,
    /// Its final status.
    pub status: TaskStatus,
    /// Its stored output (`{"value": ...}`), when it completed.
    pub output: Option<&'a str>,
    /// Its error, when it failed.
    pub error: Option<&'a str>,
}

/// A node's end: its status, its error, and its output's JSON.
#[derive(Debug, PartialEq)]
pub struct NodeEnd {
    /// Failed when an instance failed (or was cancelled), Completed otherwise.
    pub status: TaskStatus,
    /// Names the failed indices, when any failed.
    pub error: Option<String>,
    /// `{collect_as or task_id: [values in index order]}`, None at an index without a value.
    pub output: String,
}

/// The end of the node `task_id` given its instances' ends in index order.
pub fn node_end(task_id: &str, map: &MapOptions, instances: &[InstanceEnd<'_>]) -> NodeEnd {
    let mut values = Vec::with_capacity(instances.len());
    let mut failed: Vec<&InstanceEnd<'_>> = Vec::new();
    for instance in instances {
        let value = instance
            .output
            .filter(|_| instance.status == TaskStatus::Completed)
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|mut v| v.get_mut(VALUE_KEY).map(Value::take))
            .unwrap_or(Value::Null);
        // A skipped instance (it raised SkipTask) has no value but did not fail.
        if matches!(instance.status, TaskStatus::Failed | TaskStatus::Cancelled) {
            failed.push(instance);
        }
        values.push(value);
    }
    let key = map.collect_as.as_deref().unwrap_or(task_id);
    let output = serde_json::json!({ key: values }).to_string();
    if failed.is_empty() {
        return NodeEnd {
            status: TaskStatus::Completed,
            error: None,
            output,
        };
    }
    let mut listed: Vec<String> = failed
        .iter()
        .take(LISTED_FAILURES)
        .map(|i| i.index.to_string())
        .collect();
    if failed.len() > LISTED_FAILURES {
        listed.push("...".to_string());
    }
    let first = failed[0];
    let why = first
        .error
        .map(str::to_string)
        .unwrap_or_else(|| first.status.as_str().to_string());
    NodeEnd {
        status: TaskStatus::Failed,
        error: Some(format!(
            "{} of {} map instances failed ({} {}); first, index {}: {why}",
            failed.len(),
            instances.len(),
            if failed.len() == 1 {
                "index"
            } else {
                "indices"
            },
            listed.join(", "),
            first.index
        )),
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(over: &str) -> MapOptions {
        MapOptions::over(over)
    }

    #[test]
    fn elements_follow_a_dotted_path() {
        let input = json!({"batch": {"files": [1, "a", {"b": 2}]}});
        assert_eq!(
            elements(&input, &map("batch.files")).unwrap(),
            vec![json!(1), json!("a"), json!({"b": 2})]
        );
    }

    #[test]
    fn a_missing_key_a_non_list_and_too_many_elements_are_errors() {
        let missing = elements(&json!({"a": 1}), &map("files")).unwrap_err();
        assert_eq!(
            missing,
            "map_over key 'files' is not in the task's input context"
        );
        let not_list = elements(&json!({"files": {"x": 1}}), &map("files")).unwrap_err();
        assert_eq!(not_list, "map_over key 'files' holds a dict, not a list");
        let big = json!({"files": vec![0; MAX_MAP_ELEMENTS + 1]});
        let too_many = elements(&big, &map("files")).unwrap_err();
        assert!(too_many.contains("100001 elements") && too_many.contains("at most 100000"));
    }

    #[test]
    fn a_node_collects_values_in_order_and_names_failed_indices() {
        let ok = r#"{"value": 1}"#;
        let ends: Vec<InstanceEnd<'_>> = (0..8)
            .map(|index| InstanceEnd {
                index,
                status: if index % 2 == 1 {
                    TaskStatus::Failed
                } else {
                    TaskStatus::Completed
                },
                output: Some(ok),
                error: Some("ValueError: boom"),
            })
            .collect();
        let end = node_end("t", &map("x"), &ends);
        assert_eq!(end.status, TaskStatus::Failed);
        assert_eq!(
            end.error.as_deref(),
            Some("4 of 8 map instances failed (indices 1, 3, 5, 7); first, index 1: ValueError: boom")
        );
        assert_eq!(end.output, r#"{"t":[1,null,1,null,1,null,1,null]}"#);
        let mut named = map("x");
        named.collect_as = Some("out".into());
        let done = node_end("t", &named, &ends[..1]);
        assert_eq!(
            (done.status, done.output.as_str()),
            (TaskStatus::Completed, r#"{"out":[1]}"#)
        );
        assert_eq!(node_end("t", &map("x"), &[]).output, r#"{"t":[]}"#);
        let skipped = InstanceEnd {
            index: 0,
            status: TaskStatus::Skipped,
            output: None,
            error: None,
        };
        let end = node_end("t", &map("x"), &[skipped]);
        assert_eq!(
            (end.status, end.output.as_str()),
            (TaskStatus::Completed, r#"{"t":[null]}"#)
        );
    }
}

//! Sub-workflows: a task (a node) that runs another workflow as a child execution and ends
//! when the child ends. These are the pure decisions around it: the child's input, its key,
//! how deep plans nest, and the messages; `database::subworkflows` stores them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::plan::ExecutionPlan;
use super::ExecutionStatus;

/// Most levels of sub-workflows below a top-level execution.
pub const MAX_DEPTH: u32 = 16;

/// The workflow a sub-workflow task runs, as the parent's plan stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subworkflow {
    /// The child workflow's name.
    pub workflow_name: String,
    /// Its version (graph digest).
    pub workflow_version: String,
    /// Its plan, captured when the task was made: parent and child run one version.
    pub plan: Arc<ExecutionPlan>,
    /// The input keys the child gets; None: the task's whole input.
    pub input_keys: Option<Vec<String>>,
    /// How long the child may run before it is cancelled and the task fails.
    pub timeout: Option<Duration>,
}

impl Subworkflow {
    /// The sub-workflow as a stored plan keeps it.
    pub fn to_json(&self) -> Value {
        json!({
            "workflow": self.workflow_name,
            "version": self.workflow_version,
            "plan": self.plan.to_json(),
            "input_keys": self.input_keys,
            "timeout": self.timeout.map(|t| t.as_secs_f64()),
        })
    }

    /// Reads [`Subworkflow::to_json`] back; None when unreadable.
    pub fn from_json(value: &Value) -> Option<Self> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
        Some(Self {
            workflow_name: text("workflow")?,
            workflow_version: text("version")?,
            plan: Arc::new(ExecutionPlan::from_json(&text("plan")?).ok()?),
            input_keys: value
                .get("input_keys")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                }),
            timeout: value
                .get("timeout")
                .and_then(Value::as_f64)
                .and_then(|s| Duration::try_from_secs_f64(s).ok()),
        })
    }
}

/// How many levels of sub-workflows `plan` holds (0: none).
pub fn nesting(plan: &ExecutionPlan) -> u32 {
    plan.tasks()
        .iter()
        .filter_map(|t| t.options.subworkflow.as_ref())
        .map(|child| 1 + nesting(&child.plan))
        .max()
        .unwrap_or(0)
}

/// Whether `plan` runs the workflow `name` as a sub-workflow, at any depth.
pub fn runs_workflow(plan: &ExecutionPlan, name: &str) -> bool {
    plan.tasks()
        .iter()
        .filter_map(|t| t.options.subworkflow.as_ref())
        .any(|child| child.workflow_name == name || runs_workflow(&child.plan, name))
}

/// Why a workflow named `name` with `plan` cannot be built, if it cannot: it contains itself,
/// or nests sub-workflows deeper than [`MAX_DEPTH`].
pub fn check_nesting(name: &str, plan: &ExecutionPlan) -> Result<(), String> {
    if runs_workflow(plan, name) {
        return Err(format!(
            "workflow '{name}' contains itself as a sub-workflow; a workflow cannot run itself"
        ));
    }
    let depth = nesting(plan);
    if depth > MAX_DEPTH {
        return Err(format!(
            "workflow '{name}' nests sub-workflows {depth} levels deep; at most {MAX_DEPTH} are allowed"
        ));
    }
    Ok(())
}

/// The idempotency key of the child of the row `row_id` (a task id, or `node[i]`) of
/// execution `parent`: the same for every attempt, so a node finds its child again.
pub fn child_key(parent: Uuid, row_id: &str) -> String {
    format!("cloacina:child:{parent}/{row_id}")
}

/// The key a node waits on while its child runs; the child's end wakes it.
pub fn child_wait_key(child: Uuid) -> String {
    format!("child:{child}")
}

/// The reason a node shows while its child runs.
pub fn waiting_reason(child: Uuid, workflow: &str) -> String {
    format!("waiting for child execution {child} (workflow '{workflow}')")
}

/// The error of a node whose child ended `status` (Failed or Cancelled) with `error`.
pub fn failure_message(
    child: Uuid,
    workflow: &str,
    status: ExecutionStatus,
    error: Option<&str>,
) -> String {
    let why = error.unwrap_or("no error recorded");
    format!(
        "SubworkflowError: child execution {child} of workflow '{workflow}' ended {status}: {why}"
    )
}

/// The error of a node whose child ran past `timeout`.
pub fn timeout_message(child: Uuid, workflow: &str, timeout: Duration) -> String {
    format!(
        "TimeoutError: child execution {child} of workflow '{workflow}' did not end within {} s; it was cancelled",
        timeout.as_secs_f64()
    )
}

/// The child's input from the node's input `input` (only `keys`, when given); the error names
/// a key the input lacks.
pub fn child_input(
    input: &Map<String, Value>,
    keys: Option<&[String]>,
    task_id: &str,
) -> Result<Map<String, Value>, String> {
    let Some(keys) = keys else {
        return Ok(input.clone());
    };
    keys.iter()
        .map(|key| match input.get(key) {
            Some(value) => Ok((key.clone(), value.clone())),
            None => Err(format!(
                "KeyError: sub-workflow task '{task_id}': input key '{key}' is not in the task's input context"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_gets_the_whole_input_or_the_keys_named() {
        let input: Map<String, Value> =
            serde_json::from_str(r#"{"a": 1, "b": [2], "c": null}"#).unwrap();
        assert_eq!(child_input(&input, None, "n").unwrap(), input);
        let keys = vec!["b".to_string(), "c".to_string()];
        let some = child_input(&input, Some(&keys), "n").unwrap();
        assert_eq!(Value::Object(some), json!({"b": [2], "c": null}));
        let missing = child_input(&input, Some(&["z".to_string()]), "n").unwrap_err();
        assert!(
            missing.contains("'z'") && missing.contains("'n'"),
            "{missing}"
        );
    }

    #[test]
    fn keys_and_messages_name_the_child() {
        let parent = Uuid::nil();
        assert_eq!(
            child_key(parent, "enrich[3]"),
            format!("cloacina:child:{parent}/enrich[3]")
        );
        let child = Uuid::from_u128(7);
        let message = failure_message(
            child,
            "enrich",
            ExecutionStatus::Failed,
            Some("ValueError: x"),
        );
        assert!(
            message.starts_with("SubworkflowError: child execution "),
            "{message}"
        );
        assert!(
            message.contains(&child.to_string())
                && message.ends_with("ended Failed: ValueError: x")
        );
        assert!(waiting_reason(child, "enrich").contains(&child.to_string()));
    }
}

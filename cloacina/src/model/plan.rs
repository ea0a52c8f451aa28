//! The graph and task options of one execution, stored with it so any worker can drive it.

use std::sync::Arc;
use std::time::Duration;

use once_cell::sync::OnceCell;
use serde_json::{json, Value};

use super::hooks::HookKind;
use super::limits::KeyTemplate;
use super::subworkflows::Subworkflow;
use super::waits::WaitFor;
use crate::error::{Error, Result};
use crate::policy::{MapOptions, RetryPolicy, TaskOptions, TriggerRule};
use crate::workflow::Workflow;

/// One task of a plan: its id, upstream positions and how it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTask {
    /// The task's id; workers find its function by this id.
    pub id: String,
    /// Positions (in topological order) of its direct upstream tasks.
    pub dependencies: Vec<usize>,
    /// Retries, timeout and trigger rule, as they were when the execution was submitted.
    pub options: TaskOptions,
}

/// A workflow's graph in topological order, without functions: what the database stores.
#[derive(Debug, Clone)]
pub struct ExecutionPlan {
    tasks: Vec<PlannedTask>,
    dependents: Vec<Vec<usize>>,
    /// Its JSON text, made at the first submit and reused by the next ones (clones share it).
    json: Arc<OnceCell<String>>,
}

impl PartialEq for ExecutionPlan {
    fn eq(&self, other: &Self) -> bool {
        self.tasks == other.tasks
    }
}

impl ExecutionPlan {
    /// The plan of `workflow`: its tasks' ids, edges and options.
    pub fn of(workflow: &Workflow) -> Self {
        let tasks = workflow
            .tasks()
            .iter()
            .enumerate()
            .map(|(position, task)| {
                let mut options = task.options().clone();
                options.limits.extend(workflow.limits().iter().cloned());
                PlannedTask {
                    id: task.id().to_string(),
                    dependencies: workflow.dependencies_of(position).to_vec(),
                    options,
                }
            })
            .collect();
        Self::new(tasks)
    }

    fn new(tasks: Vec<PlannedTask>) -> Self {
        let mut dependents = vec![Vec::new(); tasks.len()];
        for (position, task) in tasks.iter().enumerate() {
            for &dep in &task.dependencies {
                dependents[dep].push(position);
            }
        }
        Self {
            tasks,
            dependents,
            json: Arc::default(),
        }
    }

    /// Tasks in topological order.
    pub fn tasks(&self) -> &[PlannedTask] {
        &self.tasks
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the plan has no tasks (never true of a stored plan).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Whether the task at `position` is ready when its execution starts: it has no upstream
    /// tasks and is not a hook.
    pub fn is_root(&self, position: usize) -> bool {
        self.dependencies_of(position).is_empty() && self.tasks[position].options.hook.is_none()
    }

    /// Positions of the direct upstream tasks of the task at `position`.
    pub fn dependencies_of(&self, position: usize) -> &[usize] {
        &self.tasks[position].dependencies
    }

    /// `positions` highest task priority first, in position order among equals.
    pub fn by_priority(&self, positions: &[usize]) -> Vec<usize> {
        let mut sorted = positions.to_vec();
        sorted.sort_by_key(|&p| (std::cmp::Reverse(self.tasks[p].options.priority), p));
        sorted
    }

    /// Positions of the tasks that directly depend on the task at `position`.
    pub fn dependents_of(&self, position: usize) -> &[usize] {
        &self.dependents[position]
    }

    /// Positions of every transitive upstream task of `position`, ascending.
    pub fn ancestors_of(&self, position: usize) -> Vec<usize> {
        let mut seen = vec![false; self.tasks.len()];
        let mut stack = self.tasks[position].dependencies.clone();
        while let Some(p) = stack.pop() {
            if !std::mem::replace(&mut seen[p], true) {
                stack.extend(&self.tasks[p].dependencies);
            }
        }
        (0..self.tasks.len()).filter(|&p| seen[p]).collect()
    }

    /// The plan as the JSON text stored with the execution.
    pub fn to_json(&self) -> String {
        self.json.get_or_init(|| self.make_json()).clone()
    }

    fn make_json(&self) -> String {
        let tasks: Vec<Value> = self
            .tasks
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "dependencies": t.dependencies,
                    "options": options_to_json(&t.options),
                })
            })
            .collect();
        json!({ "version": 1, "tasks": tasks }).to_string()
    }

    /// Parses a stored plan.
    pub fn from_json(text: &str) -> Result<Self> {
        let corrupt =
            |what: &str| Error::Database(format!("stored execution plan is corrupt: {what}"));
        let value: Value = serde_json::from_str(text)?;
        let tasks = value
            .get("tasks")
            .and_then(Value::as_array)
            .ok_or_else(|| corrupt("no task list"))?;
        let mut planned = Vec::with_capacity(tasks.len());
        for (position, task) in tasks.iter().enumerate() {
            let id = task
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| corrupt("a task has no id"))?;
            let dependencies = task
                .get("dependencies")
                .and_then(Value::as_array)
                .ok_or_else(|| corrupt("a task has no dependency list"))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize).filter(|&d| d < position))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| corrupt("a dependency is not an earlier position"))?;
            planned.push(PlannedTask {
                id: id.to_string(),
                dependencies,
                options: options_from_json(task.get("options").unwrap_or(&Value::Null)),
            });
        }
        Ok(Self::new(planned))
    }
}

fn options_to_json(options: &TaskOptions) -> Value {
    let retry = &options.retry;
    json!({
        "retries": retry.retries,
        "retry_delay": retry.delay.as_secs_f64(),
        "retry_backoff": retry.backoff,
        "retry_max_delay": retry.max_delay.as_secs_f64(),
        "retry_jitter": retry.jitter,
        "timeout": options.timeout.map(|t| t.as_secs_f64()),
        "retry_timeouts": options.retry_timeouts,
        "trigger_rule": options.trigger_rule.as_str(),
        "map": options.map.as_ref().map(|m| json!({
            "over": m.over,
            "item": m.item,
            "limit": m.limit,
            "collect_as": m.collect_as,
        })),
        "limits": options.limits.iter().map(KeyTemplate::stored).collect::<Vec<_>>(),
        "priority": options.priority,
        "wait": options.wait.as_ref().map(WaitFor::to_json),
        "subworkflow": options.subworkflow.as_ref().map(Subworkflow::to_json),
        "hook": options.hook.map(HookKind::as_str),
    })
}

/// Reads a stored map; None when the task is not mapped (or the map is unreadable).
fn map_from_json(value: &Value) -> Option<MapOptions> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    Some(MapOptions {
        over: text("over")?,
        item: text("item")?,
        limit: value
            .get("limit")
            .and_then(Value::as_u64)
            .map(|l| l.min(u64::from(u32::MAX)) as u32),
        collect_as: text("collect_as"),
    })
}

/// Reads stored options; a missing or unreadable field keeps its default.
fn options_from_json(value: &Value) -> TaskOptions {
    let defaults = TaskOptions::new();
    let number = |key: &str| value.get(key).and_then(Value::as_f64);
    let seconds = |key: &str| number(key).and_then(|s| Duration::try_from_secs_f64(s).ok());
    TaskOptions {
        retry: RetryPolicy {
            retries: value
                .get("retries")
                .and_then(Value::as_u64)
                .map_or(defaults.retry.retries, |r| {
                    r.min(u64::from(u32::MAX)) as u32
                }),
            delay: seconds("retry_delay").unwrap_or(defaults.retry.delay),
            backoff: number("retry_backoff").unwrap_or(defaults.retry.backoff),
            max_delay: seconds("retry_max_delay").unwrap_or(defaults.retry.max_delay),
            jitter: number("retry_jitter").unwrap_or(defaults.retry.jitter),
        },
        timeout: seconds("timeout"),
        retry_timeouts: value
            .get("retry_timeouts")
            .and_then(Value::as_bool)
            .unwrap_or(defaults.retry_timeouts),
        trigger_rule: value
            .get("trigger_rule")
            .and_then(Value::as_str)
            .and_then(TriggerRule::parse)
            .unwrap_or(defaults.trigger_rule),
        map: value.get("map").and_then(map_from_json),
        limits: value
            .get("limits")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|k| KeyTemplate::from_stored(k).ok())
                    .collect()
            })
            .unwrap_or_default(),
        priority: value
            .get("priority")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_default(),
        wait: value.get("wait").and_then(WaitFor::from_json),
        subworkflow: value.get("subworkflow").and_then(Subworkflow::from_json),
        hook: value
            .get("hook")
            .and_then(Value::as_str)
            .and_then(HookKind::parse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::FnTask;

    #[test]
    fn plan_round_trips_through_json() {
        let mut options = TaskOptions::new();
        options.retry.retries = 3;
        options.retry.delay = Duration::from_millis(250);
        options.timeout = Some(Duration::from_secs(2));
        options.trigger_rule = TriggerRule::AllDone;
        options.map = Some(MapOptions {
            limit: Some(3),
            ..MapOptions::over("a.files")
        });
        options.limits = vec![
            KeyTemplate::parse("openai").unwrap(),
            KeyTemplate::parse("tenant:{tenant}").unwrap(),
            KeyTemplate::parse("customer:{customer}")
                .unwrap()
                .for_execution(),
        ];
        options.priority = -2;
        let a = FnTask::new("a", &[], |c| async move { Ok(c) });
        let b = FnTask::with_options("b", &["a"], options, |c| async move { Ok(c) });
        let workflow = Workflow::new("wf", vec![a, b]).unwrap();
        let plan = ExecutionPlan::of(&workflow);
        assert_eq!(ExecutionPlan::from_json(&plan.to_json()).unwrap(), plan);
        assert_eq!(plan.dependents_of(0), &[1]);
        assert_eq!(plan.ancestors_of(1), vec![0]);
    }
}

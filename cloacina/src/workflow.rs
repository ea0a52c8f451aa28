//! Workflows: validated DAGs of tasks in a deterministic topological order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use once_cell::sync::OnceCell;

use crate::error::WorkflowError;
use crate::model::limits::KeyTemplate;
use crate::model::ExecutionPlan;
use crate::task::Task;

/// A validated DAG of tasks, held in topological order.
#[derive(Clone)]
pub struct Workflow {
    name: String,
    version: String,
    tasks: Vec<Arc<dyn Task>>,
    dependencies: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    /// Limit keys each execution holds from its first task's start to its end.
    limits: Vec<KeyTemplate>,
    /// Its execution plan, built at the first submit (tasks and options never change) and
    /// shared by its clones (each call from Python submits a clone).
    plan: Arc<OnceCell<Arc<ExecutionPlan>>>,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("task_ids", &self.task_ids().collect::<Vec<_>>())
            .finish()
    }
}

impl Workflow {
    /// Validates the graph and orders it; ties are broken by the order of `tasks`.
    pub fn new(name: impl Into<String>, tasks: Vec<Arc<dyn Task>>) -> Result<Self, WorkflowError> {
        let name = name.into();
        if name.trim().is_empty() {
            return Err(WorkflowError::EmptyName);
        }
        if tasks.is_empty() {
            return Err(WorkflowError::Empty(name));
        }
        let mut index = HashMap::with_capacity(tasks.len());
        for (i, task) in tasks.iter().enumerate() {
            if index.insert(task.id(), i).is_some() {
                return Err(WorkflowError::DuplicateTask {
                    workflow: name,
                    task: task.id().to_string(),
                });
            }
        }
        for task in tasks.iter().filter(|t| t.options().map.is_some()) {
            let prefix = format!("{}[", task.id());
            if let Some(clash) = tasks.iter().find(|t| t.id().starts_with(&prefix)) {
                return Err(WorkflowError::InstanceKeyClash {
                    task: clash.id().to_string(),
                    mapped: task.id().to_string(),
                });
            }
        }
        let mut upstream = Vec::with_capacity(tasks.len());
        for task in &tasks {
            let mut deps = Vec::with_capacity(task.dependencies().len());
            for dep in task.dependencies() {
                let &d =
                    index
                        .get(dep.as_str())
                        .ok_or_else(|| WorkflowError::UnknownDependency {
                            task: task.id().to_string(),
                            dependency: dep.clone(),
                        })?;
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
            upstream.push(deps);
        }
        let order = topological_order(&tasks, &upstream)?;

        let mut position = vec![0; tasks.len()];
        for (pos, &original) in order.iter().enumerate() {
            position[original] = pos;
        }
        let ordered: Vec<Arc<dyn Task>> = order.iter().map(|&i| tasks[i].clone()).collect();
        let dependencies: Vec<Vec<usize>> = order
            .iter()
            .map(|&i| {
                let mut deps: Vec<usize> = upstream[i].iter().map(|&d| position[d]).collect();
                deps.sort_unstable();
                deps
            })
            .collect();
        let mut dependents = vec![Vec::new(); ordered.len()];
        for (task, deps) in dependencies.iter().enumerate() {
            for &dep in deps {
                dependents[dep].push(task);
            }
        }
        let version = content_version(&ordered, &dependencies);
        Ok(Self {
            name,
            version,
            tasks: ordered,
            dependencies,
            dependents,
            limits: Vec::new(),
            plan: Arc::default(),
        })
    }

    /// The same workflow whose every execution holds `limits` from its first task's start to
    /// its end (each key filled from the input of the task that starts it).
    pub fn with_limits(self, limits: Vec<KeyTemplate>) -> Self {
        Self {
            limits: limits.into_iter().map(KeyTemplate::for_execution).collect(),
            plan: Arc::default(),
            ..self
        }
    }

    /// The limit keys each execution holds as a whole.
    pub fn limits(&self) -> &[KeyTemplate] {
        &self.limits
    }

    /// The plan every execution of this workflow stores, built once.
    pub fn plan(&self) -> Arc<ExecutionPlan> {
        self.plan
            .get_or_init(|| Arc::new(ExecutionPlan::of(self)))
            .clone()
    }

    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A hex digest of the graph (task ids and edges): equal graphs share a version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Task ids in topological order.
    pub fn task_ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.tasks.iter().map(|t| t.id())
    }

    /// Tasks in topological order.
    pub fn tasks(&self) -> &[Arc<dyn Task>] {
        &self.tasks
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Always false: a workflow has at least one task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Positions (in topological order) of the direct upstream tasks of the task at `position`.
    pub fn dependencies_of(&self, position: usize) -> &[usize] {
        &self.dependencies[position]
    }

    /// Positions of the tasks that directly depend on the task at `position`.
    pub fn dependents_of(&self, position: usize) -> &[usize] {
        &self.dependents[position]
    }

    /// Every dependency edge as (upstream position, downstream position), in task order.
    fn edges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.len()).flat_map(|t| self.dependencies_of(t).iter().map(move |&d| (d, t)))
    }

    /// The graph as a Mermaid flowchart, top to bottom.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for (position, id) in self.task_ids().enumerate() {
            // Mermaid reads `"` inside a label as its end; `#quot;` is its escape.
            let label = id.replace('"', "#quot;");
            out.push_str(&format!("    t{position}[\"{label}\"]\n"));
        }
        for (from, to) in self.edges() {
            out.push_str(&format!("    t{from} --> t{to}\n"));
        }
        out
    }

    /// The graph in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let quote = |text: &str| format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = format!("digraph {} {{\n    rankdir=TB;\n", quote(self.name()));
        for id in self.task_ids() {
            out.push_str(&format!("    {};\n", quote(id)));
        }
        let ids: Vec<&str> = self.task_ids().collect();
        for (from, to) in self.edges() {
            out.push_str(&format!(
                "    {} -> {};\n",
                quote(ids[from]),
                quote(ids[to])
            ));
        }
        out.push_str("}\n");
        out
    }
}

/// Kahn's algorithm, always taking the earliest-listed ready task, so the order is deterministic.
fn topological_order(
    tasks: &[Arc<dyn Task>],
    upstream: &[Vec<usize>],
) -> Result<Vec<usize>, WorkflowError> {
    let mut waiting_on: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut downstream = vec![Vec::new(); tasks.len()];
    for (task, deps) in upstream.iter().enumerate() {
        for &dep in deps {
            downstream[dep].push(task);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = waiting_on
        .iter()
        .enumerate()
        .filter(|(_, &n)| n == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(tasks.len());
    while let Some(Reverse(task)) = ready.pop() {
        order.push(task);
        for &next in &downstream[task] {
            waiting_on[next] -= 1;
            if waiting_on[next] == 0 {
                ready.push(Reverse(next));
            }
        }
    }
    if order.len() == tasks.len() {
        return Ok(order);
    }
    Err(WorkflowError::Cycle(find_cycle(
        tasks,
        upstream,
        &waiting_on,
    )))
}

/// Walks dependencies among the tasks Kahn could not order until one repeats: that loop is a cycle.
fn find_cycle(
    tasks: &[Arc<dyn Task>],
    upstream: &[Vec<usize>],
    waiting_on: &[usize],
) -> Vec<String> {
    let stuck = |i: usize| waiting_on[i] > 0;
    let start = (0..tasks.len())
        .find(|&i| stuck(i))
        .expect("a cycle leaves tasks unordered");
    let mut path = vec![start];
    let mut seen_at = HashMap::from([(start, 0usize)]);
    let mut current = start;
    loop {
        let next = *upstream[current]
            .iter()
            .find(|&&d| stuck(d))
            .expect("an unordered task waits on another unordered task");
        if let Some(&at) = seen_at.get(&next) {
            let mut cycle: Vec<String> = path[at..]
                .iter()
                .map(|&i| tasks[i].id().to_string())
                .collect();
            cycle.push(tasks[next].id().to_string());
            return cycle;
        }
        seen_at.insert(next, path.len());
        path.push(next);
        current = next;
    }
}

/// FNV-1a over the ids and edges sorted by id: stable across runs, platforms and listing order.
fn content_version(tasks: &[Arc<dyn Task>], dependencies: &[Vec<usize>]) -> String {
    let mut entries: Vec<(&str, Vec<&str>)> = tasks
        .iter()
        .zip(dependencies)
        .map(|(task, deps)| {
            let mut dep_ids: Vec<&str> = deps.iter().map(|&d| tasks[d].id()).collect();
            dep_ids.sort_unstable();
            (task.id(), dep_ids)
        })
        .collect();
    entries.sort_unstable();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (id, dep_ids) in entries {
        feed(id.as_bytes());
        feed(&[0]);
        for dep in dep_ids {
            feed(dep.as_bytes());
            feed(&[1]);
        }
        feed(&[2]);
    }
    format!("{hash:016x}")
}

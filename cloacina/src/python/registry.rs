//! The process-wide registry of Python tasks, filled by the `@task` decorator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use once_cell::sync::Lazy;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::policy::TaskOptions;

/// A Python function registered as a task.
pub(crate) struct TaskDefinition {
    /// The task's id.
    pub id: String,
    /// Ids of the tasks it depends on.
    pub dependencies: Vec<String>,
    /// The decorated function.
    pub function: Py<PyAny>,
    /// Whether the function is an `async def` coroutine function.
    pub is_async: bool,
    /// Retries, timeout and trigger rule.
    pub options: TaskOptions,
    /// Exception types that are retried (a tuple, for `isinstance`).
    pub retry_on: Py<PyTuple>,
}

/// Registered tasks by id, remembering the order of first registration.
#[derive(Default)]
pub(crate) struct Registry {
    order: Vec<String>,
    tasks: HashMap<String, Arc<TaskDefinition>>,
}

static REGISTRY: Lazy<Mutex<Registry>> = Lazy::new(Mutex::default);

/// The registry, locked. Never hold the guard across Python calls.
pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// Adds `definition`, replacing any earlier task with the same id (which keeps its place),
    /// and returns the replaced one: drop it after releasing the lock, as dropping its function
    /// may run Python code (`__del__`) that uses the registry.
    #[must_use = "drop the replaced definition after releasing the registry lock"]
    pub(crate) fn register(&mut self, definition: TaskDefinition) -> Option<Arc<TaskDefinition>> {
        let id = definition.id.clone();
        let replaced = self.tasks.insert(id.clone(), Arc::new(definition));
        if replaced.is_none() {
            self.order.push(id);
        }
        replaced
    }

    /// The task registered under `id`.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<TaskDefinition>> {
        self.tasks.get(id).cloned()
    }

    /// Every registered task id, in order of first registration.
    pub(crate) fn ids(&self) -> &[String] {
        &self.order
    }
}

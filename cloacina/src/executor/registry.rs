//! Where a worker finds a task's function by its id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::task::Task;
use crate::workflow::Workflow;

/// The tasks a worker can run, by id.
pub trait TaskRegistry: Send + Sync {
    /// The task registered under `id`, ready to run.
    fn get(&self, id: &str) -> Option<Arc<dyn Task>>;
    /// Whether a task is registered under `id`.
    fn contains(&self, id: &str) -> bool;
    /// Every registered id.
    fn ids(&self) -> Vec<String>;
    /// Called with each workflow this executor submits, before it is stored.
    fn learn(&self, _workflow: &Workflow) {}
}

/// The tasks of the workflows this executor submitted: the registry of a Rust-only executor.
#[derive(Default)]
pub struct SubmittedTasks(Mutex<HashMap<String, Arc<dyn Task>>>);

impl SubmittedTasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn Task>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TaskRegistry for SubmittedTasks {
    fn get(&self, id: &str) -> Option<Arc<dyn Task>> {
        self.lock().get(id).cloned()
    }

    fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn learn(&self, workflow: &Workflow) {
        let mut tasks = self.lock();
        for task in workflow.tasks() {
            tasks.insert(task.id().to_string(), task.clone());
        }
    }
}

//! The Python API: registry, marshalling and the asyncio bridge, shared by every backend wheel.

mod args;
mod bridge;
mod decorator;
mod errors;
mod executor;
mod json_text;
mod logs;
mod marshal;
mod named_limits;
mod observer;
mod options;
mod registry;
mod results;
mod schedules;
mod subworkflows;
mod task;
mod threads;
mod traces;
mod waits;
mod workflow;

use once_cell::sync::OnceCell;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::database::url::BackendKind;

static BACKEND: OnceCell<BackendKind> = OnceCell::new();

/// The backend this extension module was built for.
pub(crate) fn backend() -> BackendKind {
    *BACKEND
        .get()
        .expect("the module registers its backend on import")
}

/// The facts every consumer (CLI, dashboard, SyncExecutor, stubs, tests) reads from here:
/// status names and defaults.
fn add_facts(module: &Bound<'_, PyModule>) -> PyResult<()> {
    use crate::model::{ExecutionStatus, TaskStatus};
    let py = module.py();
    let names = |statuses: &[&str]| PyTuple::new_bound(py, statuses.iter().copied());
    let execution_final: Vec<&str> = ExecutionStatus::names()
        .iter()
        .copied()
        .filter(|n| ExecutionStatus::parse(n).is_some_and(ExecutionStatus::is_terminal))
        .collect();
    let task_final: Vec<&str> = TaskStatus::names()
        .iter()
        .copied()
        .filter(|n| TaskStatus::parse(n).is_some_and(TaskStatus::is_terminal))
        .collect();
    module.add("EXECUTION_STATUSES", names(ExecutionStatus::names()))?;
    module.add("FINAL_EXECUTION_STATUSES", names(&execution_final))?;
    module.add("TASK_STATUSES", names(TaskStatus::names()))?;
    module.add("FINAL_TASK_STATUSES", names(&task_final))?;
    module.add(
        "DEFAULT_MAX_CONCURRENCY",
        crate::executor::DEFAULT_MAX_CONCURRENCY,
    )?;
    module.add(
        "DEFAULT_LEASE_TIMEOUT",
        crate::executor::DEFAULT_LEASE_TIMEOUT.as_secs_f64(),
    )?;
    module.add(
        "DEFAULT_LIST_LIMIT",
        crate::database::queries::ExecutionFilter::default().limit,
    )?;
    Ok(())
}

/// Fills a backend wheel's native module with the public API.
pub fn register(module: &Bound<'_, PyModule>, backend: BackendKind) -> PyResult<()> {
    let _ = BACKEND.set(backend);
    bridge::configure_runtime();
    module.add_function(wrap_pyfunction!(decorator::task, module)?)?;
    module.add_class::<decorator::TaskDecorator>()?;
    module.add_class::<workflow::PyWorkflow>()?;
    module.add_class::<executor::PyUnifiedExecutor>()?;
    module.add_function(wrap_pyfunction!(task::current_task, module)?)?;
    errors::add_to_module(module)?;
    waits::add_to_module(module)?;
    crate::task::name_engine_failures(errors::exception_name);
    logs::install_null_handler(module.py())?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add("backend", backend.name())?;
    add_facts(module)?;
    bridge::install_exit_hook(module)?;
    Ok(())
}

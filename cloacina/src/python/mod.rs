//! The Python API: registry, marshalling and the asyncio bridge, shared by every backend wheel.

mod args;
mod bridge;
mod decorator;
mod errors;
mod executor;
mod json_text;
mod logs;
mod marshal;
mod observer;
mod options;
mod registry;
mod results;
mod schedules;
mod task;
mod threads;
mod traces;
mod workflow;

use once_cell::sync::OnceCell;
use pyo3::prelude::*;

use crate::database::url::BackendKind;

static BACKEND: OnceCell<BackendKind> = OnceCell::new();

/// The backend this extension module was built for.
pub(crate) fn backend() -> BackendKind {
    *BACKEND
        .get()
        .expect("the module registers its backend on import")
}

/// Fills a backend wheel's native module with the public API.
pub fn register(module: &Bound<'_, PyModule>, backend: BackendKind) -> PyResult<()> {
    let _ = BACKEND.set(backend);
    module.add_function(wrap_pyfunction!(decorator::task, module)?)?;
    module.add_class::<decorator::TaskDecorator>()?;
    module.add_class::<workflow::PyWorkflow>()?;
    module.add_class::<executor::PyUnifiedExecutor>()?;
    module.add_function(wrap_pyfunction!(task::current_task, module)?)?;
    errors::add_to_module(module)?;
    logs::install_null_handler(module.py())?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add("backend", backend.name())?;
    bridge::install_exit_hook(module)?;
    Ok(())
}

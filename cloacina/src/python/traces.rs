//! OpenTelemetry spans, through the backend package's `_tracing` module, when the
//! `opentelemetry` package is installed; without it nothing is imported.

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use uuid::Uuid;

use super::backend;
use crate::events::Event;

static MODULE: GILOnceCell<Option<PyObject>> = GILOnceCell::new();
/// Whether spans are made; readable without the GIL.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The `_tracing` module, found (and imported) once per process if OpenTelemetry is installed.
fn module(py: Python<'_>) -> Option<&PyObject> {
    MODULE
        .get_or_init(py, || {
            let installed = py
                .import_bound("importlib.util")
                .and_then(|util| util.call_method1("find_spec", ("opentelemetry",)))
                .is_ok_and(|spec| !spec.is_none());
            let module = installed
                .then(|| {
                    let name = format!("cloacina_{}._tracing", backend().name());
                    py.import_bound(name.as_str()).ok()
                })
                .flatten()
                .map(|m| m.into_any().unbind());
            ACTIVE.store(module.is_some(), Ordering::Relaxed);
            module
        })
        .as_ref()
}

/// Whether spans are made (known once an executor was initialized).
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Looks OpenTelemetry up; called where the GIL is held anyway (`initialize`).
pub(crate) fn detect(py: Python<'_>) {
    let _ = module(py);
}

fn call(py: Python<'_>, function: &str, args: impl IntoPy<Py<pyo3::types::PyTuple>>) {
    if let Some(module) = module(py) {
        // A failing exporter must never fail a task or an execution.
        let _ = module.call_method1(py, function, args);
    }
}

/// Opens the span of an execution about to be submitted, as a child of the caller's span.
pub(crate) fn start_execution(py: Python<'_>, execution_id: Uuid, workflow_name: &str) {
    call(
        py,
        "start_execution",
        (execution_id.to_string(), workflow_name),
    );
}

/// Closes an execution's span, if it is open in this process.
pub(crate) fn end_execution(py: Python<'_>, execution_id: Uuid, status: &str, error: Option<&str>) {
    call(
        py,
        "end_execution",
        (execution_id.to_string(), status, error),
    );
}

/// Turns an engine event into span starts, ends and events.
pub(crate) fn trace(py: Python<'_>, event: &Event<'_>) {
    match event {
        Event::ExecutionSubmitted { .. } | Event::AttemptDiscarded { .. } => {}
        Event::ExecutionEnded {
            execution_id,
            status,
            ..
        } => end_execution(py, *execution_id, status.as_str(), None),
        Event::AttemptStarted(a) => call(
            py,
            "start_attempt",
            (
                a.execution_id.to_string(),
                a.workflow_name,
                a.task_id,
                a.attempt,
            ),
        ),
        Event::AttemptEnded {
            attempt: a,
            status,
            error,
            ..
        } => call(
            py,
            "end_attempt",
            (
                a.execution_id.to_string(),
                a.task_id,
                a.attempt,
                status.as_str(),
                *error,
            ),
        ),
        Event::RetryScheduled { attempt: a, delay } => call(
            py,
            "retry_scheduled",
            (
                a.execution_id.to_string(),
                a.task_id,
                a.attempt,
                delay.as_secs_f64(),
            ),
        ),
    }
}

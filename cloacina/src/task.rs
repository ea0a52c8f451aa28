//! The unit of work: the `Task` trait and a closure-backed implementation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use once_cell::sync::Lazy;

use crate::context::{Context, Output, SharedInput};
use crate::policy::TaskOptions;

/// What the engine does after an attempt ends with a [`TaskError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskErrorKind {
    /// Retry while the task's retry policy allows.
    Retryable,
    /// Fail now, whatever the retry policy.
    Fatal,
    /// Not a failure: mark the task Skipped, with the message as the reason.
    Skip,
    /// Stopped from outside the engine (e.g. its event loop closed): mark the task Cancelled,
    /// with the message as the reason.
    Cancelled,
    /// Not a failure: run the task again after this long, on any worker, using no retry.
    Snooze(std::time::Duration),
}

/// A failure the engine detects itself, rather than one raised by a task's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineFailure {
    /// The attempt ran past the task's timeout.
    TimedOut,
    /// The task returned an output the engine cannot store.
    InvalidOutput,
    /// The task is not registered in the process that claimed it.
    NotRegistered,
}

impl EngineFailure {
    /// The default name of this failure in messages, e.g. `TimedOut`.
    fn default_name(self) -> &'static str {
        match self {
            EngineFailure::TimedOut => "TimedOut",
            EngineFailure::InvalidOutput => "InvalidOutput",
            EngineFailure::NotRegistered => "NotRegistered",
        }
    }

    /// The name this failure's messages start with, as the task language calls it.
    pub fn name(self) -> &'static str {
        FAILURE_NAMES
            .get()
            .map_or_else(|| self.default_name(), |name| name(self))
    }
}

static FAILURE_NAMES: once_cell::sync::OnceCell<fn(EngineFailure) -> &'static str> =
    once_cell::sync::OnceCell::new();

/// Names engine failures in messages the way the task language names its errors (the Python
/// layer: `TimeoutError`, `ValueError`, `RuntimeError`); the first call wins.
pub fn name_engine_failures(names: fn(EngineFailure) -> &'static str) {
    let _ = FAILURE_NAMES.set(names);
}

/// Why a task attempt did not produce an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// One line: the error's type name and message, e.g. `ValueError: boom`.
    pub message: String,
    /// The full traceback or backtrace, when the task's language provides one.
    pub traceback: Option<String>,
    /// Whether to retry, fail or skip.
    pub kind: TaskErrorKind,
}

impl TaskError {
    /// A retryable failure with a message and no traceback.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            traceback: None,
            kind: TaskErrorKind::Retryable,
        }
    }

    /// A failure that is never retried.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            kind: TaskErrorKind::Fatal,
            ..Self::new(message)
        }
    }

    /// A failure the engine detected, never retried; its message starts with the failure's name.
    pub fn engine(failure: EngineFailure, message: impl std::fmt::Display) -> Self {
        Self::fatal(format!("{}: {message}", failure.name()))
    }

    /// A request to run the task again after `delay`, holding nothing meanwhile.
    pub fn snooze(delay: std::time::Duration) -> Self {
        Self {
            kind: TaskErrorKind::Snooze(delay),
            ..Self::new(format!("snoozed for {} s", delay.as_secs_f64()))
        }
    }

    /// A request to skip the task, with a reason.
    pub fn skip(reason: impl Into<String>) -> Self {
        Self {
            kind: TaskErrorKind::Skip,
            ..Self::new(reason)
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

/// What running a task yields: its output, merged into the context of downstream tasks.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Context, TaskError>> + Send + 'static>>;

/// What running a task on shared input yields: its output as the engine holds it.
pub type OutputFuture = Pin<Box<dyn Future<Output = Result<Output, TaskError>> + Send + 'static>>;

/// A named step of a workflow.
pub trait Task: Send + Sync {
    /// The task's id, unique within a workflow.
    fn id(&self) -> &str;
    /// Ids of the tasks that must complete before this one runs.
    fn dependencies(&self) -> &[String];
    /// Runs the task on its input context and returns its output.
    fn execute(&self, context: Context) -> TaskFuture;
    /// Runs the task on its input with shared values; by default copies them for `execute`.
    /// Override it to read the input without that copy, or to hand objects to the next task.
    fn execute_shared(&self, input: SharedInput) -> OutputFuture {
        let running = self.execute(input.to_context());
        Box::pin(async move { running.await.map(Output::from) })
    }
    /// Retries, timeout and trigger rule; the defaults unless overridden.
    fn options(&self) -> &TaskOptions {
        &DEFAULT_OPTIONS
    }
}

static DEFAULT_OPTIONS: Lazy<TaskOptions> = Lazy::new(TaskOptions::new);

type TaskFn = dyn Fn(Context) -> TaskFuture + Send + Sync;

/// A task backed by an async Rust closure.
pub struct FnTask {
    id: String,
    dependencies: Vec<String>,
    options: TaskOptions,
    run: Box<TaskFn>,
}

impl FnTask {
    /// Creates a task from an id, its dependencies and an async closure.
    #[allow(clippy::new_ret_no_self)] // workflows hold tasks as `Arc<dyn Task>`; returning one saves every caller a cast
    pub fn new<F, Fut>(id: impl Into<String>, dependencies: &[&str], run: F) -> Arc<dyn Task>
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Context, TaskError>> + Send + 'static,
    {
        Self::with_options(id, dependencies, TaskOptions::new(), run)
    }

    /// Like [`FnTask::new`], with retries, timeout and trigger rule.
    pub fn with_options<F, Fut>(
        id: impl Into<String>,
        dependencies: &[&str],
        options: TaskOptions,
        run: F,
    ) -> Arc<dyn Task>
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Context, TaskError>> + Send + 'static,
    {
        Arc::new(FnTask {
            id: id.into(),
            dependencies: dependencies.iter().map(|d| d.to_string()).collect(),
            options,
            run: Box::new(move |ctx| Box::pin(run(ctx))),
        })
    }
}

impl Task for FnTask {
    fn id(&self) -> &str {
        &self.id
    }

    fn dependencies(&self) -> &[String] {
        &self.dependencies
    }

    fn execute(&self, context: Context) -> TaskFuture {
        (self.run)(context)
    }

    fn options(&self) -> &TaskOptions {
        &self.options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_failures_are_fatal_and_named_first() {
        let error = TaskError::engine(EngineFailure::TimedOut, "task 'a' timed out after 1 s");
        assert_eq!(error.kind, TaskErrorKind::Fatal);
        let name = EngineFailure::TimedOut.name();
        assert_eq!(
            error.message,
            format!("{name}: task 'a' timed out after 1 s")
        );
        assert_ne!(
            EngineFailure::InvalidOutput.name(),
            EngineFailure::NotRegistered.name()
        );
    }
}

//! Helpers shared by the integration tests. Nothing here is mocked: every helper drives the real
//! public API against real SQLite databases.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloacina::{
    Context, DatabaseUrl, ExecutionResult, ExecutorConfig, FnTask, Task, TaskResult,
    UnifiedExecutor,
};
use serde_json::Value;
use tempfile::TempDir;

/// A fresh directory and the path of a (not yet existing) SQLite file inside it.
/// Keep the `TempDir` alive for as long as the database is used.
pub fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let path = dir.path().join("cloacina.db");
    (dir, path)
}

/// An executor on a SQLite file with the default configuration.
pub async fn file_executor(path: &std::path::Path) -> UnifiedExecutor {
    UnifiedExecutor::connect(
        DatabaseUrl::SqliteFile(path.to_path_buf()),
        ExecutorConfig::default(),
    )
    .await
    .expect("connect to SQLite file")
}

/// An executor on a SQLite file running at most `max_concurrency` tasks at once.
pub async fn file_executor_with(path: &std::path::Path, max_concurrency: usize) -> UnifiedExecutor {
    let config = ExecutorConfig {
        max_concurrency,
        ..ExecutorConfig::default()
    };
    UnifiedExecutor::connect(DatabaseUrl::SqliteFile(path.to_path_buf()), config)
        .await
        .expect("connect to SQLite file")
}

/// An executor on a private in-memory SQLite database.
pub async fn memory_executor() -> UnifiedExecutor {
    UnifiedExecutor::connect(DatabaseUrl::SqliteMemory, ExecutorConfig::default())
        .await
        .expect("connect to in-memory SQLite")
}

/// Builds a context from a JSON object literal.
pub fn ctx(value: Value) -> Context {
    match value {
        Value::Object(map) => Context::from(map),
        other => panic!("a context must be a JSON object, got {other}"),
    }
}

/// A task that ignores its input and outputs nothing.
pub fn noop(id: &str, deps: &[&str]) -> Arc<dyn Task> {
    FnTask::new(id, deps, |_ctx| async move { Ok(Context::new()) })
}

/// A task that outputs `{key: value}`.
pub fn writes(id: &str, deps: &[&str], key: &str, value: Value) -> Arc<dyn Task> {
    let key = key.to_string();
    FnTask::new(id, deps, move |_ctx| {
        let key = key.clone();
        let value = value.clone();
        async move {
            let mut out = Context::new();
            out.insert(key, value);
            Ok(out)
        }
    })
}

/// A task that sleeps for `delay`, then outputs `{key: value}`.
pub fn writes_after(
    id: &str,
    deps: &[&str],
    delay: Duration,
    key: &str,
    value: Value,
) -> Arc<dyn Task> {
    let key = key.to_string();
    FnTask::new(id, deps, move |_ctx| {
        let key = key.clone();
        let value = value.clone();
        async move {
            tokio::time::sleep(delay).await;
            let mut out = Context::new();
            out.insert(key, value);
            Ok(out)
        }
    })
}

/// The task ids of a workflow in its topological order.
pub fn order(workflow: &cloacina::Workflow) -> Vec<String> {
    workflow.task_ids().map(str::to_string).collect()
}

/// The result of task `id` in `execution`.
pub fn task<'a>(execution: &'a ExecutionResult, id: &str) -> &'a TaskResult {
    execution
        .task_results
        .iter()
        .find(|t| t.task_id == id)
        .unwrap_or_else(|| panic!("no task '{id}' in execution {execution:#?}"))
}

/// The final context of a finished execution.
pub fn final_ctx(execution: &ExecutionResult) -> &Context {
    execution
        .final_context
        .as_ref()
        .expect("a finished execution has a final context")
}

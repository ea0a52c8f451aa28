//! Durable executions through the Rust API: submit and wait, idempotency, submit-only executors
//! beside workers, wait timeouts, cross-executor cancel and resume — on real SQLite files.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cloacina::{
    DatabaseUrl, Error, ExecutionStatus, ExecutorConfig, FnTask, SubmitOptions, SubmittedTasks,
    TaskError, TaskRegistry, TaskStatus, UnifiedExecutor, Workflow,
};
use common::{ctx, noop, task, temp_db};
use serde_json::json;

/// An executor on `path` that runs `workflow`'s tasks (or none, when `worker` is false).
async fn executor(path: &std::path::Path, workflow: &Workflow, worker: bool) -> UnifiedExecutor {
    let registry = SubmittedTasks::default();
    registry.learn(workflow);
    let config = ExecutorConfig {
        worker,
        registry: Some(Arc::new(registry)),
        ..ExecutorConfig::default()
    };
    UnifiedExecutor::connect(DatabaseUrl::SqliteFile(path.to_path_buf()), config)
        .await
        .expect("connect to SQLite file")
}

fn chain() -> Workflow {
    Workflow::new(
        "chain",
        vec![noop("a", &[]), noop("b", &["a"]), noop("c", &["b"])],
    )
    .unwrap()
}

/// A workflow whose task `slow` sleeps for `seconds`.
fn sleeper(seconds: f64) -> Workflow {
    let slow = FnTask::new("slow", &[], move |c| async move {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        Ok(c)
    });
    Workflow::new("sleeper", vec![slow]).unwrap()
}

#[tokio::test]
async fn submit_returns_at_once_and_wait_reads_the_result() {
    let (_dir, path) = temp_db();
    let workflow = chain();
    let ex = executor(&path, &workflow, true).await;
    let id = ex
        .submit(&workflow, ctx(json!({"in": 1})), SubmitOptions::default())
        .await
        .unwrap();
    let result = ex.wait(id, Some(Duration::from_secs(30))).await.unwrap();
    assert_eq!(result.status, ExecutionStatus::Completed);
    assert_eq!(ex.get_execution(id).await.unwrap(), Some(result));
    ex.shutdown(false).await;
}

#[tokio::test]
async fn an_idempotency_key_submits_once() {
    let (_dir, path) = temp_db();
    let workflow = chain();
    let ex = executor(&path, &workflow, false).await;
    let options = SubmitOptions {
        idempotency_key: Some("nightly-2026-11-26".into()),
        ..SubmitOptions::default()
    };
    let first = ex
        .submit(&workflow, ctx(json!({})), options.clone())
        .await
        .unwrap();
    let second = ex.submit(&workflow, ctx(json!({})), options).await.unwrap();
    assert_eq!(first, second);
    let listed = ex.list_executions(Default::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, ExecutionStatus::Pending);
}

#[tokio::test]
async fn a_submit_only_executor_leaves_the_work_to_a_worker() {
    let (_dir, path) = temp_db();
    let workflow = chain();
    let client = executor(&path, &workflow, false).await;
    let id = client
        .submit(&workflow, ctx(json!({})), SubmitOptions::default())
        .await
        .unwrap();
    let waited = client.wait(id, Some(Duration::from_millis(300))).await;
    assert!(matches!(waited, Err(Error::Timeout(_))), "{waited:?}");
    let pending = client.get_execution(id).await.unwrap().unwrap();
    assert_eq!(pending.status, ExecutionStatus::Pending);
    assert!(pending.task_results.iter().all(|t| t.attempts == 0));

    let worker = executor(&path, &workflow, true).await;
    let result = client
        .wait(id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(result.status, ExecutionStatus::Completed);
    worker.shutdown(false).await;
}

#[tokio::test]
async fn cancel_reaches_a_task_running_in_another_executor() {
    let (_dir, path) = temp_db();
    let workflow = sleeper(60.0);
    let worker = executor(&path, &workflow, true).await;
    let client = executor(&path, &workflow, false).await;
    let id = client
        .submit(&workflow, ctx(json!({})), SubmitOptions::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let record = client.get_execution(id).await.unwrap().unwrap();
        if record.task_results[0].status == TaskStatus::Running {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(client.cancel(id, "stop").await.unwrap());
    let result = client
        .wait(id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(result.status, ExecutionStatus::Cancelled);
    assert_eq!(task(&result, "slow").status, TaskStatus::Cancelled);
    assert!(!client.cancel(id, "again").await.unwrap());
    worker.shutdown(false).await;
}

#[tokio::test]
async fn resume_reruns_only_what_did_not_complete() {
    let (_dir, path) = temp_db();
    let first_runs = Arc::new(AtomicUsize::new(0));
    let flaky_runs = Arc::new(AtomicUsize::new(0));
    let (first_count, flaky_count) = (first_runs.clone(), flaky_runs.clone());
    let first = FnTask::new("first", &[], move |c| {
        first_count.fetch_add(1, Ordering::SeqCst);
        async move { Ok(c) }
    });
    let flaky = FnTask::new("flaky", &["first"], move |c| {
        let run = flaky_count.fetch_add(1, Ordering::SeqCst);
        async move {
            if run == 0 {
                Err(TaskError::new("ValueError: first time"))
            } else {
                Ok(c)
            }
        }
    });
    let workflow =
        Workflow::new("resumable", vec![first, flaky, noop("last", &["flaky"])]).unwrap();
    let ex = executor(&path, &workflow, true).await;
    let failed = ex.execute(&workflow, ctx(json!({}))).await.unwrap();
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(task(&failed, "last").status, TaskStatus::Skipped);

    ex.resume(failed.execution_id).await.unwrap();
    let resumed = ex
        .wait(failed.execution_id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(resumed.status, ExecutionStatus::Completed);
    assert_eq!(
        first_runs.load(Ordering::SeqCst),
        1,
        "a completed task ran again"
    );
    let history: Vec<TaskStatus> = task(&resumed, "flaky")
        .history
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(history, vec![TaskStatus::Failed, TaskStatus::Completed]);
    assert_eq!(task(&resumed, "flaky").attempts, 2);

    let again = ex.resume(failed.execution_id).await;
    assert!(matches!(again, Err(Error::InvalidState(_))), "{again:?}");
    ex.shutdown(false).await;
}

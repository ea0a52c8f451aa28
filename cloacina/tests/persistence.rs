//! Persistence on SQLite files: stored records equal returned ones, are visible to other
//! executors, list and filter correctly, and each task result is durable before dependents start.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloacina::{
    Context, DatabaseUrl, ExecutionFilter, ExecutionResult, ExecutionStatus, ExecutorConfig,
    FnTask, TaskError, TaskStatus, UnifiedExecutor, Workflow,
};
use common::{ctx, file_executor, final_ctx, noop, task, temp_db, writes, writes_after};
use serde_json::json;
use uuid::Uuid;

/// A workflow with completed, failed and skipped tasks, a traceback and rich JSON values.
fn mixed_workflow() -> Workflow {
    Workflow::new(
        "mixed",
        vec![
            writes(
                "extract",
                &[],
                "rows",
                json!([{"id": 1, "name": "Zoë ✓"}, {"id": 2, "ratio": 0.1, "big": 9007199254740993_i64}]),
            ),
            writes_after("transform", &["extract"], Duration::from_millis(20), "ok", json!(null)),
            FnTask::new("validate", &["extract"], |_c| async move {
                Err(TaskError {
                    traceback: Some("Traceback:\n  line 1\n".into()),
                    ..TaskError::new("ValueError: bad row")
                })
            }),
            noop("load", &["transform", "validate"]),
        ],
    )
    .unwrap()
}

fn assert_consistent_timestamps(result: &ExecutionResult) {
    let end = result.completed_at.expect("finished");
    assert!(result.started_at <= end);
    for t in &result.task_results {
        if let Some(start) = t.started_at {
            assert!(result.started_at <= start, "{t:?}");
            let done = t
                .completed_at
                .expect("a started task of a finished execution has finished");
            assert!(start <= done, "{t:?}");
            assert!(done <= end, "{t:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_execution_equals_returned_result() {
    let (_dir, path) = temp_db();
    let exec = file_executor(&path).await;
    let input = ctx(json!({"date": "2024-01-01", "nested": {"list": [1, 2.5, "x", null, true]}}));
    let returned = exec
        .execute(&mixed_workflow(), input.clone())
        .await
        .unwrap();
    assert_eq!(returned.status, ExecutionStatus::Failed);
    assert_eq!(returned.input_context, input);
    assert_eq!(task(&returned, "load").status, TaskStatus::Skipped);
    assert_consistent_timestamps(&returned);

    let stored = exec
        .get_execution(returned.execution_id)
        .await
        .unwrap()
        .expect("the execution is stored");
    assert_eq!(stored, returned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_execution_matches_returned_result_field_by_field() {
    // Like the test above, but tolerant of task completion timestamps, so every other field is
    // still checked even while task completion times differ between memory and database.
    let (_dir, path) = temp_db();
    let exec = file_executor(&path).await;
    let input = ctx(json!({"date": "2024-01-01", "nested": {"list": [1, 2.5, "x", null, true]}}));
    let returned = exec
        .execute(&mixed_workflow(), input.clone())
        .await
        .unwrap();
    let stored = exec
        .get_execution(returned.execution_id)
        .await
        .unwrap()
        .unwrap();
    assert_consistent_timestamps(&stored);
    assert_eq!(stored.execution_id, returned.execution_id);
    assert_eq!(stored.workflow_name, returned.workflow_name);
    assert_eq!(stored.workflow_version, returned.workflow_version);
    assert_eq!(stored.workflow_version, mixed_workflow().version());
    assert_eq!(stored.status, returned.status);
    assert_eq!(stored.input_context, returned.input_context);
    assert_eq!(stored.final_context, returned.final_context);
    assert_eq!(
        final_ctx(&stored).get("rows"),
        Some(
            &json!([{"id": 1, "name": "Zoë ✓"}, {"id": 2, "ratio": 0.1, "big": 9007199254740993_i64}])
        )
    );
    assert_eq!(stored.error, returned.error);
    assert_eq!(stored.started_at, returned.started_at);
    assert_eq!(stored.completed_at, returned.completed_at);
    assert_eq!(stored.task_results.len(), returned.task_results.len());
    for (s, r) in stored.task_results.iter().zip(&returned.task_results) {
        assert_eq!(s.task_id, r.task_id);
        assert_eq!(s.status, r.status, "{}", s.task_id);
        assert_eq!(s.attempts, r.attempts, "{}", s.task_id);
        assert_eq!(s.error, r.error, "{}", s.task_id);
        assert_eq!(s.traceback, r.traceback, "{}", s.task_id);
        assert_eq!(s.started_at, r.started_at, "{}", s.task_id);
        assert_eq!(
            s.completed_at.is_some(),
            r.completed_at.is_some(),
            "{}",
            s.task_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_executors_see_the_history() {
    let (_dir, path) = temp_db();
    let first = file_executor(&path).await;
    let ok = first
        .execute(
            &Workflow::new("ok", vec![writes("a", &[], "a", json!(1))]).unwrap(),
            Context::new(),
        )
        .await
        .unwrap();
    let failed = first
        .execute(&mixed_workflow(), Context::new())
        .await
        .unwrap();

    // A second executor connected while the first is alive.
    let second = file_executor(&path).await;
    assert_eq!(
        second
            .get_execution(ok.execution_id)
            .await
            .unwrap()
            .as_ref()
            .map(|e| e.status),
        Some(ExecutionStatus::Completed)
    );
    let seen = second
        .get_execution(failed.execution_id)
        .await
        .unwrap()
        .unwrap();
    let from_first = first
        .get_execution(failed.execution_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, from_first);

    // And one connected after both are gone.
    drop(first);
    drop(second);
    let third = UnifiedExecutor::connect(
        DatabaseUrl::parse(
            &format!("sqlite:///{}", path.display()),
            cloacina::BackendKind::Sqlite,
        )
        .unwrap(),
        ExecutorConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        third.get_execution(failed.execution_id).await.unwrap(),
        Some(from_first)
    );
    let all = third
        .list_executions(ExecutionFilter::default())
        .await
        .unwrap();
    let ids: Vec<Uuid> = all.iter().map(|e| e.execution_id).collect();
    assert_eq!(ids, [failed.execution_id, ok.execution_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_executions_is_newest_first_and_filters() {
    let (_dir, path) = temp_db();
    let exec = file_executor(&path).await;
    let alpha = Workflow::new("alpha", vec![noop("a", &[])]).unwrap();
    let beta = Workflow::new("beta", vec![noop("b", &[])]).unwrap();
    let broken = Workflow::new(
        "alpha",
        vec![FnTask::new("a", &[], |_c| async move {
            Err(TaskError::new("OSError: disk"))
        })],
    )
    .unwrap();

    let mut started = Vec::new(); // (id, name, status), oldest first
    for wf in [&alpha, &beta, &broken, &alpha, &beta, &alpha, &broken] {
        let r = exec.execute(wf, Context::new()).await.unwrap();
        started.push((r.execution_id, r.workflow_name.clone(), r.status));
    }
    let newest_first: Vec<_> = started.iter().rev().cloned().collect();
    let ids = |v: &[ExecutionResult]| v.iter().map(|e| e.execution_id).collect::<Vec<_>>();
    let expect = |pred: &dyn Fn(&(Uuid, String, ExecutionStatus)) -> bool| {
        newest_first
            .iter()
            .filter(|e| pred(e))
            .map(|e| e.0)
            .collect::<Vec<_>>()
    };

    let all = exec
        .list_executions(ExecutionFilter::default())
        .await
        .unwrap();
    assert_eq!(ids(&all), expect(&|_| true));
    for pair in all.windows(2) {
        assert!(pair[0].started_at >= pair[1].started_at);
    }
    // Listed executions carry their tasks.
    assert!(all.iter().all(|e| e.task_results.len() == 1));

    let alphas = exec
        .list_executions(ExecutionFilter {
            workflow_name: Some("alpha".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&alphas), expect(&|e| e.1 == "alpha"));
    assert_eq!(alphas.len(), 5);

    let failed = exec
        .list_executions(ExecutionFilter {
            status: Some(ExecutionStatus::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&failed), expect(&|e| e.2 == ExecutionStatus::Failed));
    assert_eq!(failed.len(), 2);
    assert!(failed
        .iter()
        .all(|e| e.error.as_deref().unwrap().contains("OSError: disk")));

    let completed_alpha = exec
        .list_executions(ExecutionFilter {
            workflow_name: Some("alpha".into()),
            status: Some(ExecutionStatus::Completed),
            limit: 50,
            offset: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&completed_alpha),
        expect(&|e| e.1 == "alpha" && e.2 == ExecutionStatus::Completed)
    );
    assert_eq!(completed_alpha.len(), 3);

    let limited = exec
        .list_executions(ExecutionFilter {
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&limited), expect(&|_| true)[..3]);

    // The limit applies after filtering.
    let limited_beta = exec
        .list_executions(ExecutionFilter {
            workflow_name: Some("beta".into()),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&limited_beta), expect(&|e| e.1 == "beta")[..1]);

    let none = exec
        .list_executions(ExecutionFilter {
            workflow_name: Some("gamma".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let running = exec
        .list_executions(ExecutionFilter {
            status: Some(ExecutionStatus::Running),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(running.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_execution_id_is_none() {
    let (_dir, path) = temp_db();
    let exec = file_executor(&path).await;
    assert_eq!(exec.get_execution(Uuid::new_v4()).await.unwrap(), None);
    exec.execute(
        &Workflow::new("w", vec![noop("a", &[])]).unwrap(),
        Context::new(),
    )
    .await
    .unwrap();
    assert_eq!(exec.get_execution(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(exec.get_execution(Uuid::nil()).await.unwrap(), None);
}

/// Connects `count` executors to `path` at the same moment; every one must succeed, work, and
/// see the executions of the others.
async fn race_connects(path: &std::path::Path, count: usize, context: &str) {
    let barrier = Arc::new(tokio::sync::Barrier::new(count));
    let connects: Vec<_> = (0..count)
        .map(|_| {
            let path = path.to_path_buf();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                UnifiedExecutor::connect(DatabaseUrl::SqliteFile(path), ExecutorConfig::default())
                    .await
            })
        })
        .collect();
    let mut executors = Vec::new();
    for handle in connects {
        let exec = handle
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{context}: concurrent connect failed: {e}"));
        executors.push(exec);
    }
    let before = executors[0]
        .list_executions(ExecutionFilter {
            workflow_name: Some("race".into()),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    let wf = Workflow::new("race", vec![noop("a", &[])]).unwrap();
    for exec in &executors {
        let r = exec.execute(&wf, Context::new()).await.unwrap();
        assert_eq!(r.status, ExecutionStatus::Completed);
    }
    for exec in &executors {
        let listed = exec
            .list_executions(ExecutionFilter {
                workflow_name: Some("race".into()),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), before + executors.len(), "{context}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_executors_racing_on_a_new_file_both_connect() {
    for round in 0..30 {
        let (_dir, path) = temp_db();
        race_connects(&path, 2, &format!("round {round}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn many_executors_racing_on_a_new_file_all_connect() {
    for round in 0..10 {
        let (_dir, path) = temp_db();
        race_connects(&path, 6, &format!("round {round}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn executors_racing_on_an_existing_database_all_connect() {
    let (_dir, path) = temp_db();
    let writer = file_executor(&path).await;
    // Keep the first executor busy writing while others connect.
    let busy = {
        let writer = writer.clone();
        tokio::spawn(async move {
            let wf = Workflow::new("busy", vec![noop("a", &[]), noop("b", &["a"])]).unwrap();
            for _ in 0..20 {
                writer.execute(&wf, Context::new()).await.unwrap();
            }
        })
    };
    for round in 0..5 {
        race_connects(&path, 4, &format!("round {round}")).await;
    }
    busy.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnecting_to_a_migrated_file_is_harmless() {
    let (_dir, path) = temp_db();
    let first = file_executor(&path).await;
    let r = first
        .execute(
            &Workflow::new("w", vec![noop("a", &[])]).unwrap(),
            Context::new(),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        let again = file_executor(&path).await;
        assert!(again.get_execution(r.execution_id).await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unopenable_path_is_a_database_error() {
    let (dir, _) = temp_db();
    let path = dir.path().join("no").join("such").join("dir").join("x.db");
    match UnifiedExecutor::connect(DatabaseUrl::SqliteFile(path), ExecutorConfig::default()).await {
        Err(cloacina::Error::Database(msg)) => assert!(msg.contains("x.db"), "{msg}"),
        Err(other) => panic!("expected a database error, got {other:?}"),
        Ok(_) => panic!("a path in a missing directory cannot be opened"),
    }
}

/// Inside `check`, a separate executor on the same file must already see `upstream` as Completed.
fn durability_probe(path: PathBuf, workflow: &'static str) -> Arc<dyn cloacina::Task> {
    let path = Arc::new(path);
    FnTask::new("check", &["upstream"], move |_c| {
        let path = path.clone();
        async move {
            // A running task's start is written with the next batch or within 100 ms.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let observer = UnifiedExecutor::connect(
                DatabaseUrl::SqliteFile((*path).clone()),
                ExecutorConfig::default(),
            )
            .await
            .map_err(|e| TaskError::new(format!("connect: {e}")))?;
            let running = observer
                .list_executions(ExecutionFilter {
                    workflow_name: Some(workflow.into()),
                    status: Some(ExecutionStatus::Running),
                    limit: 10,
                    offset: 0,
                })
                .await
                .map_err(|e| TaskError::new(format!("list: {e}")))?;
            let [execution] = running.as_slice() else {
                return Err(TaskError::new(format!(
                    "expected one running execution, saw {}",
                    running.len()
                )));
            };
            let find = |id: &str| {
                execution
                    .task_results
                    .iter()
                    .find(|t| t.task_id == id)
                    .cloned()
            };
            let upstream = find("upstream").ok_or_else(|| TaskError::new("no upstream row"))?;
            let me = find("check").ok_or_else(|| TaskError::new("no check row"))?;
            let mut out = Context::new();
            out.insert("upstream_status", upstream.status.as_str());
            out.insert(
                "upstream_completed_at_recorded",
                upstream.completed_at.is_some(),
            );
            out.insert("check_status", me.status.as_str());
            out.insert("check_attempts", me.attempts);
            out.insert("final_context_recorded", execution.final_context.is_some());
            Ok(out)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_result_is_durable_before_dependents_start() {
    let (_dir, path) = temp_db();
    let exec = file_executor(&path).await;
    let wf = Workflow::new(
        "durable",
        vec![
            writes_after("upstream", &[], Duration::from_millis(10), "up", json!(1)),
            durability_probe(path.clone(), "durable"),
        ],
    )
    .unwrap();
    let result = exec.execute(&wf, Context::new()).await.unwrap();
    assert_eq!(result.status, ExecutionStatus::Completed, "{result:#?}");
    let finals = final_ctx(&result);
    assert_eq!(
        finals.get("upstream_status"),
        Some(&json!("Completed")),
        "{finals:?}"
    );
    assert_eq!(
        finals.get("upstream_completed_at_recorded"),
        Some(&json!(true))
    );
    assert_eq!(finals.get("check_status"), Some(&json!("Running")));
    assert_eq!(finals.get("check_attempts"), Some(&json!(1)));
    assert_eq!(finals.get("final_context_recorded"), Some(&json!(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_dependents_start_after_their_upstream_completed() {
    let (_dir, path) = temp_db();
    let exec = file_executor(&path).await;
    let short = Duration::from_millis(5);
    let wf = Workflow::new(
        "timestamps",
        vec![
            writes_after("a", &[], short, "a", json!(1)),
            writes_after("b", &["a"], short, "b", json!(1)),
            writes_after("c", &["a"], Duration::ZERO, "c", json!(1)),
            writes_after("d", &["b", "c"], short, "d", json!(1)),
            writes_after("e", &[], Duration::ZERO, "e", json!(1)),
            writes_after("f", &["d", "e"], Duration::ZERO, "f", json!(1)),
        ],
    )
    .unwrap();
    let edges = [
        ("a", "b"),
        ("a", "c"),
        ("b", "d"),
        ("c", "d"),
        ("d", "f"),
        ("e", "f"),
    ];
    let returned = exec.execute(&wf, Context::new()).await.unwrap();
    let stored = exec
        .get_execution(returned.execution_id)
        .await
        .unwrap()
        .unwrap();
    for result in [&returned, &stored] {
        assert_eq!(result.status, ExecutionStatus::Completed);
        for (up, down) in edges {
            let up_done = task(result, up).completed_at.unwrap();
            let down_start = task(result, down).started_at.unwrap();
            assert!(
                down_start >= up_done,
                "{down} started at {down_start} before {up} completed at {up_done}"
            );
        }
    }
}

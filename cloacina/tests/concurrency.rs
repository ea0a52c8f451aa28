//! Concurrency: independent tasks overlap, `max_concurrency` is honoured across executions, and
//! one executor serves many simultaneous `execute` calls.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloacina::{
    Context, ExecutionFilter, ExecutionStatus, FnTask, Task, TaskStatus, UnifiedExecutor, Workflow,
};
use common::{ctx, file_executor, file_executor_with, final_ctx, memory_executor, task, temp_db};
use serde_json::json;

fn sleeper(id: &str, deps: &[&str], delay: Duration) -> Arc<dyn Task> {
    FnTask::new(id, deps, move |_c| async move {
        tokio::time::sleep(delay).await;
        Ok(Context::new())
    })
}

fn four_sleepers() -> Workflow {
    let d = Duration::from_millis(300);
    Workflow::new(
        "sleepers",
        vec![
            sleeper("s1", &[], d),
            sleeper("s2", &[], d),
            sleeper("s3", &[], d),
            sleeper("s4", &[], d),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn independent_tasks_run_concurrently() {
    let (_dir, path) = temp_db();
    let exec = file_executor_with(&path, 4).await;
    let wf = four_sleepers();
    let started = Instant::now();
    let result = exec.execute(&wf, Context::new()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(result.status, ExecutionStatus::Completed);
    assert!(
        elapsed < Duration::from_secs(1),
        "4 x 300ms with 4 slots took {elapsed:?}"
    );
    // Every task started before any finished.
    let last_start = result
        .task_results
        .iter()
        .filter_map(|t| t.started_at)
        .max()
        .unwrap();
    let first_end = result
        .task_results
        .iter()
        .filter_map(|t| t.completed_at)
        .min()
        .unwrap();
    assert!(last_start < first_end, "{result:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrency_one_serialises_tasks() {
    let (_dir, path) = temp_db();
    let exec = file_executor_with(&path, 1).await;
    let wf = four_sleepers();
    let started = Instant::now();
    let result = exec.execute(&wf, Context::new()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(result.status, ExecutionStatus::Completed);
    assert!(
        elapsed >= Duration::from_millis(1200),
        "4 x 300ms with 1 slot took {elapsed:?}"
    );
    // Tasks started one after another (bodies never overlap; see `max_concurrency_caps_running_tasks`).
    let mut starts: Vec<_> = result
        .task_results
        .iter()
        .map(|t| t.started_at.unwrap())
        .collect();
    starts.sort();
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono_ms(300),
            "tasks started too close together: {starts:?}"
        );
    }
}

fn chrono_ms(ms: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::milliseconds(ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrency_caps_running_tasks() {
    for limit in [1, 2] {
        let exec = UnifiedExecutor::connect(
            cloacina::DatabaseUrl::SqliteMemory,
            cloacina::ExecutorConfig {
                max_concurrency: limit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let wf = Workflow::new(
            "capped",
            (0..6)
                .map(|i| gauged(&format!("t{i}"), &running, &peak))
                .collect(),
        )
        .unwrap();
        let result = exec.execute(&wf, Context::new()).await.unwrap();
        assert_eq!(result.status, ExecutionStatus::Completed);
        assert_eq!(peak.load(Ordering::SeqCst), limit);
    }
}

/// Tasks that track how many of them run at once.
fn gauged(id: &str, running: &Arc<AtomicUsize>, peak: &Arc<AtomicUsize>) -> Arc<dyn Task> {
    let (running, peak) = (running.clone(), peak.clone());
    FnTask::new(id, &[], move |_c| {
        let (running, peak) = (running.clone(), peak.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(Context::new())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrency_is_shared_across_executions() {
    let exec = UnifiedExecutor::connect(
        cloacina::DatabaseUrl::SqliteMemory,
        cloacina::ExecutorConfig {
            max_concurrency: 3,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let wf = Workflow::new(
        "gauged",
        (0..6)
            .map(|i| gauged(&format!("t{i}"), &running, &peak))
            .collect(),
    )
    .unwrap();
    let runs = (0..4).map(|_| {
        let exec = exec.clone();
        let wf = wf.clone();
        tokio::spawn(async move { exec.execute(&wf, Context::new()).await })
    });
    for handle in runs.collect::<Vec<_>>() {
        let result = handle.await.unwrap().unwrap();
        assert_eq!(result.status, ExecutionStatus::Completed);
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "24 tasks over 3 slots should fill all 3 slots and no more"
    );
    assert_eq!(running.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dependents_wait_for_their_upstream() {
    let exec = memory_executor().await;
    let d = Duration::from_millis(100);
    let wf = Workflow::new(
        "chain",
        vec![
            sleeper("a", &[], d),
            sleeper("b", &["a"], d),
            sleeper("c", &["b"], d),
            sleeper("side", &[], d),
        ],
    )
    .unwrap();
    let started = Instant::now();
    let result = exec.execute(&wf, Context::new()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    for (up, down) in [("a", "b"), ("b", "c")] {
        assert!(
            task(&result, down).started_at.unwrap() >= task(&result, up).completed_at.unwrap(),
            "{down} started before {up} finished: {result:#?}"
        );
    }
    // The side branch overlapped the chain.
    assert!(task(&result, "side").started_at.unwrap() < task(&result, "a").completed_at.unwrap());
}

fn diamond() -> Workflow {
    let add = |id: &str, deps: &[&str]| {
        let key = id.to_string();
        FnTask::new(id, deps, move |c: Context| {
            let key = key.clone();
            async move {
                let n = c.get("n").and_then(|v| v.as_i64()).unwrap();
                let mut out = Context::new();
                out.insert(key, n);
                Ok(out)
            }
        })
    };
    Workflow::new(
        "many",
        vec![
            add("a", &[]),
            add("b", &["a"]),
            add("c", &["a"]),
            add("d", &["b", "c"]),
        ],
    )
    .unwrap()
}

async fn run_many(exec: UnifiedExecutor, count: i64) {
    let wf = diamond();
    let handles: Vec<_> = (0..count)
        .map(|n| {
            let exec = exec.clone();
            let wf = wf.clone();
            tokio::spawn(async move { (n, exec.execute(&wf, ctx(json!({"n": n}))).await) })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for handle in handles {
        let (n, result) = handle.await.expect("execute did not panic");
        let result = result.unwrap_or_else(|e| panic!("execution {n} failed to run: {e}"));
        assert_eq!(result.status, ExecutionStatus::Completed, "{result:#?}");
        assert!(result
            .task_results
            .iter()
            .all(|t| t.status == TaskStatus::Completed));
        // Each execution's context is its own.
        assert_eq!(
            final_ctx(&result),
            &ctx(json!({"n": n, "a": n, "b": n, "c": n, "d": n}))
        );
        assert!(ids.insert(result.execution_id));
    }
    let listed = exec
        .list_executions(ExecutionFilter {
            limit: count * 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len() as i64, count);
    assert!(listed
        .iter()
        .all(|e| e.status == ExecutionStatus::Completed));
    let listed_ids: BTreeSet<_> = listed.iter().map(|e| e.execution_id).collect();
    assert_eq!(listed_ids, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn many_concurrent_executions_on_a_file() {
    let (_dir, path) = temp_db();
    run_many(file_executor(&path).await, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn many_concurrent_executions_in_memory() {
    run_many(memory_executor().await, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_executors_write_one_file_concurrently() {
    let (_dir, path) = temp_db();
    let first = file_executor(&path).await;
    let second = file_executor(&path).await;
    let wf = diamond();
    let handles: Vec<_> = (0..20)
        .map(|n| {
            let exec = if n % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let wf = wf.clone();
            tokio::spawn(async move { exec.execute(&wf, ctx(json!({"n": n}))).await })
        })
        .collect();
    for handle in handles {
        let result = handle.await.unwrap().unwrap();
        assert_eq!(result.status, ExecutionStatus::Completed);
    }
    for exec in [&first, &second] {
        let listed = exec
            .list_executions(ExecutionFilter::default())
            .await
            .unwrap();
        assert_eq!(listed.len(), 20);
    }
}

//! `sqlite://:memory:`: one private database for the executor's whole lifetime.

mod common;

use std::collections::BTreeSet;

use cloacina::{
    BackendKind, Context, DatabaseUrl, ExecutionFilter, ExecutionStatus, ExecutorConfig,
    UnifiedExecutor, Workflow,
};
use common::{ctx, final_ctx, memory_executor, noop, writes};
use serde_json::json;

#[test]
fn memory_urls_parse_to_sqlite_memory() {
    for url in ["sqlite://:memory:", ":memory:"] {
        assert_eq!(
            DatabaseUrl::parse(url, BackendKind::Sqlite).unwrap(),
            DatabaseUrl::SqliteMemory,
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn one_database_for_many_executions() {
    let url = DatabaseUrl::parse("sqlite://:memory:", BackendKind::Sqlite).unwrap();
    let exec = UnifiedExecutor::connect(url, ExecutorConfig::default())
        .await
        .unwrap();
    let wf = Workflow::new(
        "mem",
        vec![
            writes("a", &[], "a", json!(1)),
            writes("b", &["a"], "b", json!(2)),
            noop("c", &[]),
        ],
    )
    .unwrap();
    let mut ids = Vec::new();
    // Sequential executions...
    for i in 0..25 {
        let r = exec.execute(&wf, ctx(json!({"i": i}))).await.unwrap();
        assert_eq!(r.status, ExecutionStatus::Completed);
        ids.push(r.execution_id);
    }
    // ...then concurrent ones from clones of the executor...
    let handles: Vec<_> = (25..50)
        .map(|i| {
            let exec = exec.clone();
            let wf = wf.clone();
            tokio::spawn(async move { exec.execute(&wf, ctx(json!({"i": i}))).await })
        })
        .collect();
    for h in handles {
        let r = h.await.unwrap().unwrap();
        assert_eq!(r.status, ExecutionStatus::Completed);
        ids.push(r.execution_id);
    }
    // ...all land in one database, whichever pooled connection serves the read.
    for id in &ids {
        let stored = exec
            .get_execution(*id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(stored.status, ExecutionStatus::Completed);
        assert_eq!(stored.task_results.len(), 3);
    }
    let listed = exec
        .list_executions(ExecutionFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 50);
    let listed_ids: BTreeSet<_> = listed.iter().map(|e| e.execution_id).collect();
    assert_eq!(listed_ids, ids.iter().copied().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_survives_idle_periods() {
    let exec = memory_executor().await;
    let wf = Workflow::new("idle", vec![noop("a", &[])]).unwrap();
    let first = exec.execute(&wf, Context::new()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let second = exec.execute(&wf, Context::new()).await.unwrap();
    assert!(exec
        .get_execution(first.execution_id)
        .await
        .unwrap()
        .is_some());
    assert!(exec
        .get_execution(second.execution_id)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_executors_are_isolated() {
    let a = memory_executor().await;
    let b = memory_executor().await;
    let wf = Workflow::new("iso", vec![writes("t", &[], "t", json!(true))]).unwrap();
    let ra = a.execute(&wf, Context::new()).await.unwrap();
    assert_eq!(final_ctx(&ra).get("t"), Some(&json!(true)));
    assert!(b.get_execution(ra.execution_id).await.unwrap().is_none());
    assert!(b
        .list_executions(ExecutionFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        a.list_executions(ExecutionFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_pool_size_option_does_not_split_the_database() {
    // Even when asked for a large pool, an in-memory database must stay a single database.
    let config = ExecutorConfig {
        pool: cloacina::PoolOptions {
            max_size: Some(8),
            ..Default::default()
        },
        ..ExecutorConfig::default()
    };
    let exec = UnifiedExecutor::connect(DatabaseUrl::SqliteMemory, config)
        .await
        .unwrap();
    let wf = Workflow::new("pool", vec![noop("a", &[]), noop("b", &[]), noop("c", &[])]).unwrap();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let exec = exec.clone();
            let wf = wf.clone();
            tokio::spawn(async move { exec.execute(&wf, Context::new()).await })
        })
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap().status, ExecutionStatus::Completed);
    }
    let listed = exec
        .list_executions(ExecutionFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 16);
}

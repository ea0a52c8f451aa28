//! Tests of claims and fenced commits, on SQLite.

use std::time::Duration;

use super::*;
use crate::context::Context;
use crate::database::leases::WorkerIdentity;
use crate::database::store::StoredOutputs;
use crate::database::testing::one_task_executions;

/// Attempt `fence` of task 0, ended Completed with output `{"attempt": fence}`.
fn completed(fence: u32) -> Arc<Vec<EndedTask>> {
    let at = now();
    Arc::new(vec![EndedTask {
        output_json: Some(format!("{{\"attempt\": {fence}}}")),
        last_attempt: Some(AttemptRecord {
            attempt: fence,
            status: TaskStatus::Completed,
            error: None,
            started_at: at,
            completed_at: at,
        }),
        ..EndedTask::new(0, fence, TaskStatus::Completed, fence, at, at)
    }])
}

/// The path the failover tests race into, step by step: worker A claims a task, B gives the
/// claim back, A claims it again; the first claim's writes must all be refused, quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_of_the_same_worker_writes_nothing() {
    let (db, plan, executions) = one_task_executions(1).await;
    let execution = executions[0];
    let (a, b) = (
        WorkerIdentity::of_this_process("a".into()),
        WorkerIdentity::of_this_process("b".into()),
    );
    db.heartbeat(a.clone(), "[\"t\"]".into()).await.unwrap();
    let claim = |worker: &WorkerIdentity| db.claim_ready(worker.id.clone(), vec!["t".into()], 1);
    assert_eq!(claim(&a).await.unwrap()[0].attempt, 1);

    // B finds A's heartbeat older than its (tiny) lease and gives the claim back.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let given = db.reap_dead_workers(b, Duration::from_millis(10)).await;
    assert_eq!(given.unwrap(), 1);
    db.heartbeat(a.clone(), "[\"t\"]".into()).await.unwrap();
    assert_eq!(claim(&a).await.unwrap()[0].attempt, 2);

    let commit = |fence: u32| {
        let context: SharedContext = Arc::new(Mutex::new(StoredOutputs(Context::new())));
        db.commit_ended(
            execution,
            plan.clone(),
            a.id.clone(),
            completed(fence),
            ClaimRequest {
                limit: 0,
                ahead: 0,
                instances_ahead: 0,
                registered: Arc::new(|_: &str| false),
            },
            context,
        )
    };
    let stale = commit(1).await.unwrap();
    assert_eq!(stale.lost, vec![(0, 1)]);
    assert!(stale.finished.is_none());
    let failed = AttemptRecord {
        attempt: 1,
        status: TaskStatus::Failed,
        error: Some("stale".into()),
        started_at: now(),
        completed_at: now(),
    };
    let retry = db.record_retry(execution, a.id.clone(), 1, "t".into(), failed);
    assert!(!retry.await.unwrap());

    let current = commit(2).await.unwrap();
    assert!(current.lost.is_empty());
    assert_eq!(current.finished, Some(ExecutionStatus::Completed));
    let stored = db.get_execution(execution).await.unwrap().unwrap();
    let history: Vec<TaskStatus> = stored.task_results[0]
        .history
        .iter()
        .map(|h| h.status)
        .collect();
    assert_eq!(history, [TaskStatus::Lost, TaskStatus::Completed]);
    assert_eq!(
        stored.final_context.unwrap().get("attempt"),
        Some(&serde_json::json!(2))
    );
}

//! Group commit: the batches of ended tasks that this process's executions hand to the
//! database while a commit is running wait, and go into the next transaction together — one
//! commit (one WAL write, on PostgreSQL one flush) for all of them, however many executions
//! they belong to. A lone batch (a chain's next task) commits at once, with no extra hop: its
//! caller starts the drain on a database thread itself.
//!
//! Each batch's steps are those of a commit of its own (`claims::commit_batch`), fenced the
//! same way; a group locks its executions in id order, so two groups never wait on each other
//! in a circle. When a group's transaction fails, each of its batches is committed alone, so
//! one batch's error (an execution deleted meanwhile, a value the database refuses) is its own.

use std::sync::Arc;

use uuid::Uuid;

use super::claims::{
    commit_batch, ClaimRequest, CommitRequest, Committed, EndedTask, SharedContext,
};
use super::coalesce::{Coalesce, Group};
use super::{Database, Pool};
use crate::error::Result;
use crate::model::ExecutionPlan;

/// The batches waiting for the next transaction.
pub(crate) type CommitQueue = Coalesce<CommitRequest, Committed>;

impl Database {
    /// Commits ended tasks of one execution: their outcomes, the tasks they unblock (claimed by
    /// `worker` up to `claim.limit`, the rest made ready for any worker), and the execution's
    /// end when nothing is left to run; in the next group (see the module's documentation).
    pub(crate) async fn commit_ended(
        &self,
        execution: Uuid,
        plan: Arc<ExecutionPlan>,
        worker: String,
        ended: Arc<Vec<EndedTask>>,
        claim: ClaimRequest,
        context: SharedContext,
    ) -> Result<Committed> {
        let request = CommitRequest {
            execution,
            plan,
            worker,
            ended,
            claim,
            context,
        };
        self.commits.call(&self.pool, request, commit_group).await
    }
}

/// Commits `group` in one transaction, or each batch alone if that fails; answers every batch.
fn commit_group(pool: &Pool, mut group: Group<CommitRequest, Committed>) {
    // Executions' rows are locked in id order; a stable sort keeps one execution's batches in
    // the order they were handed over.
    group.sort_by_key(|(request, _)| request.execution);
    if group.len() > 1 {
        let together = pool.write_transaction(|conn| {
            group
                .iter()
                .map(|(request, _)| commit_batch(conn, request))
                .collect::<Result<Vec<_>>>()
        });
        if let Ok(results) = together {
            for ((_, reply), committed) in group.into_iter().zip(results) {
                let _ = reply.send(Ok(committed));
            }
            return;
        }
    }
    for (request, reply) in group {
        let _ = reply.send(pool.write_transaction(|conn| commit_batch(conn, &request)));
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::oneshot;

    use super::*;
    use crate::context::Context;
    use crate::database::claims::Claim;
    use crate::database::store::StoredOutputs;
    use crate::database::testing::one_task_executions;
    use crate::model::{now, AttemptRecord, ExecutionStatus, TaskStatus};

    const WORKER: &str = "w";

    /// A database holding `n` executions of a one-task workflow, each task claimed by [`WORKER`].
    async fn claimed(n: usize) -> (Database, Arc<ExecutionPlan>, Vec<Claim>) {
        let (db, plan, _) = one_task_executions(n).await;
        let claims = db
            .claim_ready(WORKER.into(), vec!["t".into()], n)
            .await
            .unwrap();
        assert_eq!(claims.len(), n);
        (db, plan, claims)
    }

    /// The batch ending `execution`'s only task, Completed at attempt 1.
    fn ended(execution: Uuid, plan: &Arc<ExecutionPlan>) -> CommitRequest {
        let at = now();
        let context: SharedContext = Arc::new(Mutex::new(StoredOutputs(Context::new())));
        CommitRequest {
            execution,
            plan: plan.clone(),
            worker: WORKER.into(),
            ended: Arc::new(vec![EndedTask {
                output_json: Some("{\"done\": true}".into()),
                last_attempt: Some(AttemptRecord {
                    attempt: 1,
                    status: TaskStatus::Completed,
                    error: None,
                    started_at: at,
                    completed_at: at,
                }),
                ..EndedTask::new(0, 1, TaskStatus::Completed, 1, at, at)
            }]),
            claim: ClaimRequest {
                limit: 0,
                ahead: 0,
                instances_ahead: 0,
                registered: Arc::new(|_: &str| false),
            },
            context,
        }
    }

    /// Commits `requests` as one group on a database thread; their results in order.
    async fn group(db: &Database, requests: Vec<CommitRequest>) -> Vec<Result<Committed>> {
        let mut results = Vec::new();
        let mut group = Vec::new();
        for request in requests {
            let (reply, result) = oneshot::channel();
            group.push((request, reply));
            results.push(result);
        }
        let pool = db.pool.clone();
        tokio::task::spawn_blocking(move || commit_group(&pool, group))
            .await
            .unwrap();
        let mut out = Vec::new();
        for result in results {
            out.push(result.await.unwrap());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_of_several_executions_commit_together() {
        let (db, plan, claims) = claimed(3).await;
        let requests = claims
            .iter()
            .map(|c| ended(c.execution_id, &plan))
            .collect();
        for result in group(&db, requests).await {
            assert_eq!(result.unwrap().finished, Some(ExecutionStatus::Completed));
        }
        for claim in &claims {
            let stored = db.get_execution(claim.execution_id).await.unwrap().unwrap();
            assert_eq!(stored.status, ExecutionStatus::Completed);
            let context = stored.final_context.unwrap();
            assert_eq!(context.get("done"), Some(&serde_json::json!(true)));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_batch_that_fails_does_not_fail_the_others() {
        let (db, plan, claims) = claimed(2).await;
        let missing = Uuid::new_v4();
        let requests = vec![
            ended(claims[0].execution_id, &plan),
            ended(missing, &plan),
            ended(claims[1].execution_id, &plan),
        ];
        // Each batch's result is its own, in the order the batches were given.
        let results = group(&db, requests).await;
        let error = results[1].as_ref().err().unwrap().to_string();
        assert!(error.contains("no longer in the database"), "{error}");
        for result in [&results[0], &results[2]] {
            let committed = result.as_ref().unwrap();
            assert_eq!(committed.finished, Some(ExecutionStatus::Completed));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_all_get_their_results() {
        let (db, plan, claims) = claimed(20).await;
        let commits = claims.iter().map(|c| {
            let request = ended(c.execution_id, &plan);
            let db = db.clone();
            tokio::spawn(async move { db.commits.call(&db.pool, request, commit_group).await })
        });
        let handles: Vec<_> = commits.collect();
        for handle in handles {
            let committed = handle.await.unwrap().unwrap();
            assert_eq!(committed.finished, Some(ExecutionStatus::Completed));
        }
    }
}

//! What the database's unit tests share.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::url::DatabaseUrl;
use super::{Database, PoolOptions};
use crate::context::Context;
use crate::model::{ExecutionPlan, ExecutionResult};
use crate::task::FnTask;
use crate::workflow::Workflow;

/// A fresh in-memory database holding `n` Pending executions of a workflow of one task, `t`.
pub(crate) async fn one_task_executions(n: usize) -> (Database, Arc<ExecutionPlan>, Vec<Uuid>) {
    let db = Database::connect(DatabaseUrl::SqliteMemory, PoolOptions::default())
        .await
        .unwrap();
    let task = FnTask::new("t", &[], |context| async move { Ok(context) });
    let workflow = Workflow::new("wf", vec![task]).unwrap();
    let plan = workflow.plan();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let record = ExecutionResult::pending(
            Uuid::new_v4(),
            workflow.name(),
            workflow.version(),
            Context::new(),
            &plan,
        );
        let lease = Duration::from_secs(30);
        let submitted = db.submit(record, plan.clone(), None, None, None, lease);
        ids.push(submitted.await.unwrap().execution_id);
    }
    (db, plan, ids)
}

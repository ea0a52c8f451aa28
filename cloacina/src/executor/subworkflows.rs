//! Runs sub-workflow tasks: each claim of a node takes one step with its child execution
//! (`database::subworkflows`): submit it, resume it, read its end, or park until it ends.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::attempt::TaskRunner;
use super::worker::Backoff;
use crate::context::{Context, Output, SharedInput};
use crate::database::claims::EndedTask;
use crate::database::subworkflows::{ChildRun, ChildStep};
use crate::database::waits::Wake;
use crate::model::map::VALUE_KEY;
use crate::model::subworkflows::{child_input, Subworkflow};
use crate::model::waits::WaitReason;
use crate::model::{now, AttemptRecord, TaskStatus};

/// Runs claim `attempt` (made at `started_at`) of the sub-workflow task `runner` runs: its
/// end when its child ended (or could not start), None while the node waits for it.
pub(super) async fn run_subworkflow(
    runner: &TaskRunner,
    subworkflow: Subworkflow,
    input: SharedInput,
    attempt: u32,
    started_at: DateTime<Utc>,
) -> Option<(EndedTask, Option<Output>)> {
    let task_id = runner.task.id().to_string();
    let ended = |status: TaskStatus, error: Option<String>| {
        runner.engine_end(attempt, status, error, started_at)
    };
    let input = input.to_context().into_map();
    // A map instance's child also gets its element.
    let keys = subworkflow.input_keys.clone().map(|mut keys| {
        if let (Some(_), Some(map)) = (runner.map_index, &runner.options.map) {
            keys.push(map.item.clone());
        }
        keys
    });
    let child_input = match child_input(&input, keys.as_deref(), &task_id) {
        Ok(input) => Context::from(input),
        Err(message) => return Some((ended(TaskStatus::Failed, Some(message)), None)),
    };
    let run = ChildRun {
        subworkflow,
        input: child_input,
        retries: runner.options.retry.retries,
        lease: runner.worker.lease(),
        attempt: AttemptRecord {
            attempt,
            status: TaskStatus::Failed,
            error: None,
            started_at,
            completed_at: now(),
        },
    };
    // The reason is filled in with the child's id once it is known.
    let park = runner.to_park(attempt, Wake::Never, WaitReason::Child(String::new()), None);
    let mut backoff = Backoff::default();
    let step = loop {
        match runner
            .worker
            .db()
            .child_step(park.clone(), run.clone())
            .await
        {
            Ok(step) => break step,
            // Left Running under this worker: given back once it stops.
            Err(_) if runner.worker.is_closed() => return None,
            Err(_) => backoff.wait().await,
        }
    };
    match step {
        ChildStep::Parked(parked) => {
            runner.parked(parked, ended(TaskStatus::Cancelled, None), None, attempt)
        }
        ChildStep::Failed(message) => Some((ended(TaskStatus::Failed, Some(message)), None)),
        ChildStep::Completed(final_context) => {
            let value: Value = serde_json::from_str(&final_context).unwrap_or(Value::Null);
            let key = if runner.map_index.is_some() {
                VALUE_KEY.to_string()
            } else {
                task_id
            };
            let mut output = Context::new();
            output.insert(key, value);
            let output = Output::from(output);
            let end = EndedTask {
                output_json: Some(output.to_json()),
                ..ended(TaskStatus::Completed, None)
            };
            Some((end, Some(output)))
        }
    }
}

//! Runs wait tasks (`sleep`, `wait_for_event`): each claim decides at once whether the wait is
//! over, and otherwise parks the task, holding nothing until its time or its event.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::attempt::TaskRunner;
use super::UnifiedExecutor;
use crate::context::{Context, Output, SharedInput};
use crate::database::claims::EndedTask;
use crate::database::waits::{Carried, EventWait, Park, Wake};
use crate::error::Result;
use crate::model::waits::{
    parse_instant, timeout_message, OnTimeout, SleepUntil, WaitFor, WaitReason,
};
use crate::model::TaskStatus;

/// Runs claim `attempt` (made at `started_at`) of a wait task: completes it when its wait is
/// over, fails it when its wait cannot be read from its input, and otherwise parks it
/// (returning None: there is nothing to store).
pub(super) async fn run_wait(
    runner: &TaskRunner,
    wait: WaitFor,
    input: SharedInput,
    carried: Carried,
    attempt: u32,
    started_at: DateTime<Utc>,
) -> Option<(EndedTask, Option<Output>)> {
    let ended = |status: TaskStatus, error: Option<String>| {
        runner.engine_end(attempt, status, error, started_at)
    };
    let failed = |message: String| Some((ended(TaskStatus::Failed, Some(message)), None));
    let completed = |output: Context| {
        let output = Output::from(output);
        let end = EndedTask {
            output_json: Some(output.to_json()),
            ..ended(TaskStatus::Completed, None)
        };
        Some((end, Some(output)))
    };
    let park = |wake| runner.to_park(attempt, wake, WaitReason::Sleeping, None);
    let task_id = runner.task.id().to_string();
    match wait {
        WaitFor::Sleep(until) => {
            if carried.wake_at.is_some() {
                // Woken at its time (only its time wakes a sleep).
                return completed(Context::new());
            }
            let at = match until {
                SleepUntil::After(after) => {
                    let became_ready = carried.ready_at.unwrap_or(started_at);
                    became_ready
                        + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX)
                }
                SleepUntil::At(at) => at,
                SleepUntil::AtKey(key) => match instant_in(&input, &key, &task_id) {
                    Ok(at) => at,
                    Err(message) => return failed(message),
                },
            };
            let due = completed_output_json();
            let end = EndedTask {
                output_json: Some(due.clone()),
                ..ended(TaskStatus::Completed, None)
            };
            runner.park(park(Wake::At(at)), end, Some(due)).await
        }
        WaitFor::Event {
            key,
            timeout,
            on_timeout,
        } => {
            let filled = match key.render(&Value::Object(input.to_context().into_map())) {
                Ok(filled) => filled,
                Err(message) => return failed(format!("ValueError: {message}")),
            };
            let park = Park {
                reason: WaitReason::Event(filled.clone()),
                ..park(Wake::Never)
            };
            let db = runner.worker.db();
            let waited = loop {
                match db
                    .wait_for_event(park.clone(), filled.clone(), timeout)
                    .await
                {
                    Ok(waited) => break waited,
                    Err(_) if runner.worker.is_closed() => return None,
                    Err(_) => super::worker::Backoff::default().wait().await,
                }
            };
            match waited {
                EventWait::Arrived(payload) => {
                    let payload = serde_json::from_str(&payload).unwrap_or(Value::Null);
                    let mut output = Context::new();
                    output.insert(task_id, payload);
                    completed(output)
                }
                EventWait::TimedOut => {
                    let message = timeout_message(&filled, timeout.unwrap_or_default());
                    match on_timeout {
                        OnTimeout::Fail => failed(message),
                        OnTimeout::Skip => Some((
                            EndedTask {
                                reason: Some(message.clone()),
                                ..ended(TaskStatus::Skipped, Some(message))
                            },
                            None,
                        )),
                        OnTimeout::Continue => {
                            let mut output = Context::new();
                            output.insert(task_id, Value::Null);
                            completed(output)
                        }
                    }
                }
                EventWait::Parked(parked) => {
                    runner.parked(parked, ended(TaskStatus::Cancelled, None), None, attempt)
                }
            }
        }
    }
}

/// The stored output of a sleep: `{}`.
fn completed_output_json() -> String {
    Output::from(Context::new()).to_json()
}

/// The instant the input holds under `key`, for sleep task `task_id`; the failure's message
/// when it holds none.
fn instant_in(input: &SharedInput, key: &str, task_id: &str) -> Result<DateTime<Utc>, String> {
    let value = input.values().iter().find(|v| v.key == key);
    match value.map(|v| v.value.value()) {
        Some(Value::String(text)) => parse_instant(text)
            .map_err(|e| format!("ValueError: sleep task '{task_id}': context key '{key}': {e}")),
        Some(other) => Err(format!(
            "TypeError: sleep task '{task_id}': context key '{key}' holds {}, not an ISO 8601 string",
            crate::model::map::json_type(other)
        )),
        None => Err(format!(
            "KeyError: sleep task '{task_id}': context key '{key}' is not in the task's input context"
        )),
    }
}

impl UnifiedExecutor {
    /// Sends an event: every task waiting on `key` completes with the payload (its JSON text),
    /// and a wait with that key that starts later, within 7 days, sees it too; how many waiting
    /// tasks it made ready.
    pub async fn send_event(&self, key: &str, payload_json: String) -> Result<usize> {
        self.inner
            .db
            .send_event(key.to_string(), payload_json)
            .await
    }
}

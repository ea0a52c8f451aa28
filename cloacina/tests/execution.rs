//! Execution semantics: context propagation, conflict resolution, failures and panics.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cloacina::{
    Context, DatabaseUrl, Error, ExecutionStatus, ExecutorConfig, FnTask, SubmitOptions, Task,
    TaskError, TaskFuture, TaskStatus, UnifiedExecutor, Workflow,
};
use common::{ctx, file_executor, final_ctx, memory_executor, task, temp_db, writes, writes_after};
use serde_json::{json, Value};

/// A task that outputs `{"out_<id>": id, "seen_by_<id>": [sorted keys of its input]}`.
fn recorder(id: &str, deps: &[&str], delay: Duration) -> Arc<dyn Task> {
    let own = id.to_string();
    FnTask::new(id, deps, move |input: Context| {
        let own = own.clone();
        async move {
            tokio::time::sleep(delay).await;
            let keys: Vec<String> = input.as_map().keys().cloned().collect();
            let mut out = Context::new();
            out.insert(format!("seen_by_{own}"), json!(keys));
            out.insert(format!("out_{own}"), json!(own));
            Ok(out)
        }
    })
}

/// The `out_*` and plain input keys that task `id` saw.
fn seen(result: &cloacina::ExecutionResult, id: &str) -> BTreeSet<String> {
    let value = final_ctx(result)
        .get(&format!("seen_by_{id}"))
        .unwrap_or_else(|| panic!("task {id} did not record its input"));
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .filter(|k| !k.starts_with("seen_by_"))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_see_input_and_transitive_upstream_outputs_only() {
    let (_dir, path) = temp_db();
    let exec = file_executor(&path).await;
    // a -> b -> d -> e, c is an unrelated branch that finishes long before d starts, f joins all.
    let wf = Workflow::new(
        "lineage",
        vec![
            recorder("a", &[], Duration::ZERO),
            recorder("b", &["a"], Duration::from_millis(150)),
            recorder("c", &[], Duration::ZERO),
            recorder("d", &["b"], Duration::ZERO),
            recorder("e", &["d"], Duration::ZERO),
            recorder("f", &["e", "c"], Duration::ZERO),
        ],
    )
    .unwrap();
    let result = exec.execute(&wf, ctx(json!({"input": 1}))).await.unwrap();
    assert_eq!(result.status, ExecutionStatus::Completed, "{result:#?}");
    assert_eq!(seen(&result, "a"), set(&["input"]));
    assert_eq!(seen(&result, "c"), set(&["input"]));
    assert_eq!(seen(&result, "b"), set(&["input", "out_a"]));
    assert_eq!(seen(&result, "d"), set(&["input", "out_a", "out_b"]));
    assert_eq!(
        seen(&result, "e"),
        set(&["input", "out_a", "out_b", "out_d"])
    );
    assert_eq!(
        seen(&result, "f"),
        set(&["input", "out_a", "out_b", "out_c", "out_d", "out_e"])
    );
    // The final context merges the input and every output.
    let finals = final_ctx(&result);
    assert_eq!(finals.get("input"), Some(&json!(1)));
    for id in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(finals.get(&format!("out_{id}")), Some(&json!(id)));
        assert!(finals.get(&format!("seen_by_{id}")).is_some());
    }
    assert_eq!(finals.len(), 1 + 6 * 2);
    assert_eq!(result.input_context, ctx(json!({"input": 1})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_receive_upstream_values() {
    let exec = memory_executor().await;
    let num = |c: &Context, k: &str| {
        c.get(k)
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("missing {k}"))
    };
    let wf = Workflow::new(
        "values",
        vec![
            FnTask::new("a", &[], move |c| async move {
                let mut out = Context::new();
                out.insert("x", num(&c, "seed") + 1);
                Ok(out)
            }),
            FnTask::new("b", &["a"], move |c| async move {
                let mut out = Context::new();
                out.insert("y", num(&c, "x") * 10);
                Ok(out)
            }),
            FnTask::new("c", &["b"], move |c| async move {
                let mut out = Context::new();
                out.insert("z", num(&c, "seed") + num(&c, "x") + num(&c, "y"));
                Ok(out)
            }),
        ],
    )
    .unwrap();
    let result = exec.execute(&wf, ctx(json!({"seed": 1}))).await.unwrap();
    assert_eq!(result.status, ExecutionStatus::Completed, "{result:#?}");
    assert_eq!(
        final_ctx(&result),
        &ctx(json!({"seed": 1, "x": 2, "y": 20, "z": 23}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_output_overrides_input_for_its_dependents_only() {
    let exec = memory_executor().await;
    let echo = |id: &str, deps: &[&str]| {
        let id_owned = id.to_string();
        FnTask::new(id, deps, move |c: Context| {
            let id = id_owned.clone();
            async move {
                let mut out = Context::new();
                out.insert(
                    format!("{id}_saw"),
                    c.get("k").cloned().unwrap_or(Value::Null),
                );
                Ok(out)
            }
        })
    };
    let wf = Workflow::new(
        "override",
        vec![
            writes("a", &[], "k", json!("from a")),
            echo("b", &["a"]),
            echo("c", &[]),
        ],
    )
    .unwrap();
    let result = exec.execute(&wf, ctx(json!({"k": "input"}))).await.unwrap();
    let finals = final_ctx(&result);
    assert_eq!(finals.get("b_saw"), Some(&json!("from a")));
    assert_eq!(finals.get("c_saw"), Some(&json!("input")));
    assert_eq!(finals.get("k"), Some(&json!("from a")));
}

/// Diamond start -> {left, right} -> join where both branches write `k`. The branch later in
/// topological order must win, even when it finishes first.
async fn diamond_conflict(listing_left_first: bool) -> cloacina::ExecutionResult {
    let exec = memory_executor().await;
    // The branch earlier in topological order is the slow one, so completion order is reversed.
    let (first, second) = if listing_left_first {
        ("left", "right")
    } else {
        ("right", "left")
    };
    let join = FnTask::new("join", &["left", "right"], |c: Context| async move {
        let mut out = Context::new();
        out.insert("join_saw", c.get("k").cloned().unwrap_or(Value::Null));
        Ok(out)
    });
    let wf = Workflow::new(
        "conflict",
        vec![
            writes("start", &[], "k", json!("start")),
            writes_after(
                first,
                &["start"],
                Duration::from_millis(200),
                "k",
                json!(first),
            ),
            writes_after(second, &["start"], Duration::ZERO, "k", json!(second)),
            join,
        ],
    )
    .unwrap();
    assert_eq!(common::order(&wf), ["start", first, second, "join"]);
    let result = exec.execute(&wf, ctx(json!({"k": "input"}))).await.unwrap();
    assert_eq!(result.status, ExecutionStatus::Completed, "{result:#?}");
    // The later-in-order branch really did finish first.
    assert!(
        task(&result, second).completed_at < task(&result, first).completed_at,
        "{result:#?}"
    );
    let finals = final_ctx(&result);
    assert_eq!(finals.get("join_saw"), Some(&json!(second)), "{result:#?}");
    assert_eq!(finals.get("k"), Some(&json!(second)), "{result:#?}");
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicting_keys_later_in_topological_order_win() {
    diamond_conflict(true).await;
    diamond_conflict(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn downstream_overwrite_beats_unrelated_later_branch() {
    // a writes k; b (after a) overwrites it. c is listed later (so later in topological order)
    // but does not write k. d depends on c and a only, so it must see a's value.
    let exec = memory_executor().await;
    let wf = Workflow::new(
        "overwrite",
        vec![
            writes("a", &[], "k", json!("a")),
            writes("b", &["a"], "k", json!("b")),
            writes("c", &[], "other", json!("c")),
            FnTask::new("d", &["c", "a"], |c: Context| async move {
                let mut out = Context::new();
                out.insert("d_saw", c.get("k").cloned().unwrap_or(Value::Null));
                Ok(out)
            }),
        ],
    )
    .unwrap();
    let result = exec.execute(&wf, Context::new()).await.unwrap();
    let finals = final_ctx(&result);
    assert_eq!(finals.get("d_saw"), Some(&json!("a")));
    assert_eq!(finals.get("k"), Some(&json!("b")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_task_skips_its_dependents_but_not_independent_branches() {
    let (_dir, path) = temp_db();
    let exec = file_executor(&path).await;
    let dependents_ran = Arc::new(AtomicUsize::new(0));
    let counting = |id: &str, deps: &[&str]| {
        let ran = dependents_ran.clone();
        FnTask::new(id, deps, move |_c| {
            let ran = ran.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(Context::new())
            }
        })
    };
    let wf = Workflow::new(
        "failing",
        vec![
            writes("root", &[], "root", json!(true)),
            FnTask::new("bad", &["root"], |_c| async move {
                Err(TaskError::new("ValueError: boom"))
            }),
            counting("child", &["bad"]),
            counting("grandchild", &["child"]),
            writes_after("indep", &[], Duration::from_millis(100), "indep", json!(1)),
            counting("mixed", &["indep", "bad"]),
            writes("after_indep", &["indep"], "after_indep", json!(2)),
        ],
    )
    .unwrap();
    let result = exec
        .execute(&wf, Context::new())
        .await
        .expect("a failing task is not an engine error");
    assert_eq!(result.status, ExecutionStatus::Failed);
    assert_eq!(dependents_ran.load(Ordering::SeqCst), 0);

    let bad = task(&result, "bad");
    assert_eq!(bad.status, TaskStatus::Failed);
    assert_eq!(bad.attempts, 1);
    assert_eq!(bad.error.as_deref(), Some("ValueError: boom"));
    assert!(bad.started_at.is_some() && bad.completed_at.is_some());

    for id in ["child", "grandchild", "mixed"] {
        let t = task(&result, id);
        assert_eq!(t.status, TaskStatus::Skipped, "{id}");
        assert_eq!(t.attempts, 0, "{id}");
        assert!(t.started_at.is_none(), "{id}");
        assert!(t.error.is_none(), "{id}");
    }
    for id in ["root", "indep", "after_indep"] {
        let t = task(&result, id);
        assert_eq!(t.status, TaskStatus::Completed, "{id}");
        assert_eq!(t.attempts, 1, "{id}");
        assert!(t.error.is_none(), "{id}");
    }

    let error = result
        .error
        .as_deref()
        .expect("a failed execution explains why");
    assert!(error.contains("bad"), "{error}");
    assert!(error.contains("ValueError: boom"), "{error}");
    assert_eq!(error, "task 'bad' failed: ValueError: boom");
    // Outputs of completed tasks are still in the final context.
    let finals = final_ctx(&result);
    assert_eq!(finals.get("root"), Some(&json!(true)));
    assert_eq!(finals.get("indep"), Some(&json!(1)));
    assert_eq!(finals.get("after_indep"), Some(&json!(2)));
    assert!(result.completed_at.is_some());

    // The stored record agrees on statuses and errors.
    let stored = exec
        .get_execution(result.execution_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, ExecutionStatus::Failed);
    assert_eq!(stored.error, result.error);
    for t in &result.task_results {
        let s = task(&stored, &t.task_id);
        assert_eq!(
            (s.status, s.attempts, &s.error),
            (t.status, t.attempts, &t.error)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_failures_are_all_reported() {
    let exec = memory_executor().await;
    let fail = |id: &str, msg: &'static str| {
        FnTask::new(id, &[], move |_c| async move { Err(TaskError::new(msg)) })
    };
    let wf = Workflow::new(
        "multi-fail",
        vec![
            fail("one", "KeyError: 'x'"),
            fail("two", "RuntimeError: nope"),
            common::noop("fine", &[]),
        ],
    )
    .unwrap();
    let result = exec.execute(&wf, Context::new()).await.unwrap();
    assert_eq!(result.status, ExecutionStatus::Failed);
    assert_eq!(task(&result, "one").error.as_deref(), Some("KeyError: 'x'"));
    assert_eq!(
        task(&result, "two").error.as_deref(),
        Some("RuntimeError: nope")
    );
    assert_eq!(task(&result, "fine").status, TaskStatus::Completed);
    let error = result.error.unwrap();
    assert!(
        error.starts_with("task 'one' failed: KeyError: 'x'"),
        "{error}"
    );
    assert!(error.contains("1 more"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_error_traceback_is_recorded() {
    let (_dir, path) = temp_db();
    let exec = file_executor(&path).await;
    let wf = Workflow::new(
        "traceback",
        vec![FnTask::new("t", &[], |_c| async move {
            Err(TaskError {
                traceback: Some(
                    "Traceback (most recent call last):\n  File \"x.py\", line 1\n".into(),
                ),
                ..TaskError::new("ZeroDivisionError: division by zero")
            })
        })],
    )
    .unwrap();
    let result = exec.execute(&wf, Context::new()).await.unwrap();
    let t = task(&result, "t");
    assert_eq!(
        t.error.as_deref(),
        Some("ZeroDivisionError: division by zero")
    );
    assert!(t.traceback.as_deref().unwrap().starts_with("Traceback"));
    let stored = exec
        .get_execution(result.execution_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task(&stored, "t").traceback, t.traceback);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panicking_task_fails_instead_of_crashing() {
    let (_dir, path) = temp_db();
    let exec = file_executor(&path).await;
    let wf = Workflow::new(
        "panics",
        vec![
            FnTask::new("explode", &[], |_c| async move {
                if std::hint::black_box(true) {
                    panic!("kaboom");
                }
                Ok(Context::new())
            }),
            common::noop("after", &["explode"]),
            writes("fine", &[], "fine", json!(true)),
        ],
    )
    .unwrap();
    let result = exec
        .execute(&wf, Context::new())
        .await
        .expect("a panic is a task failure");
    assert_eq!(result.status, ExecutionStatus::Failed);
    let t = task(&result, "explode");
    assert_eq!(t.status, TaskStatus::Failed);
    let error = t.error.as_deref().unwrap();
    assert!(error.contains("panic"), "{error}");
    assert!(error.contains("kaboom"), "{error}");
    assert_eq!(task(&result, "after").status, TaskStatus::Skipped);
    assert_eq!(task(&result, "fine").status, TaskStatus::Completed);
    assert!(result.error.as_deref().unwrap().contains("explode"));

    // The executor keeps working afterwards.
    let ok = Workflow::new("after-panic", vec![common::noop("x", &[])]).unwrap();
    let again = exec.execute(&ok, Context::new()).await.unwrap();
    assert_eq!(again.status, ExecutionStatus::Completed);
    let stored = exec
        .get_execution(result.execution_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, ExecutionStatus::Failed);
    assert_eq!(task(&stored, "explode").status, TaskStatus::Failed);
}

/// A task whose `execute` panics before returning a future (a bug in a hand-written `Task`).
struct PanicsWhenCalled;

impl Task for PanicsWhenCalled {
    fn id(&self) -> &str {
        "eager"
    }
    fn dependencies(&self) -> &[String] {
        &[]
    }
    fn execute(&self, _context: Context) -> TaskFuture {
        panic!("panicked while creating the future")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_panicking_before_returning_a_future_fails_instead_of_crashing() {
    let (_dir, path) = temp_db();
    let exec = file_executor(&path).await;
    let wf = Workflow::new(
        "eager-panic",
        vec![
            Arc::new(PanicsWhenCalled) as Arc<dyn Task>,
            common::noop("other", &[]),
        ],
    )
    .unwrap();
    let exec2 = exec.clone();
    let joined = tokio::spawn(async move { exec2.execute(&wf, Context::new()).await }).await;
    let result = joined
        .expect("execute must not panic when a task's execute() panics")
        .expect("a panic is a task failure, not an engine error");
    assert_eq!(result.status, ExecutionStatus::Failed);
    assert_eq!(task(&result, "eager").status, TaskStatus::Failed);
    assert_eq!(task(&result, "other").status, TaskStatus::Completed);
    let stored = exec
        .get_execution(result.execution_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, ExecutionStatus::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_output_and_empty_input_complete() {
    let exec = memory_executor().await;
    let wf = Workflow::new(
        "noop",
        vec![common::noop("a", &[]), common::noop("b", &["a"])],
    )
    .unwrap();
    let result = exec.execute(&wf, Context::new()).await.unwrap();
    assert_eq!(result.status, ExecutionStatus::Completed);
    assert!(result.error.is_none());
    assert_eq!(final_ctx(&result), &Context::new());
    assert_eq!(result.workflow_name, "noop");
    assert_eq!(result.workflow_version, wf.version());
    let ids: Vec<&str> = result
        .task_results
        .iter()
        .map(|t| t.task_id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b"], "task results follow the topological order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_workflow_can_run_repeatedly() {
    let exec = memory_executor().await;
    let wf = Workflow::new("repeat", vec![writes("a", &[], "a", json!(1))]).unwrap();
    let mut ids = BTreeSet::new();
    for i in 0..5 {
        let result = exec.execute(&wf, ctx(json!({"i": i}))).await.unwrap();
        assert_eq!(result.status, ExecutionStatus::Completed);
        assert_eq!(final_ctx(&result), &ctx(json!({"i": i, "a": 1})));
        assert!(ids.insert(result.execution_id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_max_concurrency_is_a_configuration_error() {
    let config = ExecutorConfig {
        max_concurrency: 0,
        ..ExecutorConfig::default()
    };
    match UnifiedExecutor::connect(DatabaseUrl::SqliteMemory, config).await {
        Err(Error::Configuration(msg)) => assert!(msg.contains("max_concurrency"), "{msg}"),
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("max_concurrency 0 must be rejected"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_beyond_a_year_are_configuration_errors_not_panics() {
    let config = ExecutorConfig {
        lease_timeout: Duration::MAX,
        ..ExecutorConfig::default()
    };
    match UnifiedExecutor::connect(DatabaseUrl::SqliteMemory, config).await {
        Err(Error::Configuration(msg)) => assert!(msg.contains("lease_timeout="), "{msg}"),
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("a lease_timeout of Duration::MAX must be rejected"),
    }
    let exec = memory_executor().await;
    let wf = Workflow::new("wf", vec![common::noop("a", &[])]).unwrap();
    let too_long = SubmitOptions {
        timeout: Some(Duration::MAX),
        ..SubmitOptions::default()
    };
    match exec.submit(&wf, Context::new(), too_long).await {
        Err(Error::Configuration(msg)) => assert!(msg.contains("one year"), "{msg}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let id = exec
        .submit(&wf, Context::new(), SubmitOptions::default())
        .await
        .unwrap();
    match exec.wait(id, Some(Duration::MAX)).await {
        Err(Error::Configuration(msg)) => assert!(msg.contains("timeout="), "{msg}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

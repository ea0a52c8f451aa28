//! DAG validation, topological ordering and graph versions of `Workflow`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cloacina::{Task, Workflow, WorkflowError};
use common::{noop, order};

fn build(tasks: Vec<Arc<dyn Task>>) -> Result<Workflow, WorkflowError> {
    Workflow::new("wf", tasks)
}

/// Asserts `cycle` is a closed walk over exactly `expected` ids, each consecutive pair being an edge
/// of `edges` (task -> its dependencies), all pairs in one consistent direction.
fn assert_is_cycle(cycle: &[String], expected: &[&str], edges: &[(&str, &[&str])]) {
    assert!(cycle.len() >= 2, "cycle too short: {cycle:?}");
    assert_eq!(
        cycle.first(),
        cycle.last(),
        "first id is repeated last: {cycle:?}"
    );
    let members: BTreeSet<&str> = cycle.iter().map(String::as_str).collect();
    let expected_set: BTreeSet<&str> = expected.iter().copied().collect();
    assert_eq!(members, expected_set, "ids on the cycle: {cycle:?}");
    assert_eq!(
        cycle.len(),
        expected.len() + 1,
        "each id appears once: {cycle:?}"
    );
    let deps: HashMap<&str, &[&str]> = edges.iter().copied().collect();
    let depends_on = |x: &str, y: &str| deps.get(x).is_some_and(|d| d.contains(&y));
    let pairs: Vec<(&str, &str)> = cycle
        .windows(2)
        .map(|w| (w[0].as_str(), w[1].as_str()))
        .collect();
    let forward = pairs.iter().all(|&(x, y)| depends_on(x, y));
    let backward = pairs.iter().all(|&(x, y)| depends_on(y, x));
    assert!(
        forward || backward,
        "consecutive ids of {cycle:?} must be edges in one direction"
    );
}

#[test]
fn empty_name_is_rejected() {
    for name in ["", "   ", "\t\n"] {
        let err = Workflow::new(name, vec![noop("a", &[])]).unwrap_err();
        assert_eq!(err, WorkflowError::EmptyName, "name {name:?}");
        assert_eq!(err.to_string(), "workflow name must be a non-empty string");
    }
}

#[test]
fn empty_task_list_is_rejected() {
    let err = Workflow::new("etl", vec![]).unwrap_err();
    assert_eq!(err, WorkflowError::Empty("etl".into()));
    let msg = err.to_string();
    assert!(msg.contains("'etl'") && msg.contains("no tasks"), "{msg}");
}

#[test]
fn duplicate_task_id_is_rejected() {
    let err = Workflow::new(
        "etl",
        vec![noop("load", &[]), noop("x", &["load"]), noop("load", &[])],
    )
    .unwrap_err();
    assert_eq!(
        err,
        WorkflowError::DuplicateTask {
            workflow: "etl".into(),
            task: "load".into()
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("'etl'") && msg.contains("'load'"), "{msg}");
}

#[test]
fn unknown_dependency_names_both_ids() {
    let err = build(vec![noop("extract", &[]), noop("transform", &["extrakt"])]).unwrap_err();
    assert_eq!(
        err,
        WorkflowError::UnknownDependency {
            task: "transform".into(),
            dependency: "extrakt".into()
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("'transform'"), "{msg}");
    assert!(msg.contains("'extrakt'"), "{msg}");
}

#[test]
fn unknown_dependency_is_reported_even_when_listed_before_its_dependents() {
    // The unknown id is referenced by the very first task.
    let err = build(vec![noop("a", &["ghost"]), noop("b", &["a"])]).unwrap_err();
    assert!(
        matches!(&err, WorkflowError::UnknownDependency { task, dependency } if task == "a" && dependency == "ghost"),
        "{err:?}"
    );
}

#[test]
fn three_task_cycle_lists_ids_in_cycle_order() {
    // a -> b -> c -> a (each task depends on the previous one, and a depends on c).
    let edges: &[(&str, &[&str])] = &[("a", &["c"]), ("b", &["a"]), ("c", &["b"])];
    let err = build(edges.iter().map(|(id, d)| noop(id, d)).collect()).unwrap_err();
    let WorkflowError::Cycle(cycle) = &err else {
        panic!("expected a cycle error, got {err:?}");
    };
    assert_is_cycle(cycle, &["a", "b", "c"], edges);
    let msg = err.to_string();
    assert!(msg.starts_with("tasks form a dependency cycle: "), "{msg}");
    assert_eq!(
        msg,
        format!("tasks form a dependency cycle: {}", cycle.join(" -> "))
    );
}

#[test]
fn cycle_error_excludes_tasks_merely_downstream_or_upstream_of_the_cycle() {
    // "tail" depends on the cycle and is listed first; "root" feeds the cycle; "other" is unrelated.
    let edges: &[(&str, &[&str])] = &[
        ("tail", &["b"]),
        ("root", &[]),
        ("other", &[]),
        ("a", &["root", "c"]),
        ("b", &["a"]),
        ("c", &["b"]),
    ];
    let err = build(edges.iter().map(|(id, d)| noop(id, d)).collect()).unwrap_err();
    let WorkflowError::Cycle(cycle) = &err else {
        panic!("expected a cycle error, got {err:?}");
    };
    assert_is_cycle(cycle, &["a", "b", "c"], edges);
}

#[test]
fn self_loop_is_a_cycle() {
    let err = build(vec![noop("ok", &[]), noop("loop", &["ok", "loop"])]).unwrap_err();
    assert_eq!(
        err,
        WorkflowError::Cycle(vec!["loop".into(), "loop".into()])
    );
    assert_eq!(
        err.to_string(),
        "tasks form a dependency cycle: loop -> loop"
    );
}

#[test]
fn two_task_cycle() {
    let edges: &[(&str, &[&str])] = &[("x", &["y"]), ("y", &["x"])];
    let err = build(edges.iter().map(|(id, d)| noop(id, d)).collect()).unwrap_err();
    let WorkflowError::Cycle(cycle) = &err else {
        panic!("expected a cycle error, got {err:?}");
    };
    assert_is_cycle(cycle, &["x", "y"], edges);
}

#[test]
fn workflow_errors_convert_into_engine_errors() {
    let err: cloacina::Error = WorkflowError::EmptyName.into();
    assert!(matches!(
        err,
        cloacina::Error::Workflow(WorkflowError::EmptyName)
    ));
    assert_eq!(err.to_string(), WorkflowError::EmptyName.to_string());
}

#[test]
fn valid_diamond() {
    let wf = Workflow::new(
        "diamond",
        vec![
            noop("join", &["left", "right"]),
            noop("right", &["start"]),
            noop("left", &["start"]),
            noop("start", &[]),
        ],
    )
    .expect("a diamond is a valid DAG");
    assert_eq!(wf.name(), "diamond");
    assert_eq!(wf.len(), 4);
    assert!(!wf.is_empty());
    let ids = order(&wf);
    assert_eq!(ids.first().map(String::as_str), Some("start"));
    assert_eq!(ids.last().map(String::as_str), Some("join"));
    // Positional accessors agree with the ids.
    let pos = |id: &str| ids.iter().position(|x| x == id).unwrap();
    let mut join_deps = wf.dependencies_of(pos("join")).to_vec();
    join_deps.sort_unstable();
    let mut expected = vec![pos("left"), pos("right")];
    expected.sort_unstable();
    assert_eq!(join_deps, expected);
    let mut start_dependents = wf.dependents_of(pos("start")).to_vec();
    start_dependents.sort_unstable();
    assert_eq!(start_dependents, expected);
    assert!(wf.dependencies_of(pos("start")).is_empty());
    assert!(wf.dependents_of(pos("join")).is_empty());
    assert_eq!(wf.tasks().len(), 4);
}

#[test]
fn duplicate_dependency_entries_are_tolerated() {
    let wf = build(vec![noop("a", &[]), noop("b", &["a", "a"])]).expect("valid");
    assert_eq!(order(&wf), ["a", "b"]);
    assert_eq!(wf.dependencies_of(1), &[0]);
}

// ---------------------------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------------------------

/// A larger DAG, listed deliberately out of order.
fn big_dag() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("report", &["merge", "audit"]),
        ("merge", &["clean_a", "clean_b", "clean_c"]),
        ("clean_c", &["fetch_c"]),
        ("fetch_a", &[]),
        ("clean_a", &["fetch_a"]),
        ("audit", &["fetch_b"]),
        ("fetch_c", &[]),
        ("clean_b", &["fetch_b", "fetch_a"]),
        ("fetch_b", &[]),
        ("lonely", &[]),
    ]
}

#[test]
fn topological_order_respects_every_edge() {
    let spec = big_dag();
    let wf = build(spec.iter().map(|(id, d)| noop(id, d)).collect()).unwrap();
    let ids = order(&wf);
    assert_eq!(ids.len(), spec.len());
    let pos: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for (id, deps) in &spec {
        for dep in *deps {
            assert!(pos[dep] < pos[id], "{dep} must come before {id} in {ids:?}");
        }
    }
    // tasks() is in the same order as task_ids().
    let from_tasks: Vec<&str> = wf.tasks().iter().map(|t| t.id()).collect();
    assert_eq!(from_tasks, ids);
}

#[test]
fn independent_tasks_keep_listing_order() {
    let wf = build(vec![noop("c", &[]), noop("a", &[]), noop("b", &[])]).unwrap();
    assert_eq!(order(&wf), ["c", "a", "b"]);
    let wf = build(vec![noop("b", &[]), noop("c", &[]), noop("a", &[])]).unwrap();
    assert_eq!(order(&wf), ["b", "c", "a"]);
}

#[test]
fn ties_are_broken_by_listing_order() {
    // Ready at start: c, a, b (listing positions 1, 2, 3). After c and a run, d (position 0)
    // becomes ready and, being listed first, is taken before b.
    let wf = build(vec![
        noop("d", &["a"]),
        noop("c", &[]),
        noop("a", &[]),
        noop("b", &[]),
    ])
    .unwrap();
    assert_eq!(order(&wf), ["c", "a", "d", "b"]);
}

#[test]
fn ordering_is_deterministic_across_builds() {
    let spec = big_dag();
    let first = order(&build(spec.iter().map(|(id, d)| noop(id, d)).collect()).unwrap());
    for _ in 0..20 {
        let again = order(&build(spec.iter().map(|(id, d)| noop(id, d)).collect()).unwrap());
        assert_eq!(again, first);
    }
    // The exact order follows from Kahn's algorithm taking the earliest-listed ready task.
    assert_eq!(
        first,
        [
            "fetch_a", "clean_a", "fetch_c", "clean_c", "fetch_b", "audit", "clean_b", "merge",
            "report", "lonely"
        ]
    );
}

#[test]
fn version_ignores_listing_order_and_workflow_name() {
    let spec = big_dag();
    let forward = build(spec.iter().map(|(id, d)| noop(id, d)).collect()).unwrap();
    let backward = build(spec.iter().rev().map(|(id, d)| noop(id, d)).collect()).unwrap();
    assert_ne!(
        order(&forward),
        order(&backward),
        "listing order changes tie-breaking"
    );
    assert_eq!(forward.version(), backward.version());
    // Dependency order within one task does not matter either.
    let a = build(vec![noop("x", &[]), noop("y", &[]), noop("z", &["x", "y"])]).unwrap();
    let b = build(vec![noop("y", &[]), noop("x", &[]), noop("z", &["y", "x"])]).unwrap();
    assert_eq!(a.version(), b.version());
    let renamed = Workflow::new(
        "another name",
        spec.iter().map(|(id, d)| noop(id, d)).collect(),
    )
    .unwrap();
    assert_eq!(renamed.version(), forward.version());
    // Stable, hex, non-empty.
    assert!(!forward.version().is_empty());
    assert!(
        forward.version().chars().all(|c| c.is_ascii_hexdigit()),
        "{}",
        forward.version()
    );
}

#[test]
fn version_differs_for_different_graphs() {
    let base = build(vec![noop("a", &[]), noop("b", &["a"]), noop("c", &["b"])]).unwrap();
    let variants = [
        // Different edge.
        build(vec![noop("a", &[]), noop("b", &["a"]), noop("c", &["a"])]).unwrap(),
        // Extra edge.
        build(vec![
            noop("a", &[]),
            noop("b", &["a"]),
            noop("c", &["a", "b"]),
        ])
        .unwrap(),
        // Missing edge.
        build(vec![noop("a", &[]), noop("b", &[]), noop("c", &["b"])]).unwrap(),
        // Renamed task.
        build(vec![noop("a", &[]), noop("b2", &["a"]), noop("c", &["b2"])]).unwrap(),
        // Extra task.
        build(vec![
            noop("a", &[]),
            noop("b", &["a"]),
            noop("c", &["b"]),
            noop("d", &[]),
        ])
        .unwrap(),
        // Reversed chain.
        build(vec![noop("c", &[]), noop("b", &["c"]), noop("a", &["b"])]).unwrap(),
    ];
    let mut seen = BTreeSet::from([base.version().to_string()]);
    for v in &variants {
        assert!(
            seen.insert(v.version().to_string()),
            "version collision for {v:?}"
        );
    }
}

#[test]
fn version_does_not_confuse_id_boundaries() {
    // Concatenating ids naively would make these two graphs hash alike.
    let a = build(vec![noop("ab", &[]), noop("c", &[])]).unwrap();
    let b = build(vec![noop("a", &[]), noop("bc", &[])]).unwrap();
    assert_ne!(a.version(), b.version());
}

#[test]
fn graphs_render_as_mermaid_and_dot_with_quotes_escaped() {
    let wf = Workflow::new(
        "etl \"nightly\"",
        vec![
            noop("extract", &[]),
            noop("say \"hi\"", &["extract"]),
            noop("load", &["extract", "say \"hi\""]),
        ],
    )
    .unwrap();
    assert_eq!(
        wf.to_mermaid(),
        "flowchart TD\n    t0[\"extract\"]\n    t1[\"say #quot;hi#quot;\"]\n    t2[\"load\"]\n    \
         t0 --> t1\n    t0 --> t2\n    t1 --> t2\n"
    );
    assert_eq!(
        wf.to_dot(),
        "digraph \"etl \\\"nightly\\\"\" {\n    rankdir=TB;\n    \"extract\";\n    \
         \"say \\\"hi\\\"\";\n    \"load\";\n    \"extract\" -> \"say \\\"hi\\\"\";\n    \
         \"extract\" -> \"load\";\n    \"say \\\"hi\\\"\" -> \"load\";\n}\n"
    );
}

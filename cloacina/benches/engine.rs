//! The engine's own cost on S1 (a chain of no-op tasks) and S2 (root, fan-out, join), with Rust
//! tasks, so the Python boundary's cost can be told apart. Prints medians and ranges.
//!
//! `cargo bench -p cloacina --bench engine` runs on a SQLite file; set
//! `CLOACINA_BENCH_POSTGRES_URL` to also run on PostgreSQL.

use std::time::{Duration, Instant};

use cloacina::{Context, DatabaseUrl, ExecutorConfig, FnTask, Task, UnifiedExecutor, Workflow};
use serde_json::json;
use std::sync::Arc;

const REPEAT: usize = 5;

fn chain(n: usize) -> Workflow {
    let tasks: Vec<Arc<dyn Task>> = (0..n)
        .map(|i| {
            let deps: Vec<String> = if i == 0 {
                vec![]
            } else {
                vec![format!("t{}", i - 1)]
            };
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            FnTask::new(format!("t{i}"), &deps, move |ctx: Context| async move {
                let v = if i == 0 {
                    0
                } else {
                    ctx.get("v").and_then(|v| v.as_i64()).unwrap_or(0) + 1
                };
                Ok([("v".to_string(), json!(v))].into_iter().collect())
            })
        })
        .collect();
    Workflow::new(format!("chain{n}"), tasks).expect("valid chain")
}

fn fan(n: usize) -> Workflow {
    let mut tasks: Vec<Arc<dyn Task>> = vec![FnTask::new("root", &[], |_ctx| async {
        Ok([("seed".to_string(), json!(1))].into_iter().collect())
    })];
    let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        tasks.push(FnTask::new(
            name.clone(),
            &["root"],
            move |ctx: Context| async move {
                let seed = ctx.get("seed").and_then(|v| v.as_i64()).unwrap_or(0);
                Ok([(format!("f{i}"), json!(i as i64 * seed))]
                    .into_iter()
                    .collect())
            },
        ));
    }
    let deps: Vec<&str> = names.iter().map(String::as_str).collect();
    tasks.push(FnTask::new("join", &deps, move |ctx: Context| async move {
        let total: i64 = (0..n)
            .filter_map(|i| ctx.get(&format!("f{i}")).and_then(|v| v.as_i64()))
            .sum();
        Ok([("total".to_string(), json!(total))].into_iter().collect())
    }));
    Workflow::new(format!("fan{n}"), tasks).expect("valid fan")
}

async fn measure(executor: &UnifiedExecutor, workflow: &Workflow) -> Vec<Duration> {
    let warm = executor
        .execute(workflow, Context::new())
        .await
        .expect("warm-up runs");
    assert_eq!(warm.status.as_str(), "Completed");
    let mut walls = Vec::with_capacity(REPEAT);
    for _ in 0..REPEAT {
        let started = Instant::now();
        let result = executor
            .execute(workflow, Context::new())
            .await
            .expect("execution runs");
        walls.push(started.elapsed());
        assert_eq!(result.status.as_str(), "Completed");
    }
    walls.sort();
    walls
}

fn report(backend: &str, label: &str, tasks: usize, walls: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = walls[walls.len() / 2];
    println!(
        "{backend:<9} {label:<16} {tasks:>6} tasks  wall {:>9.2} ms ({:.2}-{:.2})  {:>7.3} ms/task  {:>9.0} tasks/s",
        ms(median),
        ms(walls[0]),
        ms(walls[walls.len() - 1]),
        ms(median) / tasks as f64,
        tasks as f64 / median.as_secs_f64()
    );
}

async fn run_backend(backend: &str, url: DatabaseUrl) {
    let config = ExecutorConfig {
        max_concurrency: 16,
        ..ExecutorConfig::default()
    };
    let executor = UnifiedExecutor::connect(url, config)
        .await
        .expect("database opens");
    for n in [100, 1_000] {
        report(
            backend,
            &format!("S1 chain {n}"),
            n,
            &measure(&executor, &chain(n)).await,
        );
    }
    for n in [200, 10_000] {
        report(
            backend,
            &format!("S2 fan-out {n}"),
            n + 2,
            &measure(&executor, &fan(n)).await,
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        println!("engine-only benchmarks (Rust no-op tasks, {REPEAT} runs after one warm-up; median (min-max))");
        let dir = tempfile::tempdir().expect("temp dir");
        run_backend("sqlite", DatabaseUrl::SqliteFile(dir.path().join("bench.db"))).await;
        #[cfg(feature = "postgres")]
        if let Ok(url) = std::env::var("CLOACINA_BENCH_POSTGRES_URL") {
            let url = DatabaseUrl::parse(&url, cloacina::BackendKind::Postgres).expect("valid URL");
            run_backend("postgres", url).await;
        }
    });
}

//! The threads database calls run on: `cloacina-db` threads, or tokio's blocking pool.
//!
//! An idle `cloacina-db` thread waits on its own slot, and the most recently idle one takes the
//! next call: on a chain of tasks the same warm thread serves every commit, and a call wakes
//! exactly one thread. tokio's blocking pool wakes whichever of its idle threads the kernel
//! picks. Past [`MAX_THREADS`] busy threads, calls go to that pool instead, so nothing waits
//! for a slot.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use once_cell::sync::Lazy;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::handoff::Turn;

/// Most `cloacina-db` threads kept; further concurrent calls use tokio's blocking pool.
const MAX_THREADS: usize = 64;
/// How long an idle thread waits for a call before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce() + Send>;

/// Where one idle thread waits for its next call.
#[derive(Default)]
struct Slot {
    job: Mutex<Option<Job>>,
    handed: Condvar,
}

impl Slot {
    fn hand(&self, job: Job) {
        *lock(&self.job) = Some(job);
        self.handed.notify_one();
    }
}

#[derive(Default)]
struct State {
    /// Idle threads' slots, the most recently idle last.
    idle: Vec<Arc<Slot>>,
    /// Threads alive, busy or idle.
    threads: usize,
}

static STATE: Lazy<Mutex<State>> = Lazy::new(Mutex::default);

/// Which idle thread spins for the next call: the most recently idle, which takes it.
static SPIN_TURN: Turn = Turn::new();

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a database call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// The most recently idle `cloacina-db` thread (SQLite's calls run there).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Warm,
    /// Any of tokio's blocking threads.
    Any,
}

/// Runs `work` at `place` and waits for its result without blocking the runtime.
pub(crate) async fn run<T: Send + 'static>(
    place: Place,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (sender, receiver) = oneshot::channel();
    spawn(place, move || {
        let result = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
            Err(Error::Database(
                "a database call panicked; see the log for where".into(),
            ))
        });
        let _ = sender.send(result);
    });
    receiver
        .await
        .map_err(|_| Error::Database("database worker stopped unexpectedly".into()))?
}

/// Starts `work` at `place` and returns at once; `work` hands its results on itself. Call
/// inside the tokio runtime.
pub(crate) fn spawn(place: Place, work: impl FnOnce() + Send + 'static) {
    match place {
        Place::Warm => start(Box::new(work)),
        Place::Any => drop(tokio::task::spawn_blocking(work)),
    }
}

/// Hands `job` to the most recently idle thread, a new one, or tokio's blocking pool.
fn start(job: Job) {
    let mut state = lock(&STATE);
    if let Some(slot) = state.idle.pop() {
        drop(state);
        return slot.hand(job);
    }
    if state.threads < MAX_THREADS {
        state.threads += 1;
        drop(state);
        let (first, spare) = split_once(job);
        let spawned = std::thread::Builder::new()
            .name("cloacina-db".into())
            .spawn(move || {
                if let Some(job) = first.take() {
                    job();
                }
                serve();
            });
        if spawned.is_ok() {
            return;
        }
        lock(&STATE).threads -= 1;
        if let Some(job) = spare.take() {
            drop(tokio::task::spawn_blocking(job));
        }
        return;
    }
    drop(state);
    drop(tokio::task::spawn_blocking(job));
}

/// One job shared by a new thread and the fallback used if that thread cannot start.
fn split_once(job: Job) -> (Arc<Once>, Arc<Once>) {
    let once = Arc::new(Once(Mutex::new(Some(job))));
    (once.clone(), once)
}

/// A job that is run by whichever holder takes it first.
struct Once(Mutex<Option<Job>>);

impl Once {
    fn take(&self) -> Option<Job> {
        lock(&self.0).take()
    }
}

/// A database thread's life after its first call: wait idle, run what is handed, exit when
/// nothing came for [`IDLE_EXIT`].
fn serve() {
    let slot = Arc::new(Slot::default());
    loop {
        lock(&STATE).idle.push(slot.clone());
        SPIN_TURN.spin_until(|| slot.job.try_lock().is_ok_and(|job| job.is_some()));
        let mut job = lock(&slot.job);
        loop {
            if let Some(next) = job.take() {
                drop(job);
                next();
                break;
            }
            let (guard, waited) = slot
                .handed
                .wait_timeout(job, IDLE_EXIT)
                .unwrap_or_else(|p| p.into_inner());
            job = guard;
            if waited.timed_out() && job.is_none() && leave(&slot) {
                return;
            }
        }
    }
}

/// Takes an idle thread's slot off the list so it can exit; false if a call already took the
/// slot (its job is on its way).
fn leave(slot: &Arc<Slot>) -> bool {
    let mut state = lock(&STATE);
    let Some(at) = state.idle.iter().position(|s| Arc::ptr_eq(s, slot)) else {
        return false;
    };
    state.idle.remove(at);
    state.threads -= 1;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_calls_and_survives_a_panic() {
        assert_eq!(run(Place::Warm, || Ok(41 + 1)).await.unwrap(), 42);
        assert_eq!(run(Place::Any, || Ok(7)).await.unwrap(), 7);
        for place in [Place::Warm, Place::Any] {
            let err = run::<()>(place, || panic!("boom")).await.unwrap_err();
            assert!(err.to_string().contains("panicked"), "{err}");
        }
        assert_eq!(run(Place::Warm, || Ok("again")).await.unwrap(), "again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_more_concurrent_calls_than_threads() {
        let calls = MAX_THREADS + 8;
        let barrier = Arc::new(std::sync::Barrier::new(calls));
        let handles: Vec<_> = (0..calls)
            .map(|i| {
                let barrier = barrier.clone();
                tokio::spawn(run(Place::Warm, move || {
                    barrier.wait();
                    Ok(i)
                }))
            })
            .collect();
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await.unwrap().unwrap());
        }
        assert_eq!(results, (0..calls).collect::<Vec<_>>());
    }
}

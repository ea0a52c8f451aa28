//! Waiting for the next hand-off on a thread that expects one soon: a short spin before
//! sleeping.
//!
//! A chain of tasks moves between threads one hand-off at a time (task thread → runtime →
//! database thread → runtime → task thread), each thread idle for well under a millisecond
//! between its turns. A thread that sleeps there leaves its CPU idle, and waking a thread on
//! another CPU cost 25–35 µs on the CI machine, a virtual machine (`perf sched timehist`),
//! several times per task. So while this process runs an execution on SQLite, the runtime's
//! thread before it parks, and a database or task thread after its job, check for their next
//! hand-off for a short while, yielding the CPU between checks so that any runnable thread
//! goes first, and only then sleep; of a pool's idle threads only the last to go idle spins
//! (it takes the next hand-off). A process running nothing never spins; on PostgreSQL a
//! commit waits on the server longer than a spin lasts, so nothing spins there either.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a thread checks for its next hand-off before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// Executions this process is running now on an in-process database (SQLite).
static DRIVING: AtomicUsize = AtomicUsize::new(0);

/// Held while this process runs an execution on SQLite: threads spin for their next hand-off
/// only then (on PostgreSQL a commit waits on the server longer than a spin lasts).
pub(crate) struct Driving(());

impl Driving {
    /// Counts one more execution running here until dropped.
    pub(crate) fn start() -> Self {
        DRIVING.fetch_add(1, Ordering::Relaxed);
        Driving(())
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        DRIVING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Checks `arrived` until it returns true or [`SPIN`] has passed, yielding the CPU between
/// checks; whether it arrived. Checks once when this process runs no execution.
fn spin_until(arrived: impl FnMut() -> bool) -> bool {
    spin_while_driving(&DRIVING, arrived)
}

fn spin_while_driving(driving: &AtomicUsize, mut arrived: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if arrived() {
            return true;
        }
        if driving.load(Ordering::Relaxed) == 0 || started.elapsed() >= SPIN {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Which one of a pool's idle threads spins: the one that went idle last, which takes the next
/// hand-off first (a pool's other idle threads sleep at once, so a busy pool never has many
/// threads spinning).
pub(crate) struct Turn(AtomicUsize);

/// Numbers this process's threads for [`Turn`], from 1.
static THREADS_NUMBERED: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static THIS_THREAD: usize = THREADS_NUMBERED.fetch_add(1, Ordering::Relaxed);
}

impl Turn {
    /// A pool's turn to spin, held by no thread yet.
    pub(crate) const fn new() -> Self {
        Turn(AtomicUsize::new(0))
    }

    /// Takes the turn and spins like [`spin_until`] until `arrived`, or until another thread of
    /// the pool goes idle and takes the turn; whether it arrived.
    pub(crate) fn spin_until(&self, mut arrived: impl FnMut() -> bool) -> bool {
        let me = THIS_THREAD.with(|n| *n);
        self.0.store(me, Ordering::Relaxed);
        let mut came = false;
        spin_until(|| {
            came = arrived();
            came || self.0.load(Ordering::Relaxed) != me
        });
        came
    }
}

/// Spins until the tokio runtime this thread belongs to has a task woken from another thread;
/// meant for its `on_thread_park` hook (tokio finds such a task when the worker parks next).
#[cfg(feature = "python")]
pub(crate) fn await_runtime_work() {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let metrics = handle.metrics();
        spin_until(|| metrics.global_queue_depth() > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_only_while_an_execution_runs() {
        let driving = AtomicUsize::new(0);
        let mut checks = 0;
        let not_yet = |checks: &mut i32| {
            *checks += 1;
            false
        };
        // Nothing running: one check, no spin.
        assert!(!spin_while_driving(&driving, || not_yet(&mut checks)));
        assert_eq!(checks, 1);
        driving.store(1, Ordering::Relaxed);
        let started = Instant::now();
        assert!(!spin_while_driving(&driving, || not_yet(&mut checks)));
        assert!(started.elapsed() >= SPIN);
        assert!(checks > 2, "{checks}");
        let mut checks = 0;
        assert!(spin_while_driving(&driving, || {
            checks += 1;
            checks == 3
        }));
    }

    #[test]
    fn a_thread_stops_spinning_once_another_takes_the_turn() {
        let _driving = Driving::start();
        let turn = Turn::new();
        let mut checks = 0;
        let came = turn.spin_until(|| {
            checks += 1;
            if checks == 2 {
                // Another thread of the pool goes idle.
                turn.0.store(usize::MAX, Ordering::Relaxed);
            }
            false
        });
        assert!(!came);
        assert_eq!(checks, 2);
        assert!(turn.spin_until(|| true));
    }

    #[test]
    fn driving_counts_while_held() {
        // Other tests may run executions meanwhile, so only "at least one" is certain.
        let driving = Driving::start();
        assert!(DRIVING.load(Ordering::Relaxed) >= 1);
        drop(driving);
    }
}

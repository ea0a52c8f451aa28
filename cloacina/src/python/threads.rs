//! The threads sync Python tasks run on, apart from the runtime's blocking pool that database
//! work uses, so tasks that block cannot starve the database (or the other way round).
//!
//! A thread whose attempt was abandoned (timed out or cancelled) keeps running until the Python
//! function returns: Python code cannot be stopped from outside. Such threads are counted, and
//! past [`MAX_ABANDONED`] new sync attempts fail at once instead of piling up more threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use once_cell::sync::Lazy;
use tokio::sync::oneshot;

use super::bridge::{keep_thread_state, release_thread_state};
use crate::handoff::Turn;

/// Most threads left running in abandoned sync tasks before new sync attempts are refused.
pub(crate) const MAX_ABANDONED: usize = 256;
/// How long an idle thread waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    /// Threads still running a job whose caller stopped waiting.
    abandoned: usize,
}

#[derive(Default)]
struct TaskThreads {
    state: Mutex<State>,
    work: Condvar,
}

static THREADS: Lazy<TaskThreads> = Lazy::new(TaskThreads::default);

/// Which idle task thread spins for the next job: the one that went idle last.
static SPIN_TURN: Turn = Turn::new();

impl TaskThreads {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `job` on an idle thread or a new one; an error message past the abandoned bound or
    /// if no thread can be started.
    fn submit(&'static self, job: Job) -> Result<(), String> {
        let mut state = self.lock();
        if state.abandoned >= MAX_ABANDONED {
            return Err(format!(
                "{} threads are still blocked in sync tasks that timed out or were cancelled (Python code cannot be interrupted); \
                 new sync task attempts fail until some of them return. Make blocking calls in tasks return, e.g. pass them a timeout",
                state.abandoned
            ));
        }
        if state.idle > state.queue.len() {
            state.queue.push_back(job);
            self.work.notify_one();
            return Ok(());
        }
        drop(state);
        // The new thread starts with this job, so a thread that cannot start leaves none queued.
        std::thread::Builder::new()
            .name("cloacina-task".into())
            .spawn(move || {
                keep_thread_state();
                job();
                self.serve();
                release_thread_state();
            })
            .map(drop)
            .map_err(|e| format!("could not start a thread for the task: {e}"))
    }

    fn serve(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                job();
                state = self.lock();
                continue;
            }
            state.idle += 1;
            drop(state);
            SPIN_TURN.spin_until(|| {
                self.state
                    .try_lock()
                    .is_ok_and(|state| !state.queue.is_empty())
            });
            state = self.lock();
            if !state.queue.is_empty() {
                state.idle -= 1;
                continue;
            }
            let (guard, waited) = self
                .work
                .wait_timeout(state, IDLE_EXIT)
                .unwrap_or_else(|p| p.into_inner());
            state = guard;
            state.idle -= 1;
            if waited.timed_out() && state.queue.is_empty() {
                return;
            }
        }
    }
}

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// Counts the job's thread as abandoned if dropped before the job is done.
struct Waiter(Arc<AtomicU8>);

impl Drop for Waiter {
    fn drop(&mut self) {
        if self
            .0
            .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            THREADS.lock().abandoned += 1;
        }
    }
}

/// Runs `f` on a task thread and waits for its result without blocking the runtime; an error
/// message if too many threads are stuck in abandoned tasks or no thread can be started.
pub(crate) async fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let state = Arc::new(AtomicU8::new(RUNNING));
    let (sender, receiver) = oneshot::channel();
    let job_state = state.clone();
    THREADS.submit(Box::new(move || {
        let result = f();
        if job_state.swap(DONE, Ordering::SeqCst) == ABANDONED {
            THREADS.lock().abandoned -= 1;
        }
        let _ = sender.send(result);
    }))?;
    let waiter = Waiter(state);
    let result = receiver
        .await
        .map_err(|_| "the task's thread stopped without a result".to_string());
    drop(waiter);
    result
}

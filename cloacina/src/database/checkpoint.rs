//! SQLite checkpoints on a background thread. By default SQLite copies its write-ahead log into
//! the database file inside whichever commit crosses 1000 pages, which delays the task waiting
//! for that commit by as much as the copy takes; here a thread does it shortly after writes.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;

/// How long writes gather in the log before a checkpoint copies them.
const GATHER: Duration = Duration::from_millis(50);

/// Checkpoints one database file after writes, until dropped.
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    wrote: bool,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Checkpointer {
    /// Starts checkpointing the database file at `path`; None if it cannot be opened or no
    /// thread started (SQLite's own checkpoints must then stay on).
    pub(crate) fn start(path: &Path) -> Option<Self> {
        let shared = Arc::new(Shared::default());
        let connection = super::open_existing_sqlite(&path.to_string_lossy()).ok()?;
        let thread = std::thread::Builder::new()
            .name("cloacina-checkpoint".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, connection)
            })
            .ok()?;
        Some(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Tells the thread the log grew.
    pub(crate) fn wrote(&self) {
        let mut state = self.shared.lock();
        if !state.wrote {
            state.wrote = true;
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits for writes, lets more gather, then checkpoints as much as readers allow (a passive
/// checkpoint never blocks them or writers). A failed checkpoint is retried after the next
/// write: the log grows meanwhile, as it would with SQLite's own.
fn run(shared: &Shared, mut connection: SqliteConnection) {
    loop {
        let mut state = shared.lock();
        while !state.wrote && !state.stop {
            state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.stop {
            return;
        }
        let (mut state, _) = shared
            .wake
            .wait_timeout_while(state, GATHER, |s| !s.stop)
            .unwrap_or_else(|p| p.into_inner());
        state.wrote = false;
        drop(state);
        let _ = connection.batch_execute("PRAGMA wal_checkpoint(PASSIVE);");
    }
}

//! Connections the pools open in the background, counted so that nothing still connecting
//! races an executor's shutdown or the process's exit.
//!
//! r2d2 opens connections on its own threads: whenever a checkout takes the last idle one, it
//! starts opening the next. One still inside the client library while the process exits runs
//! next to the exit handlers that tear the library's global state down (a crash at exit), so
//! `shutdown()` and the interpreter's exit hook wait for [`wait_for_connects`] first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use diesel::r2d2::ManageConnection;

/// Connections being opened in this process now.
static CONNECTING: AtomicUsize = AtomicUsize::new(0);

/// A pool's connection manager whose `connect` calls are counted in [`CONNECTING`].
#[derive(Debug)]
pub(crate) struct Counted<M>(pub(crate) M);

impl<M: ManageConnection> ManageConnection for Counted<M> {
    type Connection = M::Connection;
    type Error = M::Error;

    fn connect(&self) -> Result<Self::Connection, Self::Error> {
        CONNECTING.fetch_add(1, Ordering::SeqCst);
        let _done = Done;
        self.0.connect()
    }

    fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        self.0.is_valid(conn)
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        self.0.has_broken(conn)
    }
}

/// Ends one count of [`CONNECTING`], also when `connect` panics.
struct Done;

impl Drop for Done {
    fn drop(&mut self) {
        CONNECTING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until no pool of this process is opening a connection, or `limit` has passed; true
/// when none is.
pub(crate) fn wait_for_connects(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while CONNECTING.load(Ordering::SeqCst) != 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

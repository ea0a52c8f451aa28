//! Requests that arrive while a database call serving earlier ones runs wait, and are served
//! together by the next call: one transaction for many commits (`group_commit.rs`), one query
//! for many status reads (`queries.rs`). A lone request is served at once, with no extra hop:
//! its caller starts the drain on a database thread itself. Like `Database::run`, a group is
//! served only while a SQLite database's file is still the one opened.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::{threads, Pool};
use crate::error::{Error, Result};

/// Where a request's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// Requests served together, each with where its answer goes.
pub(crate) type Group<R, T> = Vec<(R, Reply<T>)>;

/// Answers every request of a group, on a database thread.
pub(crate) type Serve<R, T> = fn(&Pool, Group<R, T>);

/// Requests of type `R` waiting to be served, and whether a drain is running.
pub(crate) struct Coalesce<R, T> {
    state: Mutex<Waiting<R, T>>,
}

struct Waiting<R, T> {
    requests: Group<R, T>,
    draining: bool,
}

impl<R, T> Default for Coalesce<R, T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(Waiting {
                requests: Vec::new(),
                draining: false,
            }),
        }
    }
}

impl<R: Send + 'static, T: Send + 'static> Coalesce<R, T> {
    fn lock(&self) -> MutexGuard<'_, Waiting<R, T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `request` and waits for its answer; `serve` answers every request of a group,
    /// called on a database thread of `pool` until none waits.
    pub(crate) async fn call(
        self: &Arc<Self>,
        pool: &Pool,
        request: R,
        serve: Serve<R, T>,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut waiting = self.lock();
            waiting.requests.push((request, reply));
            !std::mem::replace(&mut waiting.draining, true)
        };
        if start {
            let (pool, queue) = (pool.clone(), self.clone());
            threads::spawn(pool.call_place(), move || queue.drain(&pool, serve));
        }
        answer
            .await
            .map_err(|_| Error::Database("the database call stopped without a result".into()))?
    }

    /// Serves group after group until no request waits. A panic fails the group it hit (its
    /// callers hear of it) and the drain goes on.
    fn drain(&self, pool: &Pool, serve: Serve<R, T>) {
        while let Some(group) = self.take() {
            let _ = catch_unwind(AssertUnwindSafe(|| match pool.check_file() {
                Ok(()) => serve(pool, group),
                Err(error) => fail_all(group, &error),
            }));
        }
    }

    /// Every waiting request, or None (and the drain ends) when none waits.
    fn take(&self) -> Option<Group<R, T>> {
        let mut waiting = self.lock();
        if waiting.requests.is_empty() {
            waiting.draining = false;
            return None;
        }
        Some(std::mem::take(&mut waiting.requests))
    }
}

/// Answers every request of `group` with `error`.
pub(crate) fn fail_all<R, T>(group: Group<R, T>, error: &Error) {
    for (_, reply) in group {
        let _ = reply.send(Err(error.clone()));
    }
}

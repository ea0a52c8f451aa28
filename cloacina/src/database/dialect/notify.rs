//! PostgreSQL's notifications, sent after the commit of the transaction that announced them.

use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::database::signals::Signal;
use crate::error::Result;

/// Sends `signal` on the schema's channel: at once outside a transaction of
/// [`notify_after_commit`], after its commit inside one.
pub(super) fn announce(conn: &mut diesel::PgConnection, signal: Signal) -> QueryResult<()> {
    if after_commit::defer(signal) {
        return Ok(());
    }
    notify(conn, signal)
}

/// Sends `signal` on the schema's channel now.
fn notify(conn: &mut diesel::PgConnection, signal: Signal) -> QueryResult<()> {
    diesel::sql_query(format!(
        "SELECT pg_notify({}, $1)",
        crate::database::signals::CHANNEL_SQL
    ))
    .bind::<Text, _>(signal.name())
    .execute(conn)
    .map(drop)
}

/// Runs `transaction` on `conn` and sends what it announced once it has committed, each signal
/// once, as statements of their own. A `NOTIFY` inside a transaction holds a cluster-wide lock
/// from the statement until after the commit's WAL flush, so committers that notify flush one at
/// a time; after the commit it costs almost nothing. A notification lost to a crash between the
/// two is covered as any other: waiters re-read the database on their safety poll.
pub(crate) fn notify_after_commit<T>(
    conn: &mut diesel::PgConnection,
    transaction: impl FnOnce(&mut diesel::PgConnection) -> Result<T>,
) -> Result<T> {
    let (result, announced) = after_commit::collect(|| transaction(conn));
    if result.is_ok() {
        for signal in announced {
            // The commit stands either way; a failed notification only delays wake-ups.
            let _ = notify(conn, signal);
        }
    }
    result
}

/// The signals announced by the PostgreSQL transaction running on this thread.
mod after_commit {
    use std::cell::RefCell;

    use super::Signal;

    thread_local! {
        /// `Some` while a transaction of [`notify_after_commit`](super::notify_after_commit)
        /// runs on this thread.
        static ANNOUNCED: RefCell<Option<Vec<Signal>>> = const { RefCell::new(None) };
    }

    /// Keeps `signal` for after the commit; false when no transaction collects signals here.
    pub(super) fn defer(signal: Signal) -> bool {
        ANNOUNCED.with(|announced| match announced.borrow_mut().as_mut() {
            Some(signals) => {
                if !signals.contains(&signal) {
                    signals.push(signal);
                }
                true
            }
            None => false,
        })
    }

    /// Runs `f`, returning its result and the signals announced meanwhile.
    pub(super) fn collect<T>(f: impl FnOnce() -> T) -> (T, Vec<Signal>) {
        let outer = ANNOUNCED.with(|a| a.replace(Some(Vec::new())));
        let result = f();
        let announced = ANNOUNCED.with(|a| a.replace(outer)).unwrap_or_default();
        (result, announced)
    }
}

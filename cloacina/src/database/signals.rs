//! How processes sharing a database hear of new work, finished executions and cancellations.
//!
//! Transactions that create such events `announce` them: PostgreSQL sends a `NOTIFY` on the
//! schema's channel ([`CHANNEL_SQL`]) right after the commit; SQLite bumps a counter in the
//! `signals` table. Each process turns what it hears into local wake-ups: a listener connection polls
//! PostgreSQL's notifications every [`LISTEN_INTERVAL`], a reader checks SQLite's counters every
//! [`SQLITE_POLL_INTERVAL`]. Whoever waits re-reads the database when woken: signals only make
//! waiting fast, the database stays the source of truth.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::url::DatabaseUrl;

/// How often a process checks a SQLite file's signal counters for other processes' events.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub const SQLITE_POLL_INTERVAL: Duration = Duration::from_millis(25);
/// The NOTIFY channel of the current schema: a digest keeps any schema name within 63 bytes.
#[cfg(feature = "postgres")]
pub(crate) const CHANNEL_SQL: &str = "'cloacina_' || left(md5(current_schema()), 16)";

/// The URL of the listener connection: the application name gets a ` listener` suffix, so the
/// connection is told apart from the pool's (pool_size bounds those, not this one).
#[cfg(feature = "postgres")]
fn listener_url(url: &str) -> String {
    let Some(start) = url
        .find("application_name=")
        .map(|i| i + "application_name=".len())
    else {
        return url.to_string();
    };
    let end = url[start..]
        .find(['&', '#'])
        .map_or(url.len(), |i| start + i);
    format!("{}%20listener{}", &url[..end], &url[end..])
}

/// How often the PostgreSQL listener reads notifications that have arrived.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub const LISTEN_INTERVAL: Duration = Duration::from_millis(5);

/// How many kinds of [`Signal`] there are.
const KINDS: usize = 4;

thread_local! {
    /// Whether work on this thread announced [`Signal::Ready`] since it was last taken.
    static READY_ANNOUNCED: Cell<bool> = const { Cell::new(false) };
}

/// Notes that work on this thread announced [`Signal::Ready`].
pub(crate) fn note_ready_announced() {
    READY_ANNOUNCED.with(|ready| ready.set(true));
}

/// Whether work on this thread announced [`Signal::Ready`] since the last call, so this process
/// can wake its own claim loop at once rather than when it next hears the database.
pub(crate) fn take_ready_announced() -> bool {
    READY_ANNOUNCED.with(|ready| ready.replace(false))
}

/// A kind of event that waiting workers or callers care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// A task became ready to claim.
    Ready,
    /// An execution ended.
    Done,
    /// An execution was asked to stop.
    Cancelled,
    /// A schedule was added, changed, paused, resumed or removed.
    Schedules,
}

impl Signal {
    const ALL: [Signal; KINDS] = [
        Signal::Ready,
        Signal::Done,
        Signal::Cancelled,
        Signal::Schedules,
    ];

    /// The notification payload on PostgreSQL.
    #[cfg(feature = "postgres")]
    pub(crate) fn name(self) -> &'static str {
        match self {
            Signal::Ready => "ready",
            Signal::Done => "done",
            Signal::Cancelled => "cancelled",
            Signal::Schedules => "schedules",
        }
    }
}

/// Per-process counters of heard events, one watch channel per kind.
pub(crate) struct Signals {
    channels: [watch::Sender<u64>; KINDS],
    stop: Arc<AtomicBool>,
    /// The thread that hears other processes, joined by `stop_listening`.
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Signals {
    /// Signals for the database at `url`, listening to other processes where they can write it.
    pub(crate) fn start(url: &DatabaseUrl, schema: Option<&str>) -> Arc<Self> {
        let signals = Arc::new(Self {
            channels: Signal::ALL.map(|_| watch::channel(0).0),
            stop: Arc::default(),
            listener: Mutex::default(),
        });
        let weak = Arc::downgrade(&signals);
        let stop = signals.stop.clone();
        let _ = schema;
        let listener = match url {
            #[cfg(feature = "sqlite")]
            DatabaseUrl::SqliteFile(path) => {
                let path = path.to_string_lossy().into_owned();
                spawn_listener(move || sqlite_poll(&path, &weak, &stop))
            }
            #[cfg(feature = "postgres")]
            DatabaseUrl::Postgres(url) => {
                let (url, schema) = (url.clone(), schema.map(str::to_string));
                spawn_listener(move || postgres_listen(&url, schema.as_deref(), &weak, &stop))
            }
            _ => None,
        };
        *signals.listener.lock().unwrap_or_else(|p| p.into_inner()) = listener;
        signals
    }

    /// Stops the listener thread and waits until it has let go of its connection (at most a
    /// connect timeout, if it is connecting), so no database work of it outlives the executor,
    /// nor races the process's exit.
    pub(crate) fn stop_listening(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(listener) = listener {
            let _ = listener.join();
        }
    }

    fn channel(&self, signal: Signal) -> &watch::Sender<u64> {
        &self.channels[signal as usize]
    }

    /// Wakes everyone waiting for `signal` in this process.
    pub(crate) fn raise(&self, signal: Signal) {
        self.channel(signal).send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees a change whenever `signal` is raised.
    pub(crate) fn subscribe(&self, signal: Signal) -> watch::Receiver<u64> {
        self.channel(signal).subscribe()
    }
}

fn spawn_listener(run: impl FnOnce() + Send + 'static) -> Option<JoinHandle<()>> {
    // Without a listener, other processes' events are still found by the workers' safety poll.
    std::thread::Builder::new()
        .name("cloacina-signals".into())
        .spawn(run)
        .ok()
}

/// Sleeps for `duration`, waking early once `stop` is set.
#[cfg(feature = "postgres")]
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    const SLICE: Duration = Duration::from_millis(10);
    let deadline = std::time::Instant::now() + duration;
    while !stop.load(Ordering::SeqCst) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(SLICE));
    }
}

/// Raises each kind whose counter moved; false once the signals are gone.
fn raise_changed(weak: &Weak<Signals>, last: &mut [i64; KINDS], seen: [i64; KINDS]) -> bool {
    let Some(signals) = weak.upgrade() else {
        return false;
    };
    for signal in Signal::ALL {
        let i = signal as usize;
        if seen[i] != last[i] {
            signals.raise(signal);
        }
    }
    *last = seen;
    true
}

#[cfg(feature = "sqlite")]
fn sqlite_poll(path: &str, weak: &Weak<Signals>, stop: &AtomicBool) {
    use super::schema::signals;
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;

    let mut conn: Option<diesel::SqliteConnection> = None;
    let mut last: Option<[i64; KINDS]> = None;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(SQLITE_POLL_INTERVAL);
        if conn.is_none() {
            conn = super::open_existing_sqlite(path)
                .and_then(|mut c| {
                    c.batch_execute("PRAGMA busy_timeout = 1000;")
                        .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                    Ok(c)
                })
                .ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let read = signals::table
            .find(1)
            .select((
                signals::ready,
                signals::done,
                signals::cancelled,
                signals::schedules,
            ))
            .get_result::<(i64, i64, i64, i64)>(c);
        match read {
            Ok((ready, done, cancelled, schedules)) => {
                let seen = [ready, done, cancelled, schedules];
                // Events before the first read were missed: wake everyone to re-check.
                let previous = last.get_or_insert([-1; KINDS]);
                if !raise_changed(weak, previous, seen) {
                    return;
                }
            }
            Err(_) => conn = None,
        }
    }
}

#[cfg(feature = "postgres")]
fn postgres_listen(url: &str, schema: Option<&str>, weak: &Weak<Signals>, stop: &AtomicBool) {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;

    let mut conn: Option<diesel::PgConnection> = None;
    let mut retry = Duration::from_millis(100);
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            match listen(url, schema) {
                Ok(c) => {
                    conn = Some(c);
                    retry = Duration::from_millis(100);
                    // Events may have been missed while disconnected: wake everyone to re-check.
                    if !raise_changed(weak, &mut [0; KINDS], [1; KINDS]) {
                        return;
                    }
                }
                Err(_) => {
                    sleep_unless_stopped(retry, stop);
                    retry = (retry * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        std::thread::sleep(LISTEN_INTERVAL);
        let c = conn.as_mut().expect("connected above");
        let mut heard = [0i64; KINDS];
        let mut broken = false;
        for notification in c.notifications_iter() {
            match notification {
                Ok(n) => {
                    if let Some(signal) = Signal::ALL.into_iter().find(|s| s.name() == n.payload) {
                        heard[signal as usize] = 1;
                    }
                }
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if !raise_changed(weak, &mut [0; KINDS], heard) {
            return;
        }
        if broken {
            conn = None;
        }
    }

    fn listen(url: &str, schema: Option<&str>) -> diesel::QueryResult<diesel::PgConnection> {
        let mut conn = diesel::PgConnection::establish(&listener_url(url))
            .map_err(|e| diesel::result::Error::QueryBuilderError(e.to_string().into()))?;
        if let Some(schema) = schema {
            conn.batch_execute(&format!("SET search_path TO \"{schema}\""))?;
        }
        let channel: String =
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(CHANNEL_SQL))
                .get_result(&mut conn)?;
        conn.batch_execute(&format!("LISTEN {channel}"))?;
        Ok(conn)
    }
}

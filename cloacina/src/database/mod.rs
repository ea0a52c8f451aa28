//! Durable storage: connection pools, migrations and the queries the engine runs.
//!
//! Every query is ordinary Rust, written once against the shared schema and checked by the
//! compiler for each compiled-in backend. A piece of database work gets a `Conn`
//! (`connection.rs`): `Pool::with_connection` or `Pool::write_transaction` (an immediate
//! transaction in this process's turn to write on SQLite) hands one to a closure, and queries
//! run on it with `execute_on`, `load_on` and `get_result_on`, each on the backend's own
//! connection type, so diesel's statement cache works as on a plain connection.
//!
//! By concept:
//! - opening and migrating: `sqlite.rs`, `postgres.rs` (and `checkpoint.rs`, SQLite's log copied
//!   off the commit path); `url.rs`, `secrets.rs` read and redact the URL.
//! - the connection of either backend: `connection.rs`; connections the pools open in the
//!   background, counted so shutdown and exit wait for them: `connects.rs`.
//! - the dialect seam, the one place whose SQL differs per backend inside a transaction:
//!   `dialect.rs` (row locks, the lease clock, storing task ends, counting ended upstream tasks),
//!   with `dialect/take.rs` (taking ready tasks and map instances) and `dialect/notify.rs`
//!   (PostgreSQL's notifications, sent after the commit).
//! - write steps: methods of `Conn` in `store.rs` (attempts, settling, claiming, finishing an
//!   execution); the transactions built of them in `claims.rs` (commit, retry, claim; batches
//!   of many executions share one commit through `group_commit.rs`),
//!   `control.rs` (submit, cancel, fail, resume, deadlines), `leases.rs` (heartbeats, giving a
//!   dead worker's tasks back), `schedules.rs` (schedules and their fires) and `waits.rs`
//!   (parking a task as Waiting until a time or an event, waking due tasks, events).
//! - rows and reads: `rows.rs` (rows as stored), `queries.rs` (results and lists).
//! - signals between processes: `signals.rs`.
//! - the threads database calls run on: `threads.rs`; requests served together: `coalesce.rs`.
//! - statements spelled out for speed: `cached.rs` (prepared once per connection), `literal.rs`.
//!
//! A new write step is a method of `Conn` in `store.rs`, or beside the one transaction that
//! uses it; only when its SQL must differ per backend does it go to `dialect.rs`, as a method
//! that matches on the `Conn` variant. No file uses one that uses it back: each uses only
//! files earlier in `connection`, `rows` → `dialect` → `store` → `claims` (→ `group_commit`),
//! `leases` → `control` → `schedules`, `claims` → `waits` (`queries` reads on `connection` and
//! `rows` alone).

mod cached;
#[cfg(feature = "sqlite")]
mod checkpoint;
pub mod claims;
mod coalesce;
mod connection;
pub(crate) mod connects;
pub mod control;
pub(crate) mod dialect;
mod group_commit;
pub mod leases;
pub(crate) mod limit_units;
mod literal;
pub(crate) mod map;
pub mod named_limits;
pub mod queries;
mod rows;
pub mod schedules;
pub mod schema;
pub mod secrets;
pub mod signals;
pub(crate) mod store;
pub(crate) mod subworkflows;
#[cfg(all(test, feature = "sqlite"))]
mod testing;
mod threads;
pub mod url;
pub(crate) mod waits;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub(crate) use sqlite::{open_existing_sqlite, SqlitePool};

use std::sync::Arc;

use std::time::Duration;

use crate::error::{Error, Result};
use crate::limits;
use url::DatabaseUrl;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("enable at least one backend feature: `sqlite` or `postgres`");

#[cfg(feature = "postgres")]
use diesel::pg::PgConnection;

/// Default pool size for a SQLite file (writers serialise, readers share WAL snapshots).
pub const DEFAULT_SQLITE_POOL_SIZE: u32 = 4;
/// Default pool size for PostgreSQL.
pub const DEFAULT_POSTGRES_POOL_SIZE: u32 = 10;

/// A pool of connections to one backend.
#[derive(Clone)]
pub(crate) enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(diesel::r2d2::Pool<connects::Counted<diesel::r2d2::ConnectionManager<PgConnection>>>),
}

impl Pool {
    /// Where this pool's calls run best. SQLite's work happens in the calling thread, which
    /// stays warm; a PostgreSQL call mostly waits on the server, and on one warm thread S1 ran
    /// 25 % slower (the thread migrated between cores a quarter more often).
    pub(crate) fn call_place(&self) -> threads::Place {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => threads::Place::Warm,
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => threads::Place::Any,
        }
    }

    /// An error once a SQLite database file was deleted or replaced while in use.
    fn check_file(&self) -> Result<()> {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => pool.check_file(),
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Ok(()),
        }
    }
}

/// Tunables for the connection pool.
#[derive(Debug, Clone, Default)]
pub struct PoolOptions {
    /// Most connections the pool opens; `None` picks the backend's default.
    pub max_size: Option<u32>,
    /// PostgreSQL schema holding all tables (created if missing); `None` uses the search path.
    pub schema: Option<String>,
    /// PostgreSQL: how long a session may sit idle inside a transaction before the server ends
    /// it, freeing its locks (a worker frozen mid-commit blocks nobody for longer); `None`:
    /// [`DEFAULT_IDLE_IN_TRANSACTION_LIMIT`], or an executor's choice (see `ExecutorConfig`).
    pub idle_in_transaction_limit: Option<Duration>,
}

/// The idle-in-transaction limit of a pool that sets none.
pub const DEFAULT_IDLE_IN_TRANSACTION_LIMIT: Duration = Duration::from_secs(30);

impl PoolOptions {
    /// Checks the options against the database they are for, before connecting.
    pub fn validate(&self, url: &DatabaseUrl) -> Result<()> {
        if let Some(schema) = &self.schema {
            if !matches!(url, DatabaseUrl::Postgres(_)) {
                return Err(Error::Configuration(format!(
                    "schema={schema:?} is only supported on PostgreSQL; on SQLite one file is one tenant, so use a separate file"
                )));
            }
            url::validate_schema(schema)?;
        }
        if let Some(size) = self.max_size {
            limits::POOL_SIZE.check(u64::from(size))?;
        }
        Ok(())
    }
}

/// A migrated database reached through a connection pool.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    signals: Arc<signals::Signals>,
    commits: Arc<group_commit::CommitQueue>,
    status_reads: Arc<queries::StatusReads>,
}

impl Database {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn connect(url: DatabaseUrl, options: PoolOptions) -> Result<Self> {
        threads::run(threads::Place::Any, move || {
            Self::connect_blocking(&url, &options)
        })
        .await
    }

    fn connect_blocking(url: &DatabaseUrl, options: &PoolOptions) -> Result<Self> {
        options.validate(url)?;
        let pool = match url {
            #[cfg(feature = "sqlite")]
            DatabaseUrl::SqliteMemory => sqlite::open_memory()?,
            #[cfg(feature = "sqlite")]
            DatabaseUrl::SqliteFile(path) => sqlite::open_file(path, options)?,
            #[cfg(feature = "postgres")]
            DatabaseUrl::Postgres(url) => postgres::open(url, options)?,
            #[allow(unreachable_patterns)]
            other => {
                return Err(Error::Configuration(format!(
                    "{other:?} is not supported by this build of cloacina"
                )))
            }
        };
        let signals = signals::Signals::start(url, options.schema.as_deref());
        Ok(Self {
            pool,
            signals,
            commits: Arc::default(),
            status_reads: Arc::default(),
        })
    }

    /// Whether its calls run in this process (SQLite) rather than wait on a server: then a
    /// chain's hand-offs come quickly enough to spin for (`handoff.rs`).
    pub(crate) fn in_process(&self) -> bool {
        self.pool.call_place() == threads::Place::Warm
    }

    /// What this process has heard of new work, finished and cancelled executions.
    pub(crate) fn signals(&self) -> &signals::Signals {
        &self.signals
    }

    /// Runs blocking database work off the async runtime's worker threads.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Pool) -> Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        let place = pool.call_place();
        let (done, ready) = threads::run(place, move || {
            pool.check_file()?;
            signals::take_ready_announced();
            let done = work(&pool)?;
            Ok((done, signals::take_ready_announced()))
        })
        .await?;
        // Tasks it made ready are claimed here at once, not when this process next hears the
        // database.
        if ready {
            self.signals.raise(signals::Signal::Ready);
        }
        Ok(done)
    }
}

fn migration_error(err: Box<dyn std::error::Error + Send + Sync>) -> Error {
    Error::Database(format!("running migrations failed: {err}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    fn migration_names(backend: &str) -> BTreeSet<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend);
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn backends_have_the_same_migrations() {
        let sqlite = migration_names("sqlite");
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, migration_names("postgres"));
    }
}

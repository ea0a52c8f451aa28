//! Durable storage: connection pools, migrations and the queries the engine runs.
//!
//! Queries are written once against the shared schema; `with_connection!` and `write_transaction!`
//! expand them for each compiled-in backend, and `for_each_backend!` implements the shared
//! transaction steps (`store.rs`) for each connection type. Only connection set-up, migration
//! locking, claiming (`claims.rs`) and signalling (`signals.rs`) differ per backend.

mod cached;
#[cfg(feature = "sqlite")]
mod checkpoint;
pub mod claims;
pub mod control;
pub mod leases;
mod literal;
pub mod queries;
pub mod schedules;
pub mod schema;
pub mod secrets;
pub mod signals;
pub(crate) mod store;
pub mod url;

use std::sync::Arc;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection};
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::{Error, Result};
use crate::limits;
use url::DatabaseUrl;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("enable at least one backend feature: `sqlite` or `postgres`");

#[cfg(feature = "sqlite")]
use diesel::sqlite::SqliteConnection;

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
    Postgres(diesel::r2d2::Pool<ConnectionManager<PgConnection>>),
}

impl Pool {
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

/// A SQLite pool and the lock its write transactions take in this process, so they queue here
/// instead of sleeping in SQLite's busy handler.
#[cfg(feature = "sqlite")]
#[derive(Clone)]
pub(crate) struct SqlitePool {
    pool: diesel::r2d2::Pool<ConnectionManager<SqliteConnection>>,
    writer: std::sync::Arc<std::sync::Mutex<()>>,
    /// The database file and its identity when opened; None in memory.
    file: Option<Arc<(std::path::PathBuf, FileIdentity)>>,
    /// Copies the write-ahead log into the file after writes; None in memory.
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
}

/// A file's device and inode: open connections keep writing to these even after the path is
/// deleted or replaced.
#[cfg(feature = "sqlite")]
type FileIdentity = (u64, u64);

#[cfg(feature = "sqlite")]
fn file_identity(path: &std::path::Path) -> std::io::Result<FileIdentity> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        // Elsewhere an open file cannot be deleted; only its existence is checked.
        std::fs::metadata(path).map(|_| (0, 0))
    }
}

#[cfg(feature = "sqlite")]
impl SqlitePool {
    fn new(
        pool: diesel::r2d2::Pool<ConnectionManager<SqliteConnection>>,
        file: Option<&std::path::Path>,
        checkpointer: Option<checkpoint::Checkpointer>,
    ) -> Result<Self> {
        let file = match file {
            Some(path) => {
                let inspect_error =
                    |e| Error::Database(format!("could not inspect SQLite database {path:?}: {e}"));
                // Absolute, so a later change of the working directory changes nothing.
                let path = std::fs::canonicalize(path).map_err(inspect_error)?;
                let identity = file_identity(&path).map_err(inspect_error)?;
                Some(Arc::new((path, identity)))
            }
            None => None,
        };
        Ok(Self {
            pool,
            writer: std::sync::Arc::default(),
            file,
            checkpointer: checkpointer.map(Arc::new),
        })
    }

    /// An error once the database file was deleted or replaced: writes would go to a file
    /// nobody can open again, and reads would show results that are not kept.
    fn check_file(&self) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let (path, opened) = &**file;
        match file_identity(path) {
            Ok(identity) if identity == *opened => Ok(()),
            _ => Err(Error::Database(format!(
                "the SQLite database file {path:?} was deleted or replaced while in use; what was recorded in it since then is lost. Restore the file, or initialize a new executor"
            ))),
        }
    }

    /// Holds this process's turn to write until dropped.
    pub(crate) fn write_turn(&self) -> WriteTurn<'_> {
        WriteTurn {
            _turn: self.writer.lock().unwrap_or_else(|p| p.into_inner()),
            checkpointer: self.checkpointer.as_deref(),
        }
    }
}

/// This process's turn to write to a SQLite file; once it ends, the log is checkpointed.
#[cfg(feature = "sqlite")]
pub(crate) struct WriteTurn<'a> {
    _turn: std::sync::MutexGuard<'a, ()>,
    checkpointer: Option<&'a checkpoint::Checkpointer>,
}

#[cfg(feature = "sqlite")]
impl Drop for WriteTurn<'_> {
    fn drop(&mut self) {
        if let Some(checkpointer) = self.checkpointer {
            checkpointer.wrote();
        }
    }
}

#[cfg(feature = "sqlite")]
impl std::ops::Deref for SqlitePool {
    type Target = diesel::r2d2::Pool<ConnectionManager<SqliteConnection>>;

    fn deref(&self) -> &Self::Target {
        &self.pool
    }
}

/// Opens the SQLite database file at `path`, which must exist: a helper thread reconnecting after
/// the file was deleted must not create an empty one in its place.
#[cfg(feature = "sqlite")]
pub(crate) fn open_existing_sqlite(path: &str) -> diesel::ConnectionResult<SqliteConnection> {
    let escaped = path
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    SqliteConnection::establish(&format!("file:{escaped}?mode=rw"))
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend `$pool` holds.
macro_rules! with_connection {
    ($pool:expr, |$conn:ident| $body:expr) => {
        match $pool {
            #[cfg(feature = "sqlite")]
            $crate::database::Pool::Sqlite(pool) => {
                let $conn = &mut *pool.get()?;
                $body
            }
            #[cfg(feature = "postgres")]
            $crate::database::Pool::Postgres(pool) => {
                let $conn = &mut *pool.get()?;
                $body
            }
        }
    };
}

/// Like `with_connection!`, inside a write transaction (`BEGIN IMMEDIATE` on SQLite).
macro_rules! write_transaction {
    ($pool:expr, |$conn:ident| $body:expr) => {
        match $pool {
            #[cfg(feature = "sqlite")]
            $crate::database::Pool::Sqlite(pool) => {
                let mut conn = pool.get()?;
                let _turn = pool.write_turn();
                conn.immediate_transaction(|$conn| -> $crate::error::Result<_> { $body })
            }
            #[cfg(feature = "postgres")]
            $crate::database::Pool::Postgres(pool) => pool
                .get()?
                .transaction(|$conn| -> $crate::error::Result<_> { $body }),
        }
    };
}
/// Expands `$mac!(ConnectionType)` once per compiled-in backend.
macro_rules! for_each_backend {
    ($mac:ident) => {
        #[cfg(feature = "sqlite")]
        $mac!(diesel::sqlite::SqliteConnection);
        #[cfg(feature = "postgres")]
        $mac!(diesel::pg::PgConnection);
    };
}
pub(crate) use {for_each_backend, with_connection, write_transaction};

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
}

impl Database {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn connect(url: DatabaseUrl, options: PoolOptions) -> Result<Self> {
        blocking(move || Self::connect_blocking(&url, &options)).await
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
        Ok(Self { pool, signals })
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
        blocking(move || {
            pool.check_file()?;
            work(&pool)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Database(format!("database worker stopped unexpectedly: {e}")))?
}

fn migration_error(err: Box<dyn std::error::Error + Send + Sync>) -> Error {
    Error::Database(format!("running migrations failed: {err}"))
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::checkpoint::Checkpointer;
    use super::*;
    use std::path::Path;

    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
    /// How long SQLite waits on another writer's lock before failing.
    const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

    /// Settings every SQLite connection gets: WAL for concurrent readers, a busy timeout for
    /// writers; with `own_checkpoints`, no checkpoints inside commits (a [`Checkpointer`] runs them).
    #[derive(Debug)]
    struct Pragmas {
        own_checkpoints: bool,
    }

    impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Pragmas {
        fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
            apply_pragmas(conn).map_err(diesel::r2d2::Error::QueryError)?;
            if self.own_checkpoints {
                conn.batch_execute("PRAGMA wal_autocheckpoint = 0;")
                    .map_err(diesel::r2d2::Error::QueryError)?;
            }
            Ok(())
        }
    }

    fn apply_pragmas(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
        conn.batch_execute(&format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};"))?;
        enable_wal(conn)?;
        conn.batch_execute("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
    }

    /// Switches to WAL, retrying: SQLite reports a concurrent switch as "locked" at once,
    /// without waiting out the busy timeout.
    fn enable_wal(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
        let deadline =
            std::time::Instant::now() + Duration::from_millis(u64::from(SQLITE_BUSY_TIMEOUT_MS));
        loop {
            match conn.batch_execute("PRAGMA journal_mode = WAL;") {
                Err(e)
                    if e.to_string().contains("locked") && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    /// Applies pending migrations while holding SQLite's write lock, so concurrent initialisers queue.
    fn migrate(conn: &mut SqliteConnection) -> Result<()> {
        conn.exclusive_transaction(|conn| {
            conn.run_pending_migrations(MIGRATIONS)
                .map(drop)
                .map_err(migration_error)
        })
    }

    pub(super) fn open_file(path: &Path, options: &PoolOptions) -> Result<Pool> {
        let location = path.to_string_lossy().into_owned();
        let open_error = |e: &dyn std::fmt::Display| {
            Error::Database(format!("could not open SQLite database {location:?}: {e}"))
        };
        {
            // Closed before the pool opens, so initialize never exceeds pool_size connections.
            let mut conn = SqliteConnection::establish(&location).map_err(|e| open_error(&e))?;
            apply_pragmas(&mut conn).map_err(|e| open_error(&e))?;
            migrate(&mut conn)?;
        }
        let checkpointer = Checkpointer::start(path);
        let pragmas = Pragmas {
            own_checkpoints: checkpointer.is_some(),
        };
        let pool = diesel::r2d2::Pool::builder()
            .max_size(options.max_size.unwrap_or(DEFAULT_SQLITE_POOL_SIZE))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(30))
            // A connection to a local file does not go stale; skip the `SELECT 1` per checkout.
            .test_on_check_out(false)
            .connection_customizer(Box::new(pragmas))
            .build(ConnectionManager::new(location.clone()))
            .map_err(|e| open_error(&e))?;
        Ok(Pool::Sqlite(SqlitePool::new(
            pool,
            Some(path),
            checkpointer,
        )?))
    }

    /// One connection, kept for the pool's lifetime: every connection to `:memory:` is a new database.
    pub(super) fn open_memory() -> Result<Pool> {
        let pool = diesel::r2d2::Pool::builder()
            .max_size(1)
            .min_idle(Some(1))
            .idle_timeout(None)
            .max_lifetime(None)
            .connection_timeout(Duration::from_secs(60))
            .test_on_check_out(false)
            .connection_customizer(Box::new(Pragmas {
                own_checkpoints: false,
            }))
            .build(ConnectionManager::new(":memory:"))
            .map_err(|e| {
                Error::Database(format!("could not open in-memory SQLite database: {e}"))
            })?;
        migrate(&mut *pool.get()?)?;
        Ok(Pool::Sqlite(SqlitePool::new(pool, None, None)?))
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
    /// Advisory lock key that serialises concurrent migrations ("cloacina" in ASCII).
    const MIGRATION_LOCK_KEY: i64 = 0x636c_6f61_6369_6e61;

    /// Settings of every pooled session: the tenant's schema, and how long it may sit idle
    /// inside a transaction.
    #[derive(Debug)]
    struct Session {
        schema: Option<String>,
        idle_in_transaction: Duration,
    }

    impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for Session {
        fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
            if let Some(schema) = &self.schema {
                set_search_path(conn, schema).map_err(diesel::r2d2::Error::QueryError)?;
            }
            conn.batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = {}",
                self.idle_in_transaction
                    .as_millis()
                    .clamp(1, i32::MAX as u128)
            ))
            .map_err(diesel::r2d2::Error::QueryError)
        }
    }

    /// `schema` was validated by `url::validate_schema`, so it is safe inside quotes.
    fn set_search_path(conn: &mut PgConnection, schema: &str) -> diesel::QueryResult<()> {
        conn.batch_execute(&format!("SET search_path TO \"{schema}\""))
    }

    fn migrate(conn: &mut PgConnection, schema: Option<&str>) -> Result<()> {
        conn.transaction(|conn| {
            conn.batch_execute(&format!(
                "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
            ))?;
            if let Some(schema) = schema {
                conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))?;
                set_search_path(conn, schema)?;
            }
            conn.run_pending_migrations(MIGRATIONS)
                .map(drop)
                .map_err(migration_error)
        })
    }

    pub(super) fn open(url: &str, options: &PoolOptions) -> Result<Pool> {
        let shown = super::secrets::redact(url);
        let open_error = |e: &dyn std::fmt::Display| {
            Error::Database(format!(
                "could not connect to {shown}: {}",
                super::secrets::scrub(&e.to_string(), url)
            ))
        };
        {
            // Closed before the pool opens, so initialize never exceeds pool_size connections.
            let mut conn = PgConnection::establish(url).map_err(|e| open_error(&e))?;
            migrate(&mut conn, options.schema.as_deref())?;
        }
        let connect_timeout = u64::from(super::url::connect_timeout_secs(url)).max(1);
        let pool = diesel::r2d2::Pool::builder()
            .max_size(options.max_size.unwrap_or(DEFAULT_POSTGRES_POOL_SIZE))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(connect_timeout + 1))
            .connection_customizer(Box::new(Session {
                schema: options.schema.clone(),
                idle_in_transaction: options
                    .idle_in_transaction_limit
                    .unwrap_or(DEFAULT_IDLE_IN_TRANSACTION_LIMIT),
            }))
            .build(ConnectionManager::new(url))
            .map_err(|e| open_error(&e))?;
        Ok(Pool::Postgres(pool))
    }
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

//! SQLite: opening a file (WAL, busy timeout, migrations under the write lock), the pool and
//! this process's turn to write.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::checkpoint::Checkpointer;
use super::connects::Counted;
use super::{migration_error, Pool, PoolOptions, DEFAULT_SQLITE_POOL_SIZE};
use crate::error::{Error, Result};

/// A SQLite pool and the lock its write transactions take in this process, so they queue here
/// instead of sleeping in SQLite's busy handler.
#[derive(Clone)]
pub(crate) struct SqlitePool {
    pool: diesel::r2d2::Pool<Counted<ConnectionManager<SqliteConnection>>>,
    writer: std::sync::Arc<std::sync::Mutex<()>>,
    /// The database file and its identity when opened; None in memory.
    file: Option<Arc<(std::path::PathBuf, FileIdentity)>>,
    /// Copies the write-ahead log into the file after writes; None in memory.
    checkpointer: Option<Arc<Checkpointer>>,
}

/// A file's device and inode: open connections keep writing to these even after the path is
/// deleted or replaced.
type FileIdentity = (u64, u64);

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

impl SqlitePool {
    fn new(
        pool: diesel::r2d2::Pool<Counted<ConnectionManager<SqliteConnection>>>,
        file: Option<&std::path::Path>,
        checkpointer: Option<Checkpointer>,
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
    pub(super) fn check_file(&self) -> Result<()> {
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
pub(crate) struct WriteTurn<'a> {
    _turn: std::sync::MutexGuard<'a, ()>,
    checkpointer: Option<&'a Checkpointer>,
}

impl Drop for WriteTurn<'_> {
    fn drop(&mut self) {
        if let Some(checkpointer) = self.checkpointer {
            checkpointer.wrote();
        }
    }
}

impl std::ops::Deref for SqlitePool {
    type Target = diesel::r2d2::Pool<Counted<ConnectionManager<SqliteConnection>>>;

    fn deref(&self) -> &Self::Target {
        &self.pool
    }
}

/// Opens the SQLite database file at `path`, which must exist: a helper thread reconnecting after
/// the file was deleted must not create an empty one in its place.
pub(crate) fn open_existing_sqlite(path: &str) -> diesel::ConnectionResult<SqliteConnection> {
    SqliteConnection::establish(&existing_file_uri(path))
}

/// A URI that opens the file at `path` only if it exists (`mode=rw`), never creating it.
fn existing_file_uri(path: &str) -> String {
    let escaped = path
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    format!("file:{escaped}?mode=rw")
}

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
            Err(e) if e.to_string().contains("locked") && std::time::Instant::now() < deadline => {
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
        // The file exists now; a connection the pool opens later (after it was deleted) fails
        // rather than creating an empty database in its place.
        .build(Counted(ConnectionManager::new(existing_file_uri(
            &location,
        ))))
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
        .build(Counted(ConnectionManager::new(":memory:")))
        .map_err(|e| Error::Database(format!("could not open in-memory SQLite database: {e}")))?;
    migrate(&mut *pool.get()?)?;
    Ok(Pool::Sqlite(SqlitePool::new(pool, None, None)?))
}

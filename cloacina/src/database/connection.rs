//! A connection of whichever backend is open ([`Conn`]), and how a query written once runs on it.
//!
//! A query is built once with diesel's DSL against the shared schema and run with
//! [`RunOn`]'s `execute_on`, `load_on` or `get_result_on`: the compiler checks it against every
//! compiled-in backend, and each backend runs it on its own connection type, so diesel's
//! statement cache applies exactly as on a plain connection. What must differ per backend matches
//! on the variant in `dialect.rs`.

use diesel::query_dsl::methods::ExecuteDsl;
use diesel::query_dsl::LoadQuery;
use diesel::{QueryResult, Selectable};

#[cfg(feature = "postgres")]
use diesel::pg::PgConnection;
#[cfg(feature = "sqlite")]
use diesel::sqlite::SqliteConnection;

use super::Pool;
#[cfg(feature = "sqlite")]
use super::SqlitePool;
use crate::error::Result;

/// Values per `IN (...)` list or multi-row `INSERT`, well under every backend's bound-parameter
/// limit.
pub(crate) const CHUNK: usize = 1_000;

/// A pooled connection of the backend that is open, borrowed for one piece of work.
pub(crate) enum Conn<'c> {
    #[cfg(feature = "sqlite")]
    Sqlite(&'c mut SqliteConnection),
    #[cfg(feature = "postgres")]
    Postgres(&'c mut PgConnection),
}

impl Pool {
    /// Runs `work` on a pooled connection.
    pub(crate) fn with_connection<T>(
        &self,
        work: impl FnOnce(&mut Conn<'_>) -> Result<T>,
    ) -> Result<T> {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => work(&mut Conn::Sqlite(&mut *pool.get()?)),
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => work(&mut Conn::Postgres(&mut *pool.get()?)),
        }
    }

    /// Runs `work` in a write transaction: on SQLite an immediate one (`BEGIN IMMEDIATE`),
    /// taken in this process's turn to write; on PostgreSQL notifications follow the commit.
    pub(crate) fn write_transaction<T>(
        &self,
        work: impl FnOnce(&mut Conn<'_>) -> Result<T>,
    ) -> Result<T> {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => immediate(pool, &mut *pool.get()?, work),
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                use diesel::Connection;
                super::dialect::notify_after_commit(&mut *pool.get()?, |conn| {
                    conn.transaction(|conn| work(&mut Conn::Postgres(conn)))
                })
            }
        }
    }
}

/// Runs `work` on `conn`, a connection of `pool`, in an immediate transaction (`BEGIN
/// IMMEDIATE`: the write lock from its start) taken in this process's turn to write.
#[cfg(feature = "sqlite")]
pub(crate) fn immediate<T>(
    pool: &SqlitePool,
    conn: &mut SqliteConnection,
    work: impl FnOnce(&mut Conn<'_>) -> Result<T>,
) -> Result<T> {
    let _turn = pool.write_turn();
    conn.immediate_transaction(|conn| work(&mut Conn::Sqlite(conn)))
}

/// The connection types a query is checked against: SQLite's and PostgreSQL's, or one of them
/// twice when only one backend is compiled in (a bound repeated changes nothing).
#[cfg(feature = "sqlite")]
type FirstBackend = SqliteConnection;
#[cfg(not(feature = "sqlite"))]
type FirstBackend = PgConnection;
#[cfg(feature = "postgres")]
type SecondBackend = PgConnection;
#[cfg(not(feature = "postgres"))]
type SecondBackend = SqliteConnection;

/// A statement every compiled-in backend can execute.
pub(crate) trait Execute: ExecuteDsl<FirstBackend> + ExecuteDsl<SecondBackend> {}
impl<Q: ExecuteDsl<FirstBackend> + ExecuteDsl<SecondBackend>> Execute for Q {}

/// A query every compiled-in backend can load as rows of `U`.
pub(crate) trait Load<'q, U>:
    LoadQuery<'q, FirstBackend, U> + LoadQuery<'q, SecondBackend, U>
{
}
impl<'q, U, Q> Load<'q, U> for Q where
    Q: LoadQuery<'q, FirstBackend, U> + LoadQuery<'q, SecondBackend, U>
{
}

/// The columns of row type `T`, to `select` and load as `T` on any backend (`T::as_select()`
/// names one backend; a row type's columns, its `Selectable` derive, are the same on all).
pub(crate) fn columns<T>() -> T::SelectExpression
where
    T: Selectable<<FirstBackend as diesel::Connection>::Backend>,
{
    T::construct_selection()
}

/// Runs a query written once on a [`Conn`], like diesel's `RunQueryDsl` on one connection type.
pub(crate) trait RunOn: Sized {
    /// Executes the statement; returns the number of rows it changed.
    fn execute_on(self, conn: &mut Conn<'_>) -> QueryResult<usize>
    where
        Self: Execute,
    {
        match conn {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(conn) => ExecuteDsl::<SqliteConnection>::execute(self, &mut **conn),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => ExecuteDsl::<PgConnection>::execute(self, &mut **conn),
        }
    }

    /// Every row the query returns.
    fn load_on<'q, U>(self, conn: &mut Conn<'_>) -> QueryResult<Vec<U>>
    where
        Self: Load<'q, U>,
    {
        match conn {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(conn) => diesel::RunQueryDsl::<SqliteConnection>::load(self, &mut **conn),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => diesel::RunQueryDsl::<PgConnection>::load(self, &mut **conn),
        }
    }

    /// The query's first row; `NotFound` when there is none.
    fn get_result_on<'q, U>(self, conn: &mut Conn<'_>) -> QueryResult<U>
    where
        Self: Load<'q, U>,
    {
        use diesel::RunQueryDsl;
        match conn {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(conn) => RunQueryDsl::<SqliteConnection>::get_result(self, &mut **conn),
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => RunQueryDsl::<PgConnection>::get_result(self, &mut **conn),
        }
    }
}

impl<Q> RunOn for Q {}

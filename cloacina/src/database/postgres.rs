//! PostgreSQL: opening a pool (session settings, a tenant schema) and migrating under an
//! advisory lock.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection};
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::{
    migration_error, Pool, PoolOptions, DEFAULT_IDLE_IN_TRANSACTION_LIMIT,
    DEFAULT_POSTGRES_POOL_SIZE,
};
use crate::error::{Error, Result};

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
        .build(super::connects::Counted(ConnectionManager::new(url)))
        .map_err(|e| open_error(&e))?;
    Ok(Pool::Postgres(pool))
}

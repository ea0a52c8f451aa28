//! Parsing and validating database URLs, per backend.

use std::fmt;
use std::path::PathBuf;

use super::secrets::{self, redact, scheme_len};
use crate::error::{Error, Result};

/// Which database a build of the engine talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// SQLite, compiled in.
    Sqlite,
    /// PostgreSQL through libpq.
    Postgres,
}

impl BackendKind {
    /// The backend's short name, as used by `CLOACINA_BACKEND`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        }
    }

    /// The pip package that provides this backend.
    pub fn package(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "cloacina-sqlite",
            BackendKind::Postgres => "cloacina-postgres",
        }
    }
}

/// A database location the engine accepted.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A private in-memory SQLite database that lives as long as the executor.
    SqliteMemory,
    /// A SQLite database file.
    SqliteFile(PathBuf),
    /// A PostgreSQL connection URL (kept verbatim; never shown unredacted).
    Postgres(String),
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::SqliteMemory => f.write_str("SqliteMemory"),
            DatabaseUrl::SqliteFile(path) => f.debug_tuple("SqliteFile").field(path).finish(),
            DatabaseUrl::Postgres(url) => f.debug_tuple("Postgres").field(&redact(url)).finish(),
        }
    }
}

impl DatabaseUrl {
    /// Validates `url` for `backend` without touching any database.
    pub fn parse(url: &str, backend: BackendKind) -> Result<Self> {
        let shown = redact(url);
        if url.trim().is_empty() {
            return Err(invalid(backend, "the database URL is empty"));
        }
        if url.contains('\0') {
            return Err(invalid(
                backend,
                &format!("the database URL {shown:?} contains a NUL byte"),
            ));
        }
        let scheme = scheme_len(url).map(|len| url[..len].to_ascii_lowercase());
        match (backend, scheme.as_deref()) {
            (BackendKind::Sqlite, Some("sqlite")) => parse_sqlite(url),
            (BackendKind::Sqlite, None) => match url {
                ":memory:" => Ok(DatabaseUrl::SqliteMemory),
                path => sqlite_file(path),
            },
            (BackendKind::Postgres, Some("postgresql" | "postgres")) => parse_postgres(url),
            (BackendKind::Postgres, Some(s @ ("sqlite" | "file"))) | (BackendKind::Sqlite, Some(s @ ("postgresql" | "postgres"))) => {
                let other = if s.starts_with("postgres") { BackendKind::Postgres } else { BackendKind::Sqlite };
                Err(Error::Configuration(format!(
                    "{shown:?} is a {} URL, but this is the {} backend; install it with `pip install {}`",
                    other.name(),
                    backend.name(),
                    other.package()
                )))
            }
            (BackendKind::Postgres, None) => Err(Error::Configuration(match postgres_shape(url) {
                Some(shape) => format!(
                    "the database URL looks like {shape}; cloacina reads URLs only: pass postgresql://user:password@host:5432/dbname"
                ),
                None => format!(
                    "{shown:?} looks like a file path, but this is the postgres backend; for SQLite install `pip install cloacina-sqlite`, for PostgreSQL pass postgresql://user:password@host:5432/dbname"
                ),
            })),
            (BackendKind::Sqlite, Some(_)) if !url.contains("://") && postgres_shape(url).is_some() => sqlite_file(url),
            (_, Some(other)) => Err(invalid(backend, &format!("unsupported URL scheme {other:?} in {shown:?}"))),
        }
    }
}

fn parse_sqlite(url: &str) -> Result<DatabaseUrl> {
    let rest = &url["sqlite:".len()..];
    let shown = redact(url);
    if rest.contains('?') || rest.contains('#') {
        return Err(invalid(
            BackendKind::Sqlite,
            &format!("{shown:?} has query parameters or a fragment, which are not supported"),
        ));
    }
    if rest == "//:memory:" {
        return Ok(DatabaseUrl::SqliteMemory);
    }
    match rest.strip_prefix("///") {
        Some(path) if !path.is_empty() && !path.ends_with('/') => sqlite_file(path),
        _ => Err(invalid(
            BackendKind::Sqlite,
            &format!("{shown:?} is not a valid SQLite URL"),
        )),
    }
}

/// A SQLite file at `path`, unless `path` is a PostgreSQL connection string: opening that would
/// create a file named after its password.
fn sqlite_file(path: &str) -> Result<DatabaseUrl> {
    match postgres_shape(path) {
        Some(shape) => Err(Error::Configuration(format!(
            "the database URL looks like {shape}, not a SQLite file path, and this is the sqlite \
             backend; pass sqlite:///path/to/file.db, or for PostgreSQL install \
             `pip install cloacina-postgres` and pass postgresql://user:password@host:5432/dbname"
        ))),
        None => Ok(DatabaseUrl::SqliteFile(PathBuf::from(path))),
    }
}

/// Keywords of libpq's `key=value` connection strings (PostgreSQL 18).
const LIBPQ_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "requiressl",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "min_protocol_version",
    "max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
];

/// What makes a scheme-less `text` look like a PostgreSQL connection string, if anything does:
/// libpq `key=value` pairs, or a `user:password@host` start. Names keys only, never values.
fn postgres_shape(text: &str) -> Option<String> {
    let mut keys: Vec<String> = Vec::new();
    for key in secrets::keys(text) {
        if LIBPQ_KEYWORDS.contains(&key.as_str()) && !keys.contains(&key) {
            keys.push(key);
        }
    }
    if !keys.is_empty() {
        let keys: Vec<String> = keys.into_iter().map(|k| format!("{k}=")).collect();
        return Some(format!(
            "a PostgreSQL key=value connection string ({})",
            keys.join(" ")
        ));
    }
    let first_part = text.split(['/', '\\']).next().unwrap_or_default();
    let user_info = first_part
        .find('@')
        .is_some_and(|at| first_part[..at].contains(':'));
    user_info.then(|| "a PostgreSQL user:password@host address".to_string())
}

/// Seconds libpq waits for a connection when the URL does not say.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u32 = 5;
/// `application_name` reported to the server when the URL does not say.
const DEFAULT_APPLICATION_NAME: &str = "cloacina";

/// Checks a PostgreSQL URL's shape and adds the default `connect_timeout` and `application_name`.
/// Messages quote only the redacted URL, never a piece of it: with an unencoded `/` in the
/// password, what looks like the port is part of the password.
fn parse_postgres(url: &str) -> Result<DatabaseUrl> {
    let shown = redact(url);
    let bad = |problem: &str| invalid(BackendKind::Postgres, &format!("{shown:?} {problem}"));
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| bad("has no '//' after the scheme"))?;
    if ambiguous_user_info(rest) {
        return Err(bad(
            "has more than one '@', or an '@' after a '/', '?' or '#': if the user name or \
             password holds '@', '/', '?' or '#', percent-encode them as %40, %2F, %3F and %23",
        ));
    }
    if rest.contains('#') {
        return Err(bad("has a fragment ('#'), which is not supported"));
    }
    if !valid_percent_escapes(rest) {
        return Err(bad(
            "has a '%' that does not start an escape %XX of two hex digits (not %00); \
             write a literal '%' as %25",
        ));
    }
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = location.split('/').next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    for host in host_port.split(',') {
        let port = match host.strip_prefix('[') {
            Some(bracketed) => match bracketed.split_once(']') {
                Some((_, after)) => after.trim_start_matches(':'),
                None => return Err(bad("has an IPv6 address without its closing ']'")),
            },
            None => host.split_once(':').map_or("", |(_, port)| port),
        };
        if !port.is_empty() && port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("has an invalid port; use a number from 1 to 65535"));
        }
    }
    let mut keys = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, _)) if !key.is_empty() => keys.push(key),
            _ => return Err(bad("has a query parameter that is not key=value")),
        }
    }
    let mut full = url.to_string();
    for (key, value) in [
        ("connect_timeout", DEFAULT_CONNECT_TIMEOUT_SECS.to_string()),
        ("application_name", DEFAULT_APPLICATION_NAME.to_string()),
    ] {
        if !keys.contains(&key) {
            full.push(if url.contains('?') || full.len() > url.len() {
                '&'
            } else {
                '?'
            });
            full.push_str(&format!("{key}={value}"));
        }
    }
    Ok(DatabaseUrl::Postgres(full))
}

/// The `connect_timeout` a PostgreSQL URL asks for, in seconds.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub fn connect_timeout_secs(url: &str) -> u32 {
    url.split_once('?')
        .map(|(_, query)| query)
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("connect_timeout="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT_SECS)
}

/// Checks a PostgreSQL schema name: lowercase letters, digits and `_`, so it needs no quoting.
pub fn validate_schema(schema: &str) -> Result<()> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with("pg_")
        && schema != "information_schema";
    if valid {
        Ok(())
    } else {
        Err(Error::Configuration(format!(
            "invalid schema name {schema:?}: use 1 to 63 lowercase letters, digits and underscores, \
             starting with a letter or underscore; 'pg_*' and 'information_schema' belong to \
             PostgreSQL"
        )))
    }
}

/// Whether libpq would split `rest` (what follows `://`) into user info and host differently
/// from a URL parser, or the path holds an `@`: what an unencoded `@`, `/`, `?` or `#` in a
/// password does. (libpq ends the user info at the first `@` before any `/`.)
fn ambiguous_user_info(rest: &str) -> bool {
    let libpq_at = rest[..rest.find('/').unwrap_or(rest.len())].find('@');
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let url_at = rest[..authority_end].rfind('@');
    let path = rest[authority_end..]
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    libpq_at != url_at || path.contains('@')
}

/// Whether every `%` in `text` starts an escape libpq decodes: two hex digits, not `%00`.
fn valid_percent_escapes(text: &str) -> bool {
    text.match_indices('%').all(|(i, _)| {
        let hex = text.get(i + 1..i + 3).unwrap_or_default();
        hex.len() == 2 && hex.chars().all(|c| c.is_ascii_hexdigit()) && hex != "00"
    })
}

fn invalid(backend: BackendKind, problem: &str) -> Error {
    let accepted = match backend {
        BackendKind::Sqlite => "sqlite://:memory:, sqlite:///relative.db, sqlite:////absolute/path.db or a plain file path",
        BackendKind::Postgres => "postgresql://user:password@host:5432/dbname (or postgres://...)",
    };
    Error::Configuration(format!("{problem}; expected {accepted}"))
}

#[cfg(test)]
mod tests;

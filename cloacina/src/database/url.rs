//! Parsing and validating database URLs, per backend.

use std::path::PathBuf;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A private in-memory SQLite database that lives as long as the executor.
    SqliteMemory,
    /// A SQLite database file.
    SqliteFile(PathBuf),
    /// A PostgreSQL connection URL (kept verbatim; never shown unredacted).
    Postgres(String),
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
        let scheme = scheme_of(url);
        match (backend, scheme.as_deref()) {
            (BackendKind::Sqlite, Some("sqlite")) => parse_sqlite(url),
            (BackendKind::Sqlite, None) => Ok(match url {
                ":memory:" => DatabaseUrl::SqliteMemory,
                path => DatabaseUrl::SqliteFile(PathBuf::from(path)),
            }),
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
            (BackendKind::Postgres, None) => Err(Error::Configuration(format!(
                "{shown:?} looks like a file path, but this is the postgres backend; for SQLite install `pip install cloacina-sqlite`, for PostgreSQL pass postgresql://user:password@host:5432/dbname"
            ))),
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
        Some(path) if !path.is_empty() && !path.ends_with('/') => {
            Ok(DatabaseUrl::SqliteFile(PathBuf::from(path)))
        }
        _ => Err(invalid(
            BackendKind::Sqlite,
            &format!("{shown:?} is not a valid SQLite URL"),
        )),
    }
}

/// Seconds libpq waits for a connection when the URL does not say.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u32 = 5;
/// `application_name` reported to the server when the URL does not say.
const DEFAULT_APPLICATION_NAME: &str = "cloacina";

/// Checks a PostgreSQL URL's shape and adds the default `connect_timeout` and `application_name`.
fn parse_postgres(url: &str) -> Result<DatabaseUrl> {
    let shown = redact(url);
    let bad = |problem: &str| invalid(BackendKind::Postgres, &format!("{shown:?} {problem}"));
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| bad("has no '//' after the scheme"))?;
    if rest.contains('#') {
        return Err(bad("has a fragment ('#'), which is not supported"));
    }
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = location.split('/').next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    for host in host_port.split(',') {
        let port = if let Some(bracketed) = host.strip_prefix('[') {
            bracketed
                .split_once(']')
                .map(|(_, after)| after.trim_start_matches(':'))
                .unwrap_or("")
        } else {
            host.split_once(':').map_or("", |(_, port)| port)
        };
        if !port.is_empty() && port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad(&format!("has an invalid port {port:?}")));
        }
    }
    let mut keys = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, _)) if !key.is_empty() => keys.push(key),
            _ => {
                return Err(bad(&format!(
                    "has a malformed query parameter {pair:?}; use key=value"
                )))
            }
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

/// The lowercase URL scheme, if `url` starts with `scheme:` (a Windows drive letter is not a scheme).
fn scheme_of(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once(':')?;
    let valid = scheme.len() > 1
        && scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then(|| scheme.to_ascii_lowercase())
}

fn invalid(backend: BackendKind, problem: &str) -> Error {
    let accepted = match backend {
        BackendKind::Sqlite => "sqlite://:memory:, sqlite:///relative.db, sqlite:////absolute/path.db or a plain file path",
        BackendKind::Postgres => "postgresql://user:password@host:5432/dbname (or postgres://...)",
    };
    Error::Configuration(format!("{problem}; expected {accepted}"))
}

/// `url` with any password (in the user info or a `password=` parameter) replaced by `***`.
pub fn redact(url: &str) -> String {
    let mut shown = redact_user_info(url);
    let mut from = 0;
    while let Some(found) = shown[from..].find("password=") {
        let start = from + found + "password=".len();
        let preceded_ok =
            from + found == 0 || matches!(shown.as_bytes()[from + found - 1], b'?' | b'&' | b' ');
        let end = shown[start..]
            .find(['&', ' ', '#'])
            .map_or(shown.len(), |i| start + i);
        if preceded_ok {
            shown.replace_range(start..end, "***");
            from = start + 3;
        } else {
            from = start;
        }
    }
    shown
}

fn redact_user_info(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..authority_start],
                &authority[..colon],
                &url[authority_start + at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_forms_are_accepted() {
        let parse = |u| DatabaseUrl::parse(u, BackendKind::Sqlite).unwrap();
        assert_eq!(parse("sqlite://:memory:"), DatabaseUrl::SqliteMemory);
        assert_eq!(
            parse("sqlite:///rel.db"),
            DatabaseUrl::SqliteFile("rel.db".into())
        );
        assert_eq!(
            parse("sqlite:////abs/x.db"),
            DatabaseUrl::SqliteFile("/abs/x.db".into())
        );
        assert_eq!(
            parse("data/x.db"),
            DatabaseUrl::SqliteFile("data/x.db".into())
        );
    }

    #[test]
    fn bad_urls_are_rejected_without_echoing_passwords() {
        for url in [
            "",
            "  ",
            "sqlite:/x",
            "sqlite://x.db",
            "sqlite:///",
            "mysql://a/b",
            "sqlite:///x.db?mode=ro",
        ] {
            assert!(
                DatabaseUrl::parse(url, BackendKind::Sqlite).is_err(),
                "{url}"
            );
        }
        let err =
            DatabaseUrl::parse("postgresql://me:hunter2@db/x", BackendKind::Sqlite).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cloacina-postgres") && !msg.contains("hunter2"),
            "{msg}"
        );
    }

    #[test]
    fn postgres_urls_get_defaults_and_keep_their_parameters() {
        let parse = |u| match DatabaseUrl::parse(u, BackendKind::Postgres).unwrap() {
            DatabaseUrl::Postgres(url) => url,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            parse("postgresql://u:p@h:5432/db"),
            "postgresql://u:p@h:5432/db?connect_timeout=5&application_name=cloacina"
        );
        assert_eq!(
            parse("postgres://h/db?sslmode=require&connect_timeout=2"),
            "postgres://h/db?sslmode=require&connect_timeout=2&application_name=cloacina"
        );
        assert_eq!(
            connect_timeout_secs(&parse("postgres://h/db?connect_timeout=2")),
            2
        );
        for bad in [
            "postgresql://h:99999/db",
            "postgresql://h:x/db",
            "postgresql://h/db?novalue",
            "sqlite:///x.db",
            "x.db",
        ] {
            let err = DatabaseUrl::parse(bad, BackendKind::Postgres)
                .unwrap_err()
                .to_string();
            assert!(!err.is_empty(), "{bad}");
        }
        let err = DatabaseUrl::parse("sqlite:///x.db", BackendKind::Postgres)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cloacina-sqlite"), "{err}");
    }

    #[test]
    fn schema_names_cannot_inject_sql() {
        for good in ["tenant_a", "_x", "t1"] {
            assert!(validate_schema(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Tenant",
            "a-b",
            "a;drop table x",
            "1a",
            "pg_catalog",
            "a\"b",
            &"x".repeat(64),
        ] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(
            redact("postgresql://u:p@h:5/d?x=1"),
            "postgresql://u:***@h:5/d?x=1"
        );
        assert_eq!(redact("postgresql://u@h/d"), "postgresql://u@h/d");
        assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
        assert_eq!(
            redact("postgres://h/d?password=pw&sslmode=require"),
            "postgres://h/d?password=***&sslmode=require"
        );
    }
}

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
            (BackendKind::Postgres, Some("postgresql" | "postgres")) => Ok(DatabaseUrl::Postgres(url.to_string())),
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

/// `url` with any password replaced by `***`, safe for messages and logs.
pub fn redact(url: &str) -> String {
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
    fn redaction_hides_only_the_password() {
        assert_eq!(
            redact("postgresql://u:p@h:5/d?x=1"),
            "postgresql://u:***@h:5/d?x=1"
        );
        assert_eq!(redact("postgresql://u@h/d"), "postgresql://u@h/d");
        assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
    }
}

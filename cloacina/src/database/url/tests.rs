//! Tests of reading database URLs.

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
    let err = DatabaseUrl::parse("postgresql://me:hunter2@db/x", BackendKind::Sqlite).unwrap_err();
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

/// URL shapes that once leaked their password, with the secrets (and fragments) to hide.
const LEAKY_SHAPES: &[(&str, &[&str])] = &[
    ("postgresql://u:s3cr3tpw@127.0.0.1:1/db", &["s3cr3tpw"]),
    (
        "postgres://u@127.0.0.1:1/db?password=s3cr3tpw",
        &["s3cr3tpw"],
    ),
    (
        "postgresql://127.0.0.1:1/db?user=u&pass%77ord=s3cr3tpw",
        &["s3cr3tpw"],
    ),
    (
        "postgresql://127.0.0.1:1/db?sslpassword=SSLSECRET",
        &["SSLSECRET"],
    ),
    (
        "postgresql://127.0.0.1:1/db?PASSWORD=s3cr3tpw",
        &["s3cr3tpw"],
    ),
    (
        "postgresql://127.0.0.1:1/db?%50ass%2577ord=s3cr3tpw",
        &["s3cr3tpw"],
    ),
    (
        "postgresql://127.0.0.1:1/db?oauth_client_secret=s3cr3tpw",
        &["s3cr3tpw"],
    ),
    (
        "postgresql://127.0.0.1:1/db?password=s3cr%33tpw",
        &["s3cr%33tpw", "s3cr3tpw"],
    ),
    (
        "host=127.0.0.1 port=1 user=u password = s3cr3tpw",
        &["s3cr3tpw"],
    ),
    (
        "host=127.0.0.1\tport=1\tpassword\t=\ts3cr3tpw",
        &["s3cr3tpw"],
    ),
    (
        "host=127.0.0.1 port=1 password='s3cr 3tpw\\' x'",
        &["s3cr", "3tpw"],
    ),
    ("postgresql://u:s3cr?3tpw@127.0.0.1:1/db", &["s3cr", "3tpw"]),
    ("postgresql://u:s3cr#3tpw@127.0.0.1:1/db", &["s3cr", "3tpw"]),
    ("postgresql://u:s3cr/3tpw@127.0.0.1:1/db", &["s3cr", "3tpw"]),
    ("postgresql://u:s3cr@3tpw@127.0.0.1:1/db", &["s3cr", "3tpw"]),
    (
        "postgresql://u:s3cr/3tpw?x=1@127.0.0.1:1/db",
        &["s3cr", "3tpw"],
    ),
    ("postgresql://u:12/3tpw?b=c@127.0.0.1:1/db", &["3tpw"]),
    (
        "postgresql://u:s3cr%zz3tpw@127.0.0.1:1/db",
        &["s3cr%zz3tpw"],
    ),
    ("postgresql://u:s3cr3tpw@[::1/db", &["s3cr3tpw"]),
    (
        "postgresql://127.0.0.1:1/db?password=s3cr&3tpw&sslmode=disable",
        &["s3cr", "3tpw"],
    ),
    ("u:s3cr3tpw@127.0.0.1:1/db", &["s3cr3tpw"]),
    ("mysql://u:s3cr3tpw@127.0.0.1/db", &["s3cr3tpw"]),
    ("postgresql:u:s3cr3tpw@127.0.0.1/db", &["s3cr3tpw"]),
    ("sqlite:///host=h password=s3cr3tpw", &["s3cr3tpw"]),
];

#[test]
fn no_url_shape_leaks_its_password() {
    let leaks = |text: &str, secrets: &[&str]| secrets.iter().any(|s| text.contains(s));
    for &(url, secrets) in LEAKY_SHAPES {
        let shown = redact(url);
        assert!(!leaks(&shown, secrets), "redact({url:?}) = {shown:?}");
        let message = refusal(url, BackendKind::Sqlite);
        assert!(!leaks(&message, secrets), "{message}");
        let full = match DatabaseUrl::parse(url, BackendKind::Postgres) {
            Ok(DatabaseUrl::Postgres(full)) => full,
            Ok(other) => panic!("{other:?}"),
            Err(err) => {
                let message = err.to_string();
                assert!(!leaks(&message, secrets), "{message}");
                url.to_string()
            }
        };
        assert!(!leaks(
            &format!("{:?}", DatabaseUrl::Postgres(full.clone())),
            secrets
        ));
        // What libpq may echo: the URL, a piece of it, or a percent-decoded piece.
        for secret in secrets {
            let echo = format!(
                "invalid URI: \"{full}\"; invalid port number: \"{secret}\"; could not \
                 translate host name \"{secret}@127.0.0.1\"; invalid percent-encoded \
                 token: \"x{secret}%zz\""
            );
            let scrubbed = secrets::scrub(&echo, &full);
            assert!(!leaks(&scrubbed, secrets), "{url:?}: {scrubbed}");
        }
    }
}

/// The message of the error `url` must cause on `backend`.
fn refusal(url: &str, backend: BackendKind) -> String {
    DatabaseUrl::parse(url, backend).unwrap_err().to_string()
}

#[test]
fn sqlite_refuses_postgres_connection_strings_without_echoing_them() {
    for url in [
        "host=db password=s3cr3tpw",
        "dbname=app user=me",
        "sqlite:///host=db password=s3cr3tpw",
        "me:s3cr3tpw@db/app",
    ] {
        let message = refusal(url, BackendKind::Sqlite);
        assert!(
            message.contains("sqlite:///") && message.contains("cloacina-postgres"),
            "{message}"
        );
        assert!(
            !message.contains("s3cr3tpw") && !message.contains("db/app"),
            "{message}"
        );
    }
    for path in ["data/run=1.db", "x@y.db", "C:\\me@corp\\x.db", "a b.db"] {
        assert!(
            DatabaseUrl::parse(path, BackendKind::Sqlite).is_ok(),
            "{path}"
        );
    }
}

#[test]
fn ambiguous_user_info_is_refused_with_a_fix() {
    for url in [
        "postgresql://u:a@b@h/db",
        "postgresql://u:a?b@h/db",
        "postgresql://u:a/b@h/db",
        "postgresql://h:5432?user=a@b",
    ] {
        let message = refusal(url, BackendKind::Postgres);
        assert!(message.contains("%40"), "{message}");
    }
    for url in [
        "postgresql://u:a%40b@h/db",
        "postgresql://u:pw@h/db?user=me@corp",
        "postgresql://u:p%2Fw@[::1]:5432,h2:5433/db",
    ] {
        assert!(
            DatabaseUrl::parse(url, BackendKind::Postgres).is_ok(),
            "{url}"
        );
    }
}

"""PostgreSQL URLs: both schemes, libpq parameters passed through, defaults added, and every
malformed or foreign URL rejected with ConfigurationError before connecting, without the password."""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import quote

import pytest

import pg_admin
from backend import cl, execute_once

pytestmark = pytest.mark.postgres_only

SECRET = "Pa55-w0rd-zz"


def tiny_workflow(ids):
    @cl.task(ids("t"))
    def t(ctx):
        return {"ok": True}

    return cl.Workflow(ids.wf(), [t])


def application_names(database: str) -> list:
    return pg_admin.psql_rows(f"SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = '{database}'")


async def test_postgres_scheme_alias(postgres_database, ids):
    url = pg_admin.database_url(postgres_database, scheme="postgres")
    assert url.startswith("postgres://")
    result = await execute_once(url, tiny_workflow(ids))
    assert result["status"] == "Completed"


async def test_libpq_parameters_are_passed_through(postgres_database, ids):
    app = f"urls_{uuid.uuid4().hex[:12]}"
    url = pg_admin.database_url(postgres_database, sslmode="prefer", application_name=app, connect_timeout="3")
    ex = cl.UnifiedExecutor()
    await ex.initialize(url)
    try:
        result = await ex.execute(tiny_workflow(ids))
        names = application_names(postgres_database)
    finally:
        await ex.shutdown()
    assert result["status"] == "Completed"
    assert app in names, names


async def test_default_application_name_is_cloacina(postgres_database, ids):
    ex = cl.UnifiedExecutor()
    await ex.initialize(pg_admin.database_url(postgres_database))
    try:
        await ex.execute(tiny_workflow(ids))
        names = application_names(postgres_database)
    finally:
        await ex.shutdown()
    assert "cloacina" in names, names


SQLITE_FORMS = ["sqlite:///x.db", "sqlite:////tmp/abs.db", "sqlite://:memory:", ":memory:", "x.db",
                "/var/tmp/cloacina.db", "data/x.db"]


@pytest.mark.parametrize("url", SQLITE_FORMS)
async def test_sqlite_urls_and_paths_point_to_the_sqlite_package(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.ConfigurationError) as info:
        await ex.initialize(url)
    assert isinstance(info.value, ValueError)
    assert "cloacina-sqlite" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "template, problem",
    [
        ("postgresql://u:{pw}@127.0.0.1:99999/db", "port"),
        ("postgresql://u:{pw}@127.0.0.1:x/db", "port"),
        ("postgresql://u:{pw}@127.0.0.1:0/db", "port"),
        ("postgresql://u:{pw}@127.0.0.1:5432/db?novalue", "novalue"),
        ("postgresql://u@127.0.0.1:99999/db?password={pw}", "port"),
        # "&novalue" may be the rest of a password holding an unencoded '&': hidden with it.
        ("postgresql://u@127.0.0.1:5432/db?password={pw}&novalue", "not key=value"),
        ("mysql://u:{pw}@127.0.0.1/db", "mysql"),
    ],
)
async def test_malformed_urls_are_rejected_without_the_password(template, problem):
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.ConfigurationError) as info:
        await ex.initialize(template.format(pw=SECRET))
    message = str(info.value)
    assert problem in message
    for shown in (message, repr(info.value)):
        assert SECRET not in shown and quote(SECRET) not in shown


async def test_invalid_url_is_rejected_before_connecting(silent_server):
    """A bad parameter is caught while parsing: the (silent) server is never contacted."""
    ex = cl.UnifiedExecutor()
    started = time.monotonic()
    with pytest.raises(cl.ConfigurationError):
        await ex.initialize(f"postgresql://u@127.0.0.1:{silent_server.port}/db?novalue")
    assert time.monotonic() - started < 1
    await asyncio.sleep(0.2)
    assert silent_server.accepted == []

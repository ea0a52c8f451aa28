"""Connecting to PostgreSQL: bad credentials, missing databases and unreachable or silent servers
fail with DatabaseError within a bounded time, and never echo a password."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest

import pg_admin
from backend import cl, execute_once

pytestmark = pytest.mark.postgres_only
needs_roles = pytest.mark.usefixtures("managed_server_roles")

WRONG_PASSWORD = "Wr0ng-Secret-xyz!"


def one_task_workflow(ids):
    @cl.task(ids("hello"))
    def hello(ctx):
        return {"hello": ctx.get("who", "world")}

    return cl.Workflow(ids.wf(), [hello])


async def initialize_fails(url: str, **kwargs) -> tuple:
    """Initialize a new executor on ``url``; returns (the DatabaseError, seconds taken, the executor)."""
    ex = cl.UnifiedExecutor()
    started = time.monotonic()
    with pytest.raises(cl.DatabaseError) as info:
        await ex.initialize(url, **kwargs)
    elapsed = time.monotonic() - started
    assert isinstance(info.value, cl.CloacinaError)
    assert not isinstance(info.value, cl.ConfigurationError)
    assert str(info.value)
    return info.value, elapsed, ex


def assert_no_secret(error: BaseException, secret: str) -> None:
    for shown in (str(error), repr(error), str(error.args)):
        assert secret not in shown
        assert quote(secret, safe="") not in shown


@needs_roles
async def test_right_password_connects(make_postgres_database, ids):
    name = make_postgres_database(owner=pg_admin.PASSWORD_USER)
    url = pg_admin.database_url(name, user=pg_admin.PASSWORD_USER, password=pg_admin.TEST_PASSWORD)
    result = await execute_once(url, one_task_workflow(ids), {"who": "pw"})
    assert result["status"] == "Completed"
    assert result["final_context"] == {"who": "pw", "hello": "pw"}


@needs_roles
async def test_right_password_as_query_parameter(make_postgres_database, ids):
    name = make_postgres_database(owner=pg_admin.PASSWORD_USER)
    url = pg_admin.database_url(name, user=pg_admin.PASSWORD_USER, query={"password": pg_admin.TEST_PASSWORD})
    result = await execute_once(url, one_task_workflow(ids))
    assert result["status"] == "Completed"


@needs_roles
@pytest.mark.parametrize("where", ["user_info", "query_parameter"])
async def test_wrong_password_fails_fast_without_echoing_it(postgres_database, ids, where):
    if where == "user_info":
        url = pg_admin.database_url(postgres_database, user=pg_admin.PASSWORD_USER, password=WRONG_PASSWORD)
    else:
        url = pg_admin.database_url(postgres_database, user=pg_admin.PASSWORD_USER, query={"password": WRONG_PASSWORD})
    error, elapsed, ex = await initialize_fails(url)
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert_no_secret(error, WRONG_PASSWORD)
    with pytest.raises(cl.NotInitializedError):
        await ex.execute(one_task_workflow(ids))


@needs_roles
async def test_password_user_without_password(postgres_database):
    url = pg_admin.database_url(postgres_database, user=pg_admin.PASSWORD_USER)
    _, elapsed, _ = await initialize_fails(url)
    assert elapsed < 10, f"took {elapsed:.1f}s"


async def test_missing_database(ids):
    missing = pg_admin.new_database_name() + "_missing"
    error, elapsed, _ = await initialize_fails(pg_admin.database_url(missing))
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert missing in str(error)


async def test_unknown_user(postgres_database):
    url = pg_admin.database_url(postgres_database, user="no_such_role_x")
    _, elapsed, _ = await initialize_fails(url)
    assert elapsed < 10, f"took {elapsed:.1f}s"


async def test_nothing_listening(free_port):
    url = pg_admin.database_url("postgres", port=free_port, password="Sekr1t-unused")
    error, elapsed, _ = await initialize_fails(url)
    assert elapsed < 5, f"connection refused should fail at once, took {elapsed:.1f}s"
    assert_no_secret(error, "Sekr1t-unused")


async def test_silent_server_times_out(silent_server):
    """A server that accepts and never answers: libpq's connect_timeout ends the wait."""
    url = pg_admin.database_url("postgres", port=silent_server.port, connect_timeout="1")
    _, elapsed, _ = await initialize_fails(url)
    assert 0.5 < elapsed < 10, f"took {elapsed:.1f}s"
    assert silent_server.accepted, "the engine never reached the server"


async def test_silent_server_times_out_with_default_connect_timeout(silent_server):
    """Without connect_timeout in the URL the engine adds connect_timeout=5: no endless wait."""
    url = pg_admin.database_url("postgres", port=silent_server.port)
    _, elapsed, _ = await initialize_fails(url)
    assert 3 < elapsed < 20, f"took {elapsed:.1f}s"


async def test_failed_initialize_can_be_retried_on_the_same_executor(free_port, database_url, ids):
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.DatabaseError):
        await ex.initialize(pg_admin.database_url("postgres", port=free_port))
    await ex.initialize(database_url)
    try:
        result = await ex.execute(one_task_workflow(ids))
    finally:
        await ex.shutdown()
    assert result["status"] == "Completed"

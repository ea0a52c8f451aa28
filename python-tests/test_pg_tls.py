"""TLS: the ``cloacina_tls`` role may only connect over TLS (pg_hba ``hostssl ... trust`` and
``host ... reject``), so a workflow running as that role proves the engine speaks TLS."""

from __future__ import annotations

import time
import uuid

import pytest

import pg_admin
from backend import cl

pytestmark = [pytest.mark.postgres_only, pytest.mark.usefixtures("managed_server_roles")]


@pytest.fixture
def tls_database(managed_server_roles, make_postgres_database) -> str:
    return make_postgres_database(owner=pg_admin.TLS_USER)


def tls_url(database: str, **params: str) -> str:
    return pg_admin.database_url(database, user=pg_admin.TLS_USER, **params)


def ssl_of_connections(application_name: str) -> list:
    return pg_admin.psql_rows(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
        f"WHERE a.application_name = '{application_name}'"
    )


@pytest.mark.parametrize("sslmode", ["require", "prefer"])
async def test_workflow_runs_over_tls(tls_database, ids, sslmode):
    @cl.task(ids("extract"))
    def extract(ctx):
        return {"rows": [1, 2, 3]}

    @cl.task(ids("total"), dependencies=[extract])
    async def total(ctx):
        return {"total": sum(ctx["rows"])}

    app = f"tls_{uuid.uuid4().hex[:12]}"
    ex = cl.UnifiedExecutor()
    await ex.initialize(tls_url(tls_database, sslmode=sslmode, application_name=app))
    try:
        result = await ex.execute(cl.Workflow(ids.wf(), [total]), {"source": "tls"})
        assert await ex.get_execution(result["execution_id"]) == result
        encrypted = ssl_of_connections(app)
    finally:
        await ex.shutdown()
    assert result["status"] == "Completed"
    assert result["final_context"] == {"source": "tls", "rows": [1, 2, 3], "total": 6}
    assert encrypted and set(encrypted) == {"t"}, f"connections of {app}: {encrypted}"


async def test_tls_only_role_without_tls_is_refused(tls_database):
    ex = cl.UnifiedExecutor()
    started = time.monotonic()
    with pytest.raises(cl.DatabaseError) as info:
        await ex.initialize(tls_url(tls_database, sslmode="disable"))
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert isinstance(info.value, cl.CloacinaError)
    assert str(info.value)

"""``schema=``: each executor keeps all its tables in one PostgreSQL schema (created if missing),
so tenants sharing a database never see each other's executions. Names are validated strictly so
they cannot carry SQL."""

from __future__ import annotations

import asyncio

import pytest

import pg_admin
from backend import cl

pytestmark = pytest.mark.postgres_only


def schemas(database: str) -> list:
    return pg_admin.psql_rows("SELECT nspname FROM pg_namespace ORDER BY nspname",
                              url=pg_admin.database_url(database))


def tables_in(database: str, schema: str) -> list:
    return pg_admin.psql_rows(
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}' ORDER BY 1",
        url=pg_admin.database_url(database))


def workflow(ids, tenant: str):
    @cl.task(ids(f"{tenant}.work"))
    def work(ctx):
        return {"tenant": ctx["tenant"]}

    return cl.Workflow(ids.wf("shared-name"), [work])


async def test_tenants_in_one_database_do_not_see_each_other(postgres_database, database_url, ids):
    before = schemas(postgres_database)
    assert "tenant_a" not in before and "tenant_b" not in before
    a, b = cl.UnifiedExecutor(), cl.UnifiedExecutor()
    await a.initialize(database_url, schema="tenant_a")
    await b.initialize(database_url, schema="tenant_b")
    try:
        ran_a = [await a.execute(workflow(ids, "a"), {"tenant": "a"}) for _ in range(2)]
        ran_b = [await b.execute(workflow(ids, "b"), {"tenant": "b"})]
        assert {r["status"] for r in ran_a + ran_b} == {"Completed"}
        ids_a = {r["execution_id"] for r in ran_a}
        ids_b = {r["execution_id"] for r in ran_b}

        assert {e["execution_id"] for e in await a.list_executions()} == ids_a
        assert {e["execution_id"] for e in await b.list_executions()} == ids_b
        name = ran_a[0]["workflow_name"]
        assert {e["execution_id"] for e in await b.list_executions(workflow=name)} == ids_b
        for eid in ids_b:
            assert await a.get_execution(eid) is None
            assert (await b.get_execution(eid))["final_context"] == {"tenant": "b"}
        for eid in ids_a:
            assert await b.get_execution(eid) is None
    finally:
        await a.shutdown()
        await b.shutdown()

    after = schemas(postgres_database)
    assert {"tenant_a", "tenant_b"} <= set(after)
    assert tables_in(postgres_database, "tenant_a") == tables_in(postgres_database, "tenant_b") != []
    assert tables_in(postgres_database, "public") == [], "no tables outside the tenants' schemas"

    default = cl.UnifiedExecutor()
    await default.initialize(database_url)
    try:
        assert await default.list_executions() == []
        assert await default.get_execution(ran_a[0]["execution_id"]) is None
    finally:
        await default.shutdown()


async def test_executors_on_one_schema_share_history(database_url, ids):
    first = cl.UnifiedExecutor()
    await first.initialize(database_url, schema="shared_tenant")
    try:
        done = await first.execute(workflow(ids, "s"), {"tenant": "s"})
    finally:
        await first.shutdown()
    second = cl.UnifiedExecutor()
    await second.initialize(database_url, schema="shared_tenant")
    try:
        assert await second.get_execution(done["execution_id"]) == done
    finally:
        await second.shutdown()


async def test_concurrent_initialize_of_one_new_schema(postgres_database, database_url, ids):
    executors = [cl.UnifiedExecutor() for _ in range(4)]
    await asyncio.gather(*(ex.initialize(database_url, schema="raced") for ex in executors))
    try:
        results = await asyncio.gather(*(ex.execute(workflow(ids, "r"), {"tenant": str(i)})
                                         for i, ex in enumerate(executors)))
        assert [r["status"] for r in results] == ["Completed"] * 4
        assert len(await executors[0].list_executions()) == 4
    finally:
        for ex in executors:
            await ex.shutdown()
    assert "raced" in schemas(postgres_database)


@pytest.mark.parametrize("schema", ["_x", "t" * 63, "tenant_42"])
async def test_valid_schema_names(postgres_database, database_url, ids, schema):
    ex = cl.UnifiedExecutor()
    await ex.initialize(database_url, schema=schema)
    try:
        assert (await ex.execute(workflow(ids, "v"), {"tenant": "v"}))["status"] == "Completed"
    finally:
        await ex.shutdown()
    assert schema in schemas(postgres_database)
    assert tables_in(postgres_database, schema) != []


@pytest.mark.parametrize(
    "schema",
    ["Tenant", "a;drop table x", 'a"b', "pg_x", "x" * 64, "", "1a", "a-b", "tenant a", "tenant\x00", "ténant",
     "public; drop schema public cascade", "information_schema", "pg_catalog", "pg_toast"],
)
async def test_invalid_schema_names_are_rejected_and_create_nothing(postgres_database, database_url, schema):
    before = schemas(postgres_database)
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.ConfigurationError) as info:
        await ex.initialize(database_url, schema=schema)
    assert isinstance(info.value, ValueError)
    assert "schema" in str(info.value)
    assert schemas(postgres_database) == before
    assert tables_in(postgres_database, "public") == []


@pytest.mark.parametrize("bad", [5, b"tenant_a", ["tenant_a"]])
async def test_schema_must_be_a_str(database_url, bad):
    ex = cl.UnifiedExecutor()
    with pytest.raises(TypeError):
        await ex.initialize(database_url, schema=bad)

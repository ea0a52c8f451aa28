"""The server goes away: calls fail with DatabaseError within a bounded time (the pool waits at
most connect_timeout+1 s for a connection), and once the server is back the same executor works
again. These tests stop and start the harness-managed server (CLOACINA_TEST_POSTGRES_CTL)."""

from __future__ import annotations

import asyncio
import threading
import time
import pytest

import pg_admin
from backend import cl

pytestmark = pytest.mark.postgres_only

BOUND = 30  # seconds; default connect_timeout=5 gives a pool wait of 6 s


@pytest.fixture
def server(pg_server: pg_admin.ServerControl) -> pg_admin.ServerControl:
    return pg_server


def sleepy_workflow(ids, second_started: threading.Event, server_stopped: threading.Event):
    @cl.task(ids("first"))
    def first(ctx):
        return {"first": "done"}

    @cl.task(ids("second"), dependencies=[first])
    def second(ctx):
        second_started.set()
        server_stopped.wait(timeout=20)
        time.sleep(1.0)
        return {"second": "done"}

    return cl.Workflow(ids.wf(), [second])


def quick_workflow(ids):
    @cl.task(ids("quick"))
    def quick(ctx):
        return {"quick": ctx["n"] + 1}

    return cl.Workflow(ids.wf("quick"), [quick])


async def test_server_stops_mid_run_then_comes_back(server, database_url, ids):
    second_started, server_stopped = threading.Event(), threading.Event()
    wf = sleepy_workflow(ids, second_started, server_stopped)
    ex = cl.UnifiedExecutor()
    await ex.initialize(database_url)
    try:
        execution = asyncio.ensure_future(ex.execute(wf))
        assert await asyncio.to_thread(second_started.wait, 20), "the second task never started"
        await asyncio.to_thread(server.stop, "fast")
        server_stopped.set()
        stopped_at = time.monotonic()
        with pytest.raises(cl.DatabaseError) as info:
            await asyncio.wait_for(execution, timeout=60)
        elapsed = time.monotonic() - stopped_at
        print(f"execute raised {type(info.value).__name__} {elapsed:.1f}s after the server stopped: {info.value}")
        assert elapsed < BOUND, f"execute took {elapsed:.1f}s to fail after the server stopped"
        assert isinstance(info.value, cl.CloacinaError)

        await asyncio.to_thread(server.start)
        again = await asyncio.wait_for(ex.execute(quick_workflow(ids), {"n": 41}), timeout=BOUND)
        assert again["status"] == "Completed"
        assert again["final_context"] == {"n": 41, "quick": 42}
        assert await ex.get_execution(again["execution_id"]) == again
    finally:
        server_stopped.set()
        if not server.is_running():
            server.start()
        await ex.shutdown()


async def test_server_down_while_idle(server, postgres_database, ids):
    """connect_timeout=2 bounds each failing call to about 2*2+1 s."""
    url = pg_admin.database_url(postgres_database, connect_timeout="2")
    ex = cl.UnifiedExecutor()
    await ex.initialize(url)
    try:
        before = await ex.execute(quick_workflow(ids), {"n": 1})
        await asyncio.to_thread(server.stop, "fast")
        for call in (lambda: ex.execute(quick_workflow(ids), {"n": 2}), lambda: ex.list_executions()):
            started = time.monotonic()
            with pytest.raises(cl.DatabaseError):
                await asyncio.wait_for(call(), timeout=60)
            elapsed = time.monotonic() - started
            print(f"failed after {elapsed:.1f}s")
            assert elapsed < 15, f"a call took {elapsed:.1f}s to fail with the server down"

        await asyncio.to_thread(server.start)
        after = await asyncio.wait_for(ex.execute(quick_workflow(ids), {"n": 3}), timeout=BOUND)
        assert after["status"] == "Completed"
        listed = {e["execution_id"] for e in await ex.list_executions()}
        assert {before["execution_id"], after["execution_id"]} <= listed
    finally:
        if not server.is_running():
            server.start()
        await ex.shutdown()


async def test_initialize_while_server_is_down(server, database_url):
    await asyncio.to_thread(server.stop, "fast")
    try:
        ex = cl.UnifiedExecutor()
        started = time.monotonic()
        with pytest.raises(cl.DatabaseError):
            await asyncio.wait_for(ex.initialize(database_url), timeout=60)
        assert time.monotonic() - started < 5, "connection refused should fail at once"
    finally:
        await asyncio.to_thread(server.start)

"""Connection pool limits: the executor never holds more server connections than ``pool_size``
(default 10 on PostgreSQL), however many executions and tasks run at once.

Connections are counted in ``pg_stat_activity`` by a psql session, filtered by an
``application_name`` unique to the test: every 20 ms while executions run, and every millisecond
around ``initialize``, where a connection for migrations could overlap the pool's own.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

import pg_admin
from backend import cl

pytestmark = pytest.mark.postgres_only

DEFAULT_POOL_SIZE = 10  # documented default on PostgreSQL (4 on a SQLite file)


def fan_out_workflow(ids):
    """start -> three parallel branches (async and sync) -> join."""

    @cl.task(ids("start"))
    async def start(ctx):
        await asyncio.sleep(0.01)
        return {"n": ctx["i"]}

    @cl.task(ids("left"), dependencies=[start])
    async def left(ctx):
        await asyncio.sleep(0.03)
        return {"left": ctx["n"] + 1}

    @cl.task(ids("middle"), dependencies=[start])
    def middle(ctx):
        time.sleep(0.02)
        return {"middle": ctx["n"] + 2}

    @cl.task(ids("right"), dependencies=[start])
    async def right(ctx):
        return {"right": ctx["n"] + 3}

    @cl.task(ids("join"), dependencies=[left, middle, right])
    def join(ctx):
        return {"sum": ctx["left"] + ctx["middle"] + ctx["right"]}

    return cl.Workflow(ids.wf(), [join])


async def run_counted(database: str, ids, executions: int, max_concurrency: int, **initialize_kwargs):
    """Run ``executions`` concurrent executions while counting the executor's connections
    (``initialize`` has its own test below)."""
    app = f"pool_{uuid.uuid4().hex[:12]}"
    url = pg_admin.database_url(database, application_name=app)
    wf = fan_out_workflow(ids)
    ex = cl.UnifiedExecutor(max_concurrency=max_concurrency)
    await ex.initialize(url, **initialize_kwargs)
    try:
        with pg_admin.ConnectionSampler(app) as sampler:
            results = await asyncio.wait_for(
                asyncio.gather(*(ex.execute(wf, {"i": i}) for i in range(executions))), timeout=50)
            listed = await ex.list_executions(workflow=wf.name, limit=100)
            # The pool keeps the connections it opened: a few samples now see all of them.
            await asyncio.sleep(0.1)
    finally:
        await ex.shutdown()
    assert [r["status"] for r in results] == ["Completed"] * executions
    assert [r["final_context"]["sum"] for r in results] == [3 * i + 6 for i in range(executions)]
    assert len(listed) == executions
    assert sampler.peak >= 1, "the sampler never saw the executor's connections"
    print(f"connections: peak {sampler.peak} over {len(sampler.samples)} samples")
    return sampler


async def test_twenty_executions_on_four_connections(postgres_database, ids):
    sampler = await run_counted(postgres_database, ids, executions=20, max_concurrency=16, pool_size=4)
    assert sampler.peak <= 4, f"saw {sampler.peak} connections with pool_size=4 ({len(sampler.samples)} samples)"


async def test_one_connection(postgres_database, ids):
    sampler = await run_counted(postgres_database, ids, executions=6, max_concurrency=8, pool_size=1)
    assert sampler.peak <= 1, f"saw {sampler.peak} connections with pool_size=1 ({len(sampler.samples)} samples)"


async def test_initialize_opens_at_most_pool_size_connections(make_postgres_database):
    """Connecting and migrating must not hold a connection beside the pool's own. Sampled every
    millisecond over a few initializations, since an overlap lasts only milliseconds.

    The migrating connection is closed before the pool opens, but the server may list its
    backend for a moment after the client closed it (longer on a loaded machine); so each round
    keeps the lowest peak of three initializations: a connection really held beside the pool
    shows in all of them."""

    async def peak_of_one_initialize() -> int:
        app = f"pool_init_{uuid.uuid4().hex[:12]}"
        url = pg_admin.database_url(make_postgres_database(), application_name=app)
        with pg_admin.ConnectionSampler(app, interval=0.001) as sampler:
            ex = cl.UnifiedExecutor()
            await ex.initialize(url, pool_size=1)
            await asyncio.sleep(0.02)
            await ex.shutdown()
        return sampler.peak

    peaks = [min([await peak_of_one_initialize() for _ in range(3)]) for _ in range(8)]
    assert max(peaks) <= 1, f"peak connections per initialize(pool_size=1): {peaks}"


async def test_default_pool_size_is_ten(postgres_database, ids):
    sampler = await run_counted(postgres_database, ids, executions=30, max_concurrency=32)
    assert sampler.peak <= DEFAULT_POOL_SIZE, (
        f"saw {sampler.peak} connections with the default pool ({len(sampler.samples)} samples)")

"""Independent tasks run concurrently, bounded by max_concurrency."""

from __future__ import annotations

import asyncio
import threading
import time

from backend import cl

SLEEP = 0.3


def max_overlap(intervals):
    """Largest number of intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def sleeping_async_tasks(ids, n, intervals):
    def make(i):
        async def nap(ctx):
            start = time.monotonic()
            await asyncio.sleep(SLEEP)
            intervals.append((start, time.monotonic()))
            return {f"t{i}": True}

        return cl.task(ids(f"async{i}"))(nap)

    return [make(i) for i in range(n)]


def sleeping_sync_tasks(ids, n, intervals, threads):
    def make(i):
        def nap(ctx):
            threads.add(threading.get_ident())
            start = time.monotonic()
            time.sleep(SLEEP)
            intervals.append((start, time.monotonic()))
            return {f"t{i}": True}

        return cl.task(ids(f"sync{i}"))(nap)

    return [make(i) for i in range(n)]


async def test_async_tasks_run_concurrently(executor, ids):
    intervals = []
    wf = cl.Workflow(ids.wf(), sleeping_async_tasks(ids, 4, intervals))
    started = time.monotonic()
    result = await executor.execute(wf)
    elapsed = time.monotonic() - started

    assert result["status"] == "Completed"
    assert len(intervals) == 4
    assert max_overlap(intervals) == 4
    assert elapsed < 4 * SLEEP, f"4 parallel {SLEEP}s sleeps took {elapsed:.2f}s"


async def test_sync_tasks_run_concurrently_on_threads(executor, ids):
    intervals, threads = [], set()
    wf = cl.Workflow(ids.wf(), sleeping_sync_tasks(ids, 4, intervals, threads))
    started = time.monotonic()
    result = await executor.execute(wf)
    elapsed = time.monotonic() - started

    assert result["status"] == "Completed"
    assert max_overlap(intervals) == 4
    assert len(threads) == 4
    assert threading.get_ident() not in threads
    assert elapsed < 4 * SLEEP, f"4 parallel {SLEEP}s sleeps took {elapsed:.2f}s"


async def test_max_concurrency_one_serializes(database_url, ids):
    ex = cl.UnifiedExecutor(max_concurrency=1)
    await ex.initialize(database_url)
    try:
        intervals = []
        wf = cl.Workflow(ids.wf(), sleeping_async_tasks(ids, 4, intervals))
        started = time.monotonic()
        result = await ex.execute(wf)
        elapsed = time.monotonic() - started
    finally:
        await ex.shutdown()

    assert result["status"] == "Completed"
    assert max_overlap(intervals) == 1
    assert elapsed >= 4 * SLEEP * 0.95


async def test_max_concurrency_two_bounds_sync_threads(database_url, ids):
    ex = cl.UnifiedExecutor(max_concurrency=2)
    await ex.initialize(database_url)
    try:
        intervals, threads = [], set()
        wf = cl.Workflow(ids.wf(), sleeping_sync_tasks(ids, 6, intervals, threads))
        started = time.monotonic()
        result = await ex.execute(wf)
        elapsed = time.monotonic() - started
    finally:
        await ex.shutdown()

    assert result["status"] == "Completed"
    assert max_overlap(intervals) == 2
    assert elapsed >= 3 * SLEEP * 0.95
    assert elapsed < 6 * SLEEP


async def test_concurrent_executions_on_one_executor(executor, ids):
    intervals = []

    @cl.task(ids("nap"))
    async def nap(ctx):
        start = time.monotonic()
        await asyncio.sleep(SLEEP)
        intervals.append((start, time.monotonic()))
        return {"run": ctx["run"], "napped": True}

    @cl.task(ids("after"), dependencies=[nap])
    def after(ctx):
        return {"echo": ctx["run"] * 100}

    wf = cl.Workflow(ids.wf(), [after])
    started = time.monotonic()
    results = await asyncio.gather(*(executor.execute(wf, {"run": i}) for i in range(5)))
    elapsed = time.monotonic() - started

    assert [r["status"] for r in results] == ["Completed"] * 5
    assert len({r["execution_id"] for r in results}) == 5
    for i, r in enumerate(results):
        assert r["final_context"] == {"run": i, "napped": True, "echo": i * 100}
    assert max_overlap(intervals) >= 2
    assert elapsed < 5 * SLEEP, f"5 concurrent executions took {elapsed:.2f}s"


async def test_parallel_branches_after_common_root(executor, ids):
    intervals = []

    @cl.task(ids("root"))
    def root(ctx):
        return {"go": True}

    def make_branch(i):
        def branch(ctx):
            assert ctx["go"] is True
            start = time.monotonic()
            time.sleep(SLEEP)
            intervals.append((start, time.monotonic()))
            return {f"b{i}": i}

        return cl.task(ids(f"branch{i}"), dependencies=[root])(branch)

    branches = [make_branch(i) for i in range(3)]

    wf = cl.Workflow(ids.wf(), branches)
    result = await executor.execute(wf)
    assert result["status"] == "Completed"
    assert max_overlap(intervals) == 3

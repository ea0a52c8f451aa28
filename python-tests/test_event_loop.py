"""The caller's event loop stays responsive while the engine works."""

from __future__ import annotations

import asyncio
import time

from backend import cl

TICK = 0.02


class Ticker:
    """Counts loop wake-ups and records the largest gap between them."""

    def __init__(self) -> None:
        self.ticks = 0
        self.max_gap = 0.0
        self._task = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            last = now
            self.ticks += 1

    async def __aenter__(self) -> "Ticker":
        self._task = asyncio.ensure_future(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def test_loop_ticks_during_blocking_sync_task(executor, ids):
    @cl.task(ids("blocker"))
    def blocker(ctx):
        time.sleep(0.5)
        return {"slept": True}

    wf = cl.Workflow(ids.wf(), [blocker])
    async with Ticker() as ticker:
        result = await executor.execute(wf)
    assert result["status"] == "Completed"
    assert ticker.ticks >= 10, f"only {ticker.ticks} ticks in a 0.5s task"
    assert ticker.max_gap < 0.25, f"loop stalled for {ticker.max_gap:.2f}s"


async def test_loop_ticks_during_cpu_bound_sync_chain(executor, ids):
    @cl.task(ids("spin1"))
    def spin1(ctx):
        deadline = time.monotonic() + 0.2
        n = 0
        while time.monotonic() < deadline:
            n += 1
        return {"n1": n > 0}

    @cl.task(ids("spin2"), dependencies=[spin1])
    def spin2(ctx):
        time.sleep(0.2)
        return {"n2": True}

    async with Ticker() as ticker:
        result = await executor.execute(cl.Workflow(ids.wf(), [spin2]))
    assert result["status"] == "Completed"
    assert ticker.ticks >= 5


async def test_other_coroutines_progress_while_execute_awaits(executor, ids):
    @cl.task(ids("slow"))
    def slow(ctx):
        time.sleep(0.4)
        return {}

    progress = []

    async def side_job():
        for i in range(5):
            await asyncio.sleep(0.03)
            progress.append(i)
        return "side done"

    execution = asyncio.ensure_future(executor.execute(cl.Workflow(ids.wf(), [slow])))
    side = await side_job()
    assert side == "side done"
    assert not execution.done(), "side job should finish before the 0.4s task"
    result = await execution
    assert result["status"] == "Completed"
    assert progress == [0, 1, 2, 3, 4]


async def test_execute_can_be_awaited_with_timeout_and_gather(executor, ids):
    @cl.task(ids("quick"))
    async def quick(ctx):
        await asyncio.sleep(0.05)
        return {"q": ctx["i"]}

    wf = cl.Workflow(ids.wf(), [quick])
    results = await asyncio.wait_for(asyncio.gather(executor.execute(wf, {"i": 1}), executor.execute(wf, {"i": 2})),
                                     timeout=10)
    assert [r["final_context"]["q"] for r in results] == [1, 2]


async def test_initialize_and_queries_do_not_block_loop(database_url, ids):
    async with Ticker() as ticker:
        ex = cl.UnifiedExecutor()
        await ex.initialize(database_url)
        try:
            @cl.task(ids("t"))
            async def t(ctx):
                await asyncio.sleep(0.3)
                return {}

            result = await ex.execute(cl.Workflow(ids.wf(), [t]))
            await ex.list_executions()
            await ex.get_execution(result["execution_id"])
        finally:
            await ex.shutdown()
    assert ticker.ticks >= 5
    assert ticker.max_gap < 0.25

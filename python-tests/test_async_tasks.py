"""`async def` tasks run on the caller's event loop; sync tasks on worker threads."""

from __future__ import annotations

import asyncio
import inspect
import threading

from backend import by_task, cl


async def test_async_task_runs_on_callers_loop(executor, ids):
    loop = asyncio.get_running_loop()
    seen = {}

    @cl.task(ids("probe"))
    async def probe(ctx):
        seen["loop"] = asyncio.get_running_loop()
        seen["thread"] = threading.get_ident()
        return {"ok": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [probe]))
    assert result["status"] == "Completed"
    assert seen["loop"] is loop
    assert seen["thread"] == threading.get_ident()


async def test_sync_task_runs_off_the_loop_thread(executor, ids):
    seen = {}

    @cl.task(ids("probe"))
    def probe(ctx):
        seen["thread"] = threading.get_ident()
        try:
            asyncio.get_running_loop()
            seen["loop"] = True
        except RuntimeError:
            seen["loop"] = False
        return None

    result = await executor.execute(cl.Workflow(ids.wf(), [probe]))
    assert result["status"] == "Completed"
    assert seen["thread"] != threading.get_ident()
    assert seen["loop"] is False


async def test_async_task_can_use_loop_bound_objects(executor, ids):
    event = asyncio.Event()
    queue: asyncio.Queue = asyncio.Queue()

    @cl.task(ids("producer"))
    async def producer(ctx):
        await queue.put("payload")
        event.set()
        return {"produced": True}

    @cl.task(ids("consumer"), dependencies=[producer])
    async def consumer(ctx):
        await asyncio.wait_for(event.wait(), timeout=5)
        return {"consumed": await queue.get()}

    result = await executor.execute(cl.Workflow(ids.wf(), [consumer]))
    assert result["status"] == "Completed"
    assert result["final_context"] == {"produced": True, "consumed": "payload"}


async def test_mixed_async_and_sync_chain(executor, ids):
    @cl.task(ids("one"))
    async def one(ctx):
        await asyncio.sleep(0.01)
        return {"n": ctx["n"] + 1}

    @cl.task(ids("two"), dependencies=[one])
    def two(ctx):
        return {"n": ctx["n"] * 10}

    @cl.task(ids("three"), dependencies=[two])
    async def three(ctx):
        await asyncio.sleep(0)
        return {"n": ctx["n"] - 3}

    wf = cl.Workflow(ids.wf(), [three])
    result = await executor.execute(wf, {"n": 1})
    assert result["status"] == "Completed"
    assert result["final_context"] == {"n": 17}
    assert [r["status"] for r in result["task_results"]] == ["Completed"] * 3


async def test_async_task_returning_none_keeps_in_place_changes(executor, ids):
    @cl.task(ids("mutate"))
    async def mutate(ctx):
        await asyncio.sleep(0)
        ctx["added"] = [1, 2]
        ctx["n"] += 1

    @cl.task(ids("check"), dependencies=[mutate])
    async def check(ctx):
        return {"seen": ctx["added"] + [ctx["n"]]}

    result = await executor.execute(cl.Workflow(ids.wf(), [check]), {"n": 1})
    assert result["status"] == "Completed"
    assert result["final_context"] == {"n": 2, "added": [1, 2], "seen": [1, 2, 2]}


async def test_async_task_exception_fails_task(executor, ids):
    @cl.task(ids("explode"))
    async def explode_async(ctx):
        await asyncio.sleep(0)
        raise RuntimeError("async kaboom")

    result = await executor.execute(cl.Workflow(ids.wf(), [explode_async]))
    assert result["status"] == "Failed"
    tr = by_task(result)[ids("explode")]
    assert tr["status"] == "Failed"
    assert tr["error"] == "RuntimeError: async kaboom"
    assert "explode_async" in tr["traceback"]
    assert "async kaboom" in tr["traceback"]


async def test_async_task_bad_return_type_fails(executor, ids):
    @cl.task(ids("bad"))
    async def bad(ctx):
        return ["not", "a", "dict"]

    result = await executor.execute(cl.Workflow(ids.wf(), [bad]))
    tr = by_task(result)[ids("bad")]
    assert result["status"] == "Failed"
    assert tr["status"] == "Failed"
    assert tr["error"].startswith("TypeError: ")
    assert ids("bad") in tr["error"]
    assert "list" in tr["error"]


async def test_async_decorated_function_stays_coroutine_function(ids):
    async def fetch(ctx):
        return {"x": ctx["x"] + 1}

    decorated = cl.task(ids("fetch"))(fetch)
    assert decorated is fetch
    assert inspect.iscoroutinefunction(decorated)
    assert await decorated({"x": 1}) == {"x": 2}

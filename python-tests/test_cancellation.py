"""Cancelling executions: execute(timeout=), cancelling the awaiting coroutine, executor.cancel()."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any, Dict, List

import pytest

from backend import by_task, cl, parse_ts

# Async tasks below record here that they saw CancelledError (module level: they run in the engine).
CANCELLED_SEEN: List[str] = []

FINAL = ("Completed", "Failed", "Cancelled")


async def wait_until(predicate, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def running_execution_id(executor, workflow_name: str, seconds: float = 5.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        running = await executor.list_executions(workflow=workflow_name, status="Running")
        if running:
            assert len(running) == 1
            return running[0]["execution_id"]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no Running execution of {workflow_name} appeared")


async def final_record(executor, workflow_name: str, seconds: float = 5.0) -> Dict[str, Any]:
    """The only execution of a workflow once it has left Running (polls: cancellation is async)."""
    deadline = time.monotonic() + seconds
    while True:
        listed = await executor.list_executions(workflow=workflow_name)
        assert len(listed) == 1, listed
        if listed[0]["status"] != "Running" or time.monotonic() > deadline:
            return await executor.get_execution(listed[0]["execution_id"])
        await asyncio.sleep(0.05)


def chain(ids, ran: List[str]):
    """quick -> slow (async, waits to be cancelled) -> after (records that it ran)."""
    marker = ids("slow")

    @cl.task(ids("quick"))
    def quick(ctx):
        ran.append("quick")
        return {"quick": True}

    @cl.task(marker, dependencies=[quick])
    async def slow(ctx):
        ran.append("slow")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            CANCELLED_SEEN.append(marker)
            raise
        return {"slow": True}

    @cl.task(ids("after"), dependencies=[slow])
    def after(ctx):
        ran.append("after")
        return {"after": True}

    return cl.Workflow(ids.wf(), [after])


def assert_cancelled_chain(ids, record: Dict[str, Any], reason_fragment: str) -> None:
    assert record["status"] == "Cancelled"
    assert record["completed_at"] is not None
    assert parse_ts(record["started_at"]) <= parse_ts(record["completed_at"])
    tr = by_task(record)
    assert tr[ids("quick")]["status"] == "Completed"
    assert tr[ids("quick")]["reason"] is None

    slow = tr[ids("slow")]
    assert slow["status"] == "Cancelled"
    assert slow["attempts"] == 1
    assert [h["status"] for h in slow["history"]] == ["Cancelled"]
    assert slow["history"][0]["attempt"] == 1
    parse_ts(slow["history"][0]["started_at"])
    parse_ts(slow["history"][0]["completed_at"])
    assert isinstance(slow["reason"], str) and reason_fragment in slow["reason"].lower()

    after = tr[ids("after")]
    assert after["status"] == "Cancelled"
    assert after["attempts"] == 0
    assert after["history"] == []
    assert after["started_at"] is None
    assert isinstance(after["reason"], str) and reason_fragment in after["reason"].lower()

    for task_result in record["task_results"]:
        assert task_result["status"] in FINAL


# --- execute(timeout=) -----------------------------------------------------------------------

async def test_execute_timeout_cancels_execution(executor, ids):
    ran: List[str] = []
    wf = chain(ids, ran)

    started = time.monotonic()
    result = await executor.execute(wf, {"in": 1}, timeout=0.3)
    elapsed = time.monotonic() - started

    assert 0.3 - 0.02 <= elapsed < 2.0, elapsed
    assert result["status"] == "Cancelled"
    assert isinstance(result["error"], str)
    assert "timed out" in result["error"] and "0.3" in result["error"], result["error"]
    assert_cancelled_chain(ids, result, "timed out")
    assert await wait_until(lambda: ids("slow") in CANCELLED_SEEN), "the async task never saw CancelledError"

    await asyncio.sleep(0.2)
    assert ran == ["quick", "slow"]
    stored = await executor.get_execution(result["execution_id"])
    assert stored == result
    cancelled = await executor.list_executions(workflow=wf.name, status="Cancelled")
    assert [e["execution_id"] for e in cancelled] == [result["execution_id"]]
    assert await executor.list_executions(workflow=wf.name, status="Running") == []


async def test_execute_timeout_cancels_task_waiting_to_retry(executor, ids):
    calls = []

    @cl.task(ids("retrying"), retries=3, retry_delay=5)
    def retrying(ctx):
        calls.append(1)
        raise ConnectionError("down")

    started = time.monotonic()
    result = await executor.execute(cl.Workflow(ids.wf(), [retrying]), timeout=0.3)
    assert time.monotonic() - started < 2.0

    assert result["status"] == "Cancelled"
    tr = by_task(result)[ids("retrying")]
    assert tr["status"] == "Cancelled"
    assert "timed out" in tr["reason"]
    assert tr["attempts"] == 1
    assert [h["status"] for h in tr["history"]] == ["Failed"]
    assert tr["history"][0]["error"] == "ConnectionError: down"
    assert calls == [1]


async def test_execute_timeout_with_sync_task_starts_nothing_after(executor, ids):
    ran: List[str] = []
    returned = threading.Event()

    @cl.task(ids("blocking"))
    def blocking(ctx):
        ran.append("blocking")
        time.sleep(0.5)
        returned.set()
        return {"blocking": True}

    @cl.task(ids("next"), dependencies=[blocking])
    def next_(ctx):
        ran.append("next")
        return {"next": True}

    started = time.monotonic()
    result = await executor.execute(cl.Workflow(ids.wf(), [next_]), timeout=0.2)
    assert time.monotonic() - started < 0.45, "execute waited for the sync thread"

    assert result["status"] == "Cancelled"
    assert "timed out" in result["error"]
    tr = by_task(result)
    assert tr[ids("blocking")]["status"] == "Cancelled"
    assert [h["status"] for h in tr[ids("blocking")]["history"]] == ["Cancelled"]
    assert tr[ids("next")]["status"] == "Cancelled"
    assert tr[ids("next")]["attempts"] == 0

    # The thread finishes later: nothing starts after it, its result is discarded.
    assert await wait_until(returned.is_set)
    await asyncio.sleep(0.2)
    assert ran == ["blocking"]
    stored = await executor.get_execution(result["execution_id"])
    assert stored == result
    assert "blocking" not in (stored["final_context"] or {})


async def test_execute_timeout_not_reached(executor, ids):
    @cl.task(ids("fast"))
    async def fast(ctx):
        await asyncio.sleep(0.05)
        return {"fast": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [fast]), timeout=5)
    assert result["status"] == "Completed"
    assert result["error"] is None
    assert by_task(result)[ids("fast")]["reason"] is None


async def test_execute_timeout_cancels_parallel_branches(executor, ids):
    ran: List[str] = []

    @cl.task(ids("done_early"))
    def done_early(ctx):
        return {"early": True}

    def hanging(name):
        @cl.task(ids(name))
        async def fn(ctx):
            ran.append(name)
            await asyncio.sleep(10)
        return fn

    branches = [hanging(f"branch{i}") for i in range(3)]
    result = await executor.execute(cl.Workflow(ids.wf(), [done_early] + branches), timeout=0.3)
    assert result["status"] == "Cancelled"
    tr = by_task(result)
    assert tr[ids("done_early")]["status"] == "Completed"
    for i in range(3):
        assert tr[ids(f"branch{i}")]["status"] == "Cancelled"
        assert [h["status"] for h in tr[ids(f"branch{i}")]["history"]] == ["Cancelled"]
    assert sorted(ran) == ["branch0", "branch1", "branch2"]


# --- cancelling the awaiting coroutine ---------------------------------------------------------

async def test_wait_for_cancels_execution(executor, ids):
    ran: List[str] = []
    wf = chain(ids, ran)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(executor.execute(wf), 0.3)

    record = await final_record(executor, wf.name)
    assert record["status"] == "Cancelled", record
    assert_cancelled_chain(ids, record, "")
    assert await wait_until(lambda: ids("slow") in CANCELLED_SEEN)
    await asyncio.sleep(0.2)
    assert ran == ["quick", "slow"]


async def test_task_cancel_cancels_execution(executor, ids):
    ran: List[str] = []
    wf = chain(ids, ran)

    pending = asyncio.ensure_future(executor.execute(wf))
    await running_execution_id(executor, wf.name)
    assert await wait_until(lambda: "slow" in ran)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending

    record = await final_record(executor, wf.name)
    assert record["status"] == "Cancelled", record
    assert_cancelled_chain(ids, record, "")
    await asyncio.sleep(0.2)
    assert ran == ["quick", "slow"]


# --- executor.cancel() ---------------------------------------------------------------------------

async def test_executor_cancel_from_another_coroutine(executor, ids):
    ran: List[str] = []
    wf = chain(ids, ran)

    pending = asyncio.ensure_future(executor.execute(wf))
    execution_id = await running_execution_id(executor, wf.name)
    assert await wait_until(lambda: "slow" in ran)

    assert await executor.cancel(execution_id) is True
    result = await asyncio.wait_for(pending, 3)
    assert result["execution_id"] == execution_id
    assert result["status"] == "Cancelled"
    assert_cancelled_chain(ids, result, "cancel")
    assert await wait_until(lambda: ids("slow") in CANCELLED_SEEN)

    assert await executor.cancel(execution_id) is False
    await asyncio.sleep(0.2)
    assert ran == ["quick", "slow"]
    assert await executor.get_execution(execution_id) == result


async def test_executor_cancel_running_sync_task(executor, ids):
    release = threading.Event()
    started = threading.Event()

    @cl.task(ids("blocking"))
    def blocking(ctx):
        started.set()
        release.wait(5)
        return {"blocking": True}

    @cl.task(ids("next"), dependencies=[blocking])
    def next_(ctx):
        return {"next": True}

    wf = cl.Workflow(ids.wf(), [next_])
    pending = asyncio.ensure_future(executor.execute(wf))
    try:
        execution_id = await running_execution_id(executor, wf.name)
        assert await wait_until(started.is_set)
        assert await executor.cancel(execution_id) is True
        result = await asyncio.wait_for(pending, 3)
    finally:
        release.set()

    assert result["status"] == "Cancelled"
    tr = by_task(result)
    assert tr[ids("blocking")]["status"] == "Cancelled"
    assert [h["status"] for h in tr[ids("blocking")]["history"]] == ["Cancelled"]
    assert tr[ids("next")]["status"] == "Cancelled"
    await asyncio.sleep(0.1)
    assert await executor.get_execution(execution_id) == result


async def test_executor_cancel_during_retry_wait(executor, ids):
    calls = []

    @cl.task(ids("retrying"), retries=3, retry_delay=5)
    async def retrying(ctx):
        calls.append(1)
        raise ConnectionError("down")

    wf = cl.Workflow(ids.wf(), [retrying])
    pending = asyncio.ensure_future(executor.execute(wf))
    execution_id = await running_execution_id(executor, wf.name)
    assert await wait_until(lambda: calls == [1])
    await asyncio.sleep(0.05)
    started = time.monotonic()
    assert await executor.cancel(execution_id) is True
    result = await asyncio.wait_for(pending, 3)
    assert time.monotonic() - started < 2.0
    tr = by_task(result)[ids("retrying")]
    assert result["status"] == "Cancelled"
    assert tr["status"] == "Cancelled"
    assert [h["status"] for h in tr["history"]] == ["Failed"]
    assert calls == [1]


async def test_cancel_finished_or_unknown_returns_false(executor, ids):
    @cl.task(ids("fast"))
    def fast(ctx):
        return {"fast": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [fast]))
    assert await executor.cancel(result["execution_id"]) is False
    assert await executor.cancel(str(uuid.uuid4())) is False
    assert await executor.get_execution(result["execution_id"]) == result


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "", "1234"])
async def test_cancel_malformed_id_raises(executor, bad_id):
    with pytest.raises(ValueError):
        await executor.cancel(bad_id)


async def test_cancel_one_execution_spares_the_other(executor, ids):
    ran: List[str] = []
    doomed = chain(ids, ran)

    @cl.task(ids("steady"))
    async def steady(ctx):
        await asyncio.sleep(0.3)
        return {"steady": True}

    @cl.task(ids("steady_child"), dependencies=[steady])
    def steady_child(ctx):
        return {"steady_child": True}

    doomed_run = asyncio.ensure_future(executor.execute(doomed))
    steady_run = asyncio.ensure_future(executor.execute(cl.Workflow(ids.wf("steady"), [steady_child])))
    execution_id = await running_execution_id(executor, doomed.name)
    assert await wait_until(lambda: "slow" in ran)
    assert await executor.cancel(execution_id) is True

    cancelled = await asyncio.wait_for(doomed_run, 3)
    completed = await asyncio.wait_for(steady_run, 3)
    assert cancelled["status"] == "Cancelled"
    assert completed["status"] == "Completed"
    assert completed["final_context"] == {"steady": True, "steady_child": True}


async def test_executor_usable_after_cancellation(executor, ids):
    ran: List[str] = []
    result = await executor.execute(chain(ids, ran), timeout=0.2)
    assert result["status"] == "Cancelled"

    @cl.task(ids("again"))
    def again(ctx):
        return {"again": True}

    ok = await executor.execute(cl.Workflow(ids.wf("again"), [again]))
    assert ok["status"] == "Completed"


async def test_execute_timeout_cancels_task_waiting_for_a_slot(database_url, ids):
    executor = cl.UnifiedExecutor(max_concurrency=1)
    await executor.initialize(database_url)
    try:
        ran: List[str] = []

        def hanging(name):
            @cl.task(ids(name))
            async def fn(ctx):
                ran.append(name)
                await asyncio.sleep(10)
            return fn

        result = await executor.execute(cl.Workflow(ids.wf(), [hanging("h1"), hanging("h2")]), timeout=0.3)
    finally:
        await executor.shutdown()

    assert result["status"] == "Cancelled"
    assert len(ran) == 1
    tr = by_task(result)
    first, second = ids(ran[0]), ids("h2" if ran[0] == "h1" else "h1")
    assert tr[first]["status"] == "Cancelled"
    assert tr[first]["attempts"] == 1
    assert tr[second]["status"] == "Cancelled"
    assert tr[second]["attempts"] == 0
    assert tr[second]["history"] == []
    assert "timed out" in tr[second]["reason"]

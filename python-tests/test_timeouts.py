"""Per-attempt timeouts: async tasks are cancelled, sync tasks' late results are discarded."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, List

from backend import by_task, cl, parse_ts

# What the async tasks below saw when their attempt was abandoned (module level on purpose:
# the task functions run inside the engine, far from the test's locals).
CANCELLED_SEEN: List[str] = []


def attempt_seconds(entry: Dict[str, Any]) -> float:
    return (parse_ts(entry["completed_at"]) - parse_ts(entry["started_at"])).total_seconds()


async def wait_until(predicate, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def test_async_timeout_cancels_the_task(executor, ids):
    marker = ids("slow")
    finished = []

    @cl.task(marker, timeout=0.2)
    async def slow(ctx):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            CANCELLED_SEEN.append(marker)
            raise
        finished.append(1)
        return {"slow": True}

    @cl.task(ids("child"), dependencies=[slow])
    def child(ctx):
        return {"child": True}

    started = time.monotonic()
    result = await executor.execute(cl.Workflow(ids.wf(), [child]))
    elapsed = time.monotonic() - started

    assert elapsed < 2.0, elapsed
    assert result["status"] == "Failed"
    assert ids("slow") in result["error"]
    assert "slow" not in result["final_context"]
    tr = by_task(result)[ids("slow")]
    assert tr["status"] == "Failed"
    assert tr["attempts"] == 1
    assert tr["error"].startswith("TimeoutError")
    assert [h["status"] for h in tr["history"]] == ["Failed"]
    assert tr["history"][0]["error"].startswith("TimeoutError")
    assert 0.2 - 0.02 <= attempt_seconds(tr["history"][0]) < 1.0
    assert by_task(result)[ids("child")]["status"] == "Skipped"
    assert await wait_until(lambda: marker in CANCELLED_SEEN), "the task never saw CancelledError"
    assert finished == []
    assert await executor.get_execution(result["execution_id"]) == result


async def test_sync_timeout_discards_late_result(executor, ids):
    release = threading.Event()
    returned = threading.Event()

    @cl.task(ids("blocking"), timeout=0.2)
    def blocking(ctx):
        release.wait(5)
        returned.set()
        return {"late": True}

    @cl.task(ids("child"), dependencies=[blocking])
    def child(ctx):
        return {"child": True}

    started = time.monotonic()
    try:
        result = await executor.execute(cl.Workflow(ids.wf(), [child]), {"input": 1})
        elapsed = time.monotonic() - started
        assert not returned.is_set(), "execute waited for the timed-out thread"
    finally:
        release.set()

    assert elapsed < 2.0, elapsed
    assert result["status"] == "Failed"
    assert result["final_context"] == {"input": 1}
    tr = by_task(result)[ids("blocking")]
    assert tr["status"] == "Failed"
    assert tr["attempts"] == 1
    assert tr["error"].startswith("TimeoutError")
    assert tr["history"][0]["error"].startswith("TimeoutError")
    assert 0.2 - 0.02 <= attempt_seconds(tr["history"][0]) < 1.0
    assert by_task(result)[ids("child")]["status"] == "Skipped"

    # The thread returns afterwards; its result must not reach the record.
    assert await wait_until(returned.is_set)
    await asyncio.sleep(0.1)
    stored = await executor.get_execution(result["execution_id"])
    assert stored == result
    assert "late" not in stored["final_context"]


async def test_task_within_timeout_completes(executor, ids):
    @cl.task(ids("fast_sync"), timeout=2.0)
    def fast_sync(ctx):
        time.sleep(0.05)
        return {"sync": True}

    @cl.task(ids("fast_async"), timeout=2, dependencies=[fast_sync])
    async def fast_async(ctx):
        await asyncio.sleep(0.05)
        return {"async": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [fast_async]))
    assert result["status"] == "Completed"
    assert result["final_context"] == {"sync": True, "async": True}


async def test_async_timed_out_attempt_is_retried(executor, ids):
    calls = []
    marker = ids("async_retry")

    @cl.task(marker, timeout=0.15, retries=1, retry_delay=0.05)
    async def async_retry(ctx):
        calls.append(1)
        if len(calls) == 1:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                CANCELLED_SEEN.append(marker)
                raise
        return {"attempt": len(calls)}

    result = await executor.execute(cl.Workflow(ids.wf(), [async_retry]))
    assert result["status"] == "Completed"
    assert result["final_context"] == {"attempt": 2}
    tr = by_task(result)[marker]
    assert tr["attempts"] == 2
    assert [h["status"] for h in tr["history"]] == ["Failed", "Completed"]
    assert tr["history"][0]["error"].startswith("TimeoutError")
    assert tr["history"][1]["error"] is None
    assert marker in CANCELLED_SEEN


async def test_sync_timed_out_attempt_is_retried_and_late_result_ignored(executor, ids):
    calls = []
    first_returned = threading.Event()

    @cl.task(ids("sync_retry"), timeout=0.15, retries=2, retry_delay=0.05, retry_on=(TimeoutError,))
    def sync_retry(ctx):
        calls.append(1)
        attempt = len(calls)
        if attempt == 1:
            time.sleep(0.4)
            first_returned.set()
        return {"attempt": attempt}

    result = await executor.execute(cl.Workflow(ids.wf(), [sync_retry]))
    assert result["status"] == "Completed"
    assert result["final_context"] == {"attempt": 2}
    tr = by_task(result)[ids("sync_retry")]
    assert [h["status"] for h in tr["history"]] == ["Failed", "Completed"]
    assert tr["history"][0]["error"].startswith("TimeoutError")

    assert await wait_until(first_returned.is_set)
    await asyncio.sleep(0.1)
    stored = await executor.get_execution(result["execution_id"])
    assert stored == result
    assert stored["final_context"] == {"attempt": 2}


async def test_timeout_not_retried_when_retry_on_excludes_it(executor, ids):
    calls = []

    @cl.task(ids("strict"), timeout=0.1, retries=3, retry_delay=0.01, retry_on=ValueError)
    async def strict(ctx):
        calls.append(1)
        await asyncio.sleep(5)

    result = await executor.execute(cl.Workflow(ids.wf(), [strict]))
    assert result["status"] == "Failed"
    assert calls == [1]
    tr = by_task(result)[ids("strict")]
    assert tr["attempts"] == 1
    assert tr["error"].startswith("TimeoutError")
    assert [h["status"] for h in tr["history"]] == ["Failed"]


async def test_sync_timeout_not_retried_when_retry_on_excludes_it(executor, ids):
    calls = []

    @cl.task(ids("strict_sync"), timeout=0.1, retries=2, retry_delay=0.01, retry_on=(KeyError,))
    def strict_sync(ctx):
        calls.append(1)
        time.sleep(0.3)
        return {"late": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [strict_sync]))
    assert result["status"] == "Failed"
    assert len(calls) == 1
    assert by_task(result)[ids("strict_sync")]["attempts"] == 1
    await asyncio.sleep(0.3)


async def test_timeout_is_per_attempt(executor, ids):
    """Three attempts of 0.15 s each fit under a 0.3 s timeout, though together they exceed it."""
    calls = []

    @cl.task(ids("steady"), timeout=0.3, retries=2, retry_delay=0.01)
    async def steady(ctx):
        calls.append(1)
        await asyncio.sleep(0.15)
        if len(calls) < 3:
            raise ValueError(f"attempt {len(calls)}")
        return {"steady": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [steady]))
    assert result["status"] == "Completed"
    tr = by_task(result)[ids("steady")]
    assert [h["error"] for h in tr["history"]] == ["ValueError: attempt 1", "ValueError: attempt 2", None]


async def test_timed_out_task_does_not_block_other_branch(executor, ids):
    @cl.task(ids("hangs"), timeout=0.2)
    async def hangs(ctx):
        await asyncio.sleep(5)

    @cl.task(ids("fine"))
    async def fine(ctx):
        await asyncio.sleep(0.05)
        return {"fine": True}

    @cl.task(ids("fine_child"), dependencies=[fine])
    def fine_child(ctx):
        return {"fine_child": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [hangs, fine_child]))
    assert result["status"] == "Failed"
    tr = by_task(result)
    assert tr[ids("hangs")]["status"] == "Failed"
    assert tr[ids("fine_child")]["status"] == "Completed"
    assert result["final_context"] == {"fine": True, "fine_child": True}


async def test_async_task_swallowing_cancellation_still_times_out(executor, ids):
    """Catching CancelledError and returning does not turn a timed-out attempt into a success."""

    @cl.task(ids("sneaky"), timeout=0.2)
    async def sneaky(ctx):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return {"sneaky": True}
        return {"sneaky": False}

    result = await executor.execute(cl.Workflow(ids.wf(), [sneaky]))
    assert result["status"] == "Failed"
    assert result["final_context"] == {}
    tr = by_task(result)[ids("sneaky")]
    assert tr["status"] == "Failed"
    assert tr["error"].startswith("TimeoutError")
    await asyncio.sleep(0.05)
    assert (await executor.get_execution(result["execution_id"]))["final_context"] == {}


async def test_async_task_ignoring_cancellation_does_not_hold_the_execution(executor, ids):
    finished = []

    @cl.task(ids("stubborn"), timeout=0.2)
    async def stubborn(ctx):
        for _ in range(4):
            try:
                await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                pass
        finished.append(1)
        return {"stubborn": True}

    started = time.monotonic()
    result = await executor.execute(cl.Workflow(ids.wf(), [stubborn]))
    assert time.monotonic() - started < 0.35
    assert result["status"] == "Failed"
    assert by_task(result)[ids("stubborn")]["error"].startswith("TimeoutError")
    assert await wait_until(lambda: finished == [1])
    await asyncio.sleep(0.05)
    stored = await executor.get_execution(result["execution_id"])
    assert stored == result
    assert "stubborn" not in stored["final_context"]


async def test_timeout_retried_when_retry_on_names_a_base_class(executor, ids):
    """TimeoutError is an OSError: retry_on=OSError retries timeouts."""
    calls = []

    @cl.task(ids("oserror"), timeout=0.1, retries=1, retry_delay=0.01, retry_on=OSError)
    async def oserror(ctx):
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(5)
        return {"attempt": len(calls)}

    result = await executor.execute(cl.Workflow(ids.wf(), [oserror]))
    assert result["status"] == "Completed"
    assert result["final_context"] == {"attempt": 2}
    assert [h["status"] for h in by_task(result)[ids("oserror")]["history"]] == ["Failed", "Completed"]

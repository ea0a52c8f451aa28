"""Retries: attempts, backoff, caps, jitter, retry_on, and the attempt history."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List

import pytest

from backend import by_task, cl, parse_ts, statuses

# Retry delays are checked from the recorded timestamps: never shorter than asked
# (minus clock rounding), never much longer (scheduling and a database write).
EARLY = 0.02
LATE = 0.15


def gaps(task_result: Dict[str, Any]) -> List[float]:
    """Seconds between each attempt's end and the next attempt's start."""
    history = task_result["history"]
    return [
        (parse_ts(nxt["started_at"]) - parse_ts(prev["completed_at"])).total_seconds()
        for prev, nxt in zip(history, history[1:])
    ]


def assert_gap(gap: float, expected: float) -> None:
    assert expected - EARLY <= gap <= expected + LATE, f"gap {gap:.3f}s, expected about {expected}s"


def assert_history_shape(task_result: Dict[str, Any], statuses_: List[str]) -> None:
    history = task_result["history"]
    assert [h["attempt"] for h in history] == list(range(1, len(statuses_) + 1))
    assert [h["status"] for h in history] == statuses_
    assert task_result["attempts"] == len(statuses_)
    for h in history:
        assert parse_ts(h["started_at"]) <= parse_ts(h["completed_at"])
    for prev, nxt in zip(history, history[1:]):
        assert parse_ts(prev["completed_at"]) <= parse_ts(nxt["started_at"])


async def test_fails_twice_then_succeeds(executor, ids):
    calls: List[float] = []

    @cl.task(ids("flaky"), retries=2, retry_delay=0.1, retry_backoff=1.0)
    def flaky(ctx):
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ValueError(f"failure {len(calls)}")
        return {"flaky": len(calls)}

    @cl.task(ids("after"), dependencies=[flaky])
    def after(ctx):
        return {"after": ctx["flaky"]}

    result = await executor.execute(cl.Workflow(ids.wf(), [after]))

    assert result["status"] == "Completed"
    assert result["error"] is None
    assert result["final_context"] == {"flaky": 3, "after": 3}
    assert len(calls) == 3
    tr = by_task(result)[ids("flaky")]
    assert tr["status"] == "Completed"
    assert tr["error"] is None
    assert tr["reason"] is None
    assert_history_shape(tr, ["Failed", "Failed", "Completed"])
    assert [h["error"] for h in tr["history"]] == ["ValueError: failure 1", "ValueError: failure 2", None]
    for gap in gaps(tr):
        assert_gap(gap, 0.1)
    # The wall clock agrees with the recorded history.
    assert calls[1] - calls[0] >= 0.1 - EARLY
    assert calls[2] - calls[1] >= 0.1 - EARLY
    assert by_task(result)[ids("after")]["attempts"] == 1

    stored = await executor.get_execution(result["execution_id"])
    assert stored == result
    assert by_task(stored)[ids("flaky")]["history"] == tr["history"]


async def test_retries_exhausted_fails_with_last_error(executor, ids):
    calls = []

    @cl.task(ids("always"), retries=2, retry_delay=0.05)
    def always(ctx):
        calls.append(1)
        raise RuntimeError(f"attempt {len(calls)}")

    @cl.task(ids("child"), dependencies=[always])
    def child(ctx):
        return {"child": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [child]))
    assert result["status"] == "Failed"
    assert ids("always") in result["error"]
    assert len(calls) == 3
    tr = by_task(result)[ids("always")]
    assert tr["status"] == "Failed"
    assert tr["error"] == "RuntimeError: attempt 3"
    assert "attempt 3" in tr["traceback"]
    assert_history_shape(tr, ["Failed", "Failed", "Failed"])
    assert [h["error"] for h in tr["history"]] == [f"RuntimeError: attempt {i}" for i in (1, 2, 3)]
    child_result = by_task(result)[ids("child")]
    assert child_result["status"] == "Skipped"
    assert child_result["attempts"] == 0
    assert child_result["history"] == []


async def test_default_is_no_retry(executor, ids):
    calls = []

    @cl.task(ids("once"))
    def once(ctx):
        calls.append(1)
        raise ValueError("no retry by default")

    result = await executor.execute(cl.Workflow(ids.wf(), [once]))
    assert result["status"] == "Failed"
    assert calls == [1]
    tr = by_task(result)[ids("once")]
    assert_history_shape(tr, ["Failed"])
    assert tr["history"][0]["error"] == "ValueError: no retry by default"


async def test_retry_on_excluding_error_fails_at_once(executor, ids):
    calls = []

    @cl.task(ids("picky"), retries=3, retry_delay=0.05, retry_on=(KeyError, ConnectionError))
    def picky(ctx):
        calls.append(1)
        raise ValueError("not retryable")

    result = await executor.execute(cl.Workflow(ids.wf(), [picky]))
    assert result["status"] == "Failed"
    assert calls == [1]
    tr = by_task(result)[ids("picky")]
    assert tr["status"] == "Failed"
    assert tr["error"] == "ValueError: not retryable"
    assert_history_shape(tr, ["Failed"])


async def test_retry_on_single_class_matches_subclasses(executor, ids):
    calls = []

    @cl.task(ids("lookup"), retries=2, retry_delay=0.05, retry_on=LookupError)
    def lookup(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("missing")
        if len(calls) == 2:
            raise IndexError("out of range")
        return {"found": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [lookup]))
    assert result["status"] == "Completed"
    assert result["final_context"] == {"found": True}
    tr = by_task(result)[ids("lookup")]
    assert_history_shape(tr, ["Failed", "Failed", "Completed"])
    assert tr["history"][0]["error"] == "KeyError: 'missing'"
    assert tr["history"][1]["error"] == "IndexError: out of range"


async def test_retry_on_stops_at_first_non_matching_error(executor, ids):
    calls = []

    @cl.task(ids("mixed"), retries=5, retry_delay=0.05, retry_on=(ConnectionError,))
    def mixed(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("transient")
        raise ValueError("permanent")

    result = await executor.execute(cl.Workflow(ids.wf(), [mixed]))
    assert result["status"] == "Failed"
    assert len(calls) == 2
    tr = by_task(result)[ids("mixed")]
    assert tr["error"] == "ValueError: permanent"
    assert_history_shape(tr, ["Failed", "Failed"])


async def test_backoff_and_max_delay(executor, ids):
    calls = []

    @cl.task(ids("backoff"), retries=3, retry_delay=0.1, retry_backoff=2.0, retry_max_delay=0.25)
    def backoff(ctx):
        calls.append(1)
        if len(calls) <= 3:
            raise ValueError(f"failure {len(calls)}")
        return {"done": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [backoff]))
    assert result["status"] == "Completed"
    tr = by_task(result)[ids("backoff")]
    assert_history_shape(tr, ["Failed", "Failed", "Failed", "Completed"])
    observed = gaps(tr)
    assert len(observed) == 3
    for gap, expected in zip(observed, [0.1, 0.2, 0.25]):
        assert_gap(gap, expected)


async def test_default_backoff_doubles(executor, ids):
    calls = []

    @cl.task(ids("doubling"), retries=2, retry_delay=0.1)
    def doubling(ctx):
        calls.append(1)
        if len(calls) <= 2:
            raise ValueError("again")
        return {}

    result = await executor.execute(cl.Workflow(ids.wf(), [doubling]))
    tr = by_task(result)[ids("doubling")]
    assert tr["status"] == "Completed"
    first, second = gaps(tr)
    assert_gap(first, 0.1)
    assert_gap(second, 0.2)


async def test_zero_delay_retries_immediately(executor, ids):
    calls = []

    @cl.task(ids("eager"), retries=2, retry_delay=0)
    def eager(ctx):
        calls.append(1)
        if len(calls) <= 2:
            raise ValueError("again")
        return {"eager": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [eager]))
    tr = by_task(result)[ids("eager")]
    assert tr["status"] == "Completed"
    assert tr["attempts"] == 3
    for gap in gaps(tr):
        assert -EARLY <= gap <= LATE


async def test_jitter_stays_within_fraction(executor, ids):
    calls = []
    delay, jitter, retries = 0.2, 0.5, 5

    @cl.task(ids("jittery"), retries=retries, retry_delay=delay, retry_backoff=1.0, retry_jitter=jitter)
    def jittery(ctx):
        calls.append(1)
        if len(calls) <= retries:
            raise ValueError("again")
        return {}

    result = await executor.execute(cl.Workflow(ids.wf(), [jittery]))
    tr = by_task(result)[ids("jittery")]
    assert tr["status"] == "Completed"
    assert tr["attempts"] == retries + 1
    observed = gaps(tr)
    assert len(observed) == retries
    for gap in observed:
        assert delay * (1 - jitter) - EARLY <= gap <= delay * (1 + jitter) + LATE, observed
    # Jitter is random: five delays drawn from ±0.1 s are not all the same.
    assert max(observed) - min(observed) > 0.01, observed


async def test_jitter_respects_max_delay_bounds(executor, ids):
    calls = []

    @cl.task(ids("capped"), retries=3, retry_delay=0.1, retry_backoff=3.0, retry_max_delay=0.15,
             retry_jitter=0.2)
    def capped(ctx):
        calls.append(1)
        if len(calls) <= 3:
            raise ValueError("again")
        return {}

    result = await executor.execute(cl.Workflow(ids.wf(), [capped]))
    tr = by_task(result)[ids("capped")]
    assert tr["status"] == "Completed"
    observed = gaps(tr)
    assert len(observed) == 3
    # Uncapped, the third delay would be 0.9 s; capped (with ±20 %) it is at most 0.18 s.
    for gap in observed:
        assert 0.1 * 0.8 - EARLY <= gap <= 0.15 * 1.2 + LATE, observed


async def test_retry_wait_does_not_block_independent_branch(database_url, ids):
    """With one concurrency slot, a task waiting to retry lets another branch run meanwhile."""
    executor = cl.UnifiedExecutor(max_concurrency=1)
    await executor.initialize(database_url)
    try:
        calls = []

        @cl.task(ids("flaky"), retries=1, retry_delay=0.5)
        def flaky(ctx):
            calls.append(1)
            if len(calls) == 1:
                raise ValueError("first attempt fails")
            return {"flaky": True}

        @cl.task(ids("gate"))
        def gate(ctx):
            time.sleep(0.05)
            return {"gate": True}

        @cl.task(ids("branch"), dependencies=[gate])
        async def branch(ctx):
            await asyncio.sleep(0.05)
            return {"branch": True}

        result = await executor.execute(cl.Workflow(ids.wf(), [flaky, branch]))
    finally:
        await executor.shutdown()

    assert result["status"] == "Completed"
    tr = by_task(result)
    flaky_history = tr[ids("flaky")]["history"]
    assert [h["status"] for h in flaky_history] == ["Failed", "Completed"]
    retry_started = parse_ts(flaky_history[1]["started_at"])
    assert parse_ts(tr[ids("gate")]["completed_at"]) < retry_started
    assert parse_ts(tr[ids("branch")]["completed_at"]) < retry_started


async def test_retry_wait_does_not_block_other_execution(executor, ids):
    calls = []

    @cl.task(ids("flaky"), retries=1, retry_delay=0.4)
    def flaky(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("once")
        return {}

    @cl.task(ids("quick"))
    async def quick(ctx):
        return {"quick": True}

    slow_run = asyncio.ensure_future(executor.execute(cl.Workflow(ids.wf("slow"), [flaky])))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    quick_result = await executor.execute(cl.Workflow(ids.wf("quick"), [quick]))
    quick_elapsed = time.monotonic() - started
    slow_result = await slow_run

    assert quick_result["status"] == "Completed"
    assert quick_elapsed < 0.3, quick_elapsed
    assert slow_result["status"] == "Completed"
    assert by_task(slow_result)[ids("flaky")]["attempts"] == 2


async def test_async_task_retries(executor, ids):
    calls = []

    @cl.task(ids("async_flaky"), retries=3, retry_delay=0.05, retry_backoff=1.0)
    async def async_flaky(ctx):
        calls.append(1)
        await asyncio.sleep(0.01)
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return {"async": len(calls)}

    result = await executor.execute(cl.Workflow(ids.wf(), [async_flaky]))
    assert result["status"] == "Completed"
    assert result["final_context"] == {"async": 3}
    tr = by_task(result)[ids("async_flaky")]
    assert_history_shape(tr, ["Failed", "Failed", "Completed"])
    assert tr["history"][0]["error"] == "ConnectionError: try 1"
    for gap in gaps(tr):
        assert_gap(gap, 0.05)


async def test_async_task_retries_exhausted(executor, ids):
    @cl.task(ids("async_bad"), retries=1, retry_delay=0.05)
    async def async_bad(ctx):
        raise ValueError("async failure")

    result = await executor.execute(cl.Workflow(ids.wf(), [async_bad]))
    assert result["status"] == "Failed"
    tr = by_task(result)[ids("async_bad")]
    assert_history_shape(tr, ["Failed", "Failed"])
    assert tr["error"] == "ValueError: async failure"


async def test_each_attempt_sees_the_same_input(executor, ids):
    """A failed attempt's in-place changes do not leak into the next attempt."""
    seen = []

    @cl.task(ids("source"))
    def source(ctx):
        return {"items": [1, 2]}

    @cl.task(ids("mutating"), dependencies=[source], retries=1, retry_delay=0.05)
    def mutating(ctx):
        seen.append(list(ctx["items"]))
        ctx["items"].append(99)
        if len(seen) == 1:
            raise ValueError("after mutating")
        return {"count": len(ctx["items"])}

    result = await executor.execute(cl.Workflow(ids.wf(), [mutating]))
    assert result["status"] == "Completed"
    assert seen == [[1, 2], [1, 2]]
    assert result["final_context"]["count"] == 3


async def test_retried_failure_in_one_branch_with_failure_elsewhere(executor, ids):
    @cl.task(ids("bad"))
    def bad(ctx):
        raise ValueError("bad")

    calls = []

    @cl.task(ids("recovers"), retries=1, retry_delay=0.05)
    def recovers(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("once")
        return {"recovered": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [bad, recovers]))
    assert result["status"] == "Failed"
    assert statuses(result) == {ids("bad"): "Failed", ids("recovers"): "Completed"}
    assert ids("bad") in result["error"]
    assert result["final_context"] == {"recovered": True}


@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_attempt_count_matches_retries(executor, ids, retries):
    calls = []

    @cl.task(ids("count"), retries=retries, retry_delay=0)
    def count(ctx):
        calls.append(1)
        raise ValueError("always")

    result = await executor.execute(cl.Workflow(ids.wf(), [count]))
    tr = by_task(result)[ids("count")]
    assert tr["attempts"] == retries + 1 == len(calls) == len(tr["history"])

"""Shutting down with work in flight: running tasks finish and are stored, the rest waits in the
database for the next worker; with cancel=True the executor's executions end Cancelled."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, List, Sequence

import pytest

from backend import by_task, cl


async def started_executor(database_url: str, max_concurrency: int = 8, worker: bool = True):
    ex = cl.UnifiedExecutor(max_concurrency=max_concurrency)
    await ex.initialize(database_url, worker=worker)
    return ex


async def wait_running(executor, workflow_name: str, count: int = 1, seconds: float = 5.0) -> List[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        running = await executor.list_executions(workflow=workflow_name, status="Running")
        if len(running) >= count:
            return [r["execution_id"] for r in running]
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} Running execution(s) of {workflow_name} never appeared")


async def recorded(database_url: str, workflow_names: Sequence[str]) -> List[Dict[str, Any]]:
    """Every execution of these workflows as a NEW submit-only executor on the same database reads them."""
    reader = await started_executor(database_url, worker=False)
    try:
        out = []
        for name in workflow_names:
            for entry in await reader.list_executions(workflow=name):
                out.append(await reader.get_execution(entry["execution_id"]))
        return out
    finally:
        await reader.shutdown()


def assert_nothing_running(records: List[Dict[str, Any]]) -> None:
    assert records, "no executions recorded"
    for record in records:
        assert record["status"] != "Running", record
        assert record["completed_at"] is not None, record
        for task_result in record["task_results"]:
            assert task_result["status"] != "Running", record


def slow_chain(ids, ran: List[str], seconds: float, suffix: str = ""):
    @cl.task(ids(f"slow{suffix}"))
    async def slow(ctx):
        ran.append(f"slow{suffix}")
        await asyncio.sleep(seconds)
        return {f"slow{suffix}": True}

    @cl.task(ids(f"after{suffix}"), dependencies=[slow])
    def after(ctx):
        ran.append(f"after{suffix}")
        return {f"after{suffix}": True}

    return cl.Workflow(ids.wf(f"chain{suffix}"), [after])


async def finish_elsewhere(database_url: str, execution_id: str) -> Dict[str, Any]:
    """A new worker on the same database picks the execution up and runs it to its end."""
    worker = await started_executor(database_url)
    try:
        return await worker.wait(execution_id, timeout=20)
    finally:
        await worker.shutdown()


async def test_shutdown_lets_running_task_finish_and_leaves_the_rest(database_url, ids):
    ex = await started_executor(database_url)
    ran: List[str] = []
    wf = slow_chain(ids, ran, 0.3)

    pending = asyncio.ensure_future(ex.execute(wf, {"in": 1}))
    [execution_id] = await wait_running(ex, wf.name)
    await ex.shutdown()

    # The running task finished and was stored; the rest waits for the next worker, not Failed.
    [record] = await recorded(database_url, [wf.name])
    assert record["status"] == "Running", record
    assert record["completed_at"] is None
    tasks = by_task(record)
    assert tasks[ids("slow")]["status"] == "Completed"
    assert tasks[ids("after")]["status"] == "Pending"
    assert ran == ["slow"]
    with pytest.raises(cl.NotInitializedError, match="stays in the database"):
        await asyncio.wait_for(pending, 3)

    result = await finish_elsewhere(database_url, execution_id)
    assert result["status"] == "Completed"
    assert result["final_context"] == {"in": 1, "slow": True, "after": True}
    assert ran == ["slow", "after"]

    with pytest.raises(cl.NotInitializedError):
        await ex.execute(wf)


async def test_shutdown_leaves_several_executions_for_the_next_worker(database_url, ids):
    ex = await started_executor(database_url)
    ran: List[str] = []
    workflows = [slow_chain(ids, ran, 0.2 + 0.05 * i, suffix=str(i)) for i in range(3)]

    pending = [asyncio.ensure_future(ex.execute(wf)) for wf in workflows]
    execution_ids = [(await wait_running(ex, wf.name))[0] for wf in workflows]
    await ex.shutdown()

    records = await recorded(database_url, [wf.name for wf in workflows])
    assert [r["status"] for r in records] == ["Running"] * 3
    for outcome in await asyncio.gather(*pending, return_exceptions=True):
        assert isinstance(outcome, cl.NotInitializedError), outcome
    results = [await finish_elsewhere(database_url, i) for i in execution_ids]
    assert [r["status"] for r in results] == ["Completed"] * 3
    assert sorted(ran) == sorted([f"slow{i}" for i in range(3)] + [f"after{i}" for i in range(3)])


async def test_shutdown_waits_for_retry(database_url, ids):
    ex = await started_executor(database_url)
    calls = []

    @cl.task(ids("flaky"), retries=1, retry_delay=0.3)
    def flaky(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("once")
        return {"flaky": True}

    wf = cl.Workflow(ids.wf(), [flaky])
    pending = asyncio.ensure_future(ex.execute(wf))
    await wait_running(ex, wf.name)
    assert await asyncio.wait_for(_until(lambda: calls == [1]), 3)
    await ex.shutdown()

    records = await recorded(database_url, [wf.name])
    assert_nothing_running(records)
    assert records[0]["status"] == "Completed"
    assert by_task(records[0])[ids("flaky")]["attempts"] == 2
    result = await asyncio.wait_for(pending, 3)
    assert result["status"] == "Completed"


async def test_shutdown_cancel_cancels_running_execution(database_url, ids):
    ex = await started_executor(database_url)
    ran: List[str] = []
    wf = slow_chain(ids, ran, 10)

    pending = asyncio.ensure_future(ex.execute(wf))
    await wait_running(ex, wf.name)
    assert await asyncio.wait_for(_until(lambda: "slow" in ran), 3)
    started = time.monotonic()
    await ex.shutdown(cancel=True)
    assert time.monotonic() - started < 3.0

    records = await recorded(database_url, [wf.name])
    assert_nothing_running(records)
    record = records[0]
    assert record["status"] == "Cancelled"
    tr = by_task(record)
    assert tr[ids("slow")]["status"] == "Cancelled"
    assert [h["status"] for h in tr[ids("slow")]["history"]] == ["Cancelled"]
    assert tr[ids("after")]["status"] == "Cancelled"
    assert tr[ids("after")]["attempts"] == 0
    for task_result in record["task_results"]:
        assert isinstance(task_result["reason"], str) and task_result["reason"]

    result = await asyncio.wait_for(pending, 3)
    assert result["status"] == "Cancelled"
    assert result == record
    assert ran == ["slow"]

    with pytest.raises(cl.NotInitializedError):
        await ex.execute(wf)


async def test_shutdown_cancel_with_sync_task_in_flight(database_url, ids):
    ex = await started_executor(database_url)
    release = threading.Event()
    returned = threading.Event()
    ran: List[str] = []

    @cl.task(ids("blocking"))
    def blocking(ctx):
        ran.append("blocking")
        release.wait(5)
        returned.set()
        return {"blocking": True}

    @cl.task(ids("next"), dependencies=[blocking])
    def next_(ctx):
        ran.append("next")
        return {"next": True}

    wf = cl.Workflow(ids.wf(), [next_])
    pending = asyncio.ensure_future(ex.execute(wf))
    try:
        await wait_running(ex, wf.name)
        assert await asyncio.wait_for(_until(lambda: "blocking" in ran), 3)
        await asyncio.wait_for(ex.shutdown(cancel=True), 3)
        records = await recorded(database_url, [wf.name])
    finally:
        release.set()

    assert_nothing_running(records)
    assert records[0]["status"] == "Cancelled"
    assert by_task(records[0])[ids("blocking")]["status"] == "Cancelled"
    assert by_task(records[0])[ids("next")]["status"] == "Cancelled"

    # The thread returns afterwards: its result changes nothing, and nothing else starts.
    assert await asyncio.wait_for(_until(returned.is_set), 3)
    await asyncio.sleep(0.2)
    assert ran == ["blocking"]
    assert await recorded(database_url, [wf.name]) == records
    result = await asyncio.wait_for(pending, 3)
    assert result["status"] == "Cancelled"


async def test_shutdown_cancel_cancels_several_executions(database_url, ids):
    ex = await started_executor(database_url)
    ran: List[str] = []
    workflows = [slow_chain(ids, ran, 10, suffix=str(i)) for i in range(3)]
    pending = [asyncio.ensure_future(ex.execute(wf)) for wf in workflows]
    for wf in workflows:
        await wait_running(ex, wf.name)
    await asyncio.wait_for(ex.shutdown(cancel=True), 3)

    records = await recorded(database_url, [wf.name for wf in workflows])
    assert_nothing_running(records)
    assert [r["status"] for r in records] == ["Cancelled"] * 3
    results = await asyncio.wait_for(asyncio.gather(*pending), 3)
    assert [r["status"] for r in results] == ["Cancelled"] * 3


async def test_execute_rejected_once_shutdown_begins(database_url, ids):
    ex = await started_executor(database_url)
    ran: List[str] = []
    wf = slow_chain(ids, ran, 0.3)
    pending = asyncio.ensure_future(ex.execute(wf))
    [execution_id] = await wait_running(ex, wf.name)

    shutting_down = asyncio.ensure_future(ex.shutdown())
    await asyncio.sleep(0.05)
    assert not shutting_down.done()
    with pytest.raises(cl.NotInitializedError):
        await ex.execute(wf)
    await asyncio.wait_for(shutting_down, 3)
    with pytest.raises(cl.NotInitializedError):
        await asyncio.wait_for(pending, 3)
    assert (await finish_elsewhere(database_url, execution_id))["status"] == "Completed"
    assert_nothing_running(await recorded(database_url, [wf.name]))


async def test_execute_after_shutdown_raises(executor, ids):
    @cl.task(ids("t"))
    def t(ctx):
        return {}

    wf = cl.Workflow(ids.wf(), [t])
    assert (await executor.execute(wf))["status"] == "Completed"
    await executor.shutdown()
    with pytest.raises(cl.NotInitializedError) as info:
        await executor.execute(wf)
    assert isinstance(info.value, RuntimeError)
    # A second shutdown is harmless (the fixture shuts down again too).
    await executor.shutdown(cancel=True)
    with pytest.raises(cl.NotInitializedError):
        await executor.execute(wf, timeout=1)


async def test_shutdown_idle_executor_both_modes(database_url):
    for cancel in (False, True):
        ex = await started_executor(database_url)
        started = time.monotonic()
        await ex.shutdown(cancel=cancel)
        assert time.monotonic() - started < 1.0


async def _until(predicate) -> bool:
    while not predicate():
        await asyncio.sleep(0.02)
    return True

"""Durable executions through the API: submit / wait / cancel / resume, idempotency keys, reasons.

Tasks come from ``durable_worker.define`` (shapes ``chain`` a -> b -> c, ``fan``), registered under
the test's ``ids.prefix`` both here and in child processes, and append their side effects to the
``effects`` file so the tests can count how often each task ran and in which process.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from backend import assert_uuid, by_task, cl, parse_ts
from durable_worker import TaskSet, define, expected_context
from procs import (client, control, effects, exited, finished, has_event, procs, read_events,  # noqa: F401
                   ids_of, ready, select, stopped, submitted_ids, until)


def tasks(ids: Any, effects: Path, control: Path, **options: Any) -> TaskSet:
    return define(ids.prefix, str(effects), str(control), **options)


def history(task_result: Dict[str, Any]) -> List[str]:
    return [h["status"] for h in task_result["history"]]


def attempt_numbers(task_result: Dict[str, Any]) -> List[int]:
    return [h["attempt"] for h in task_result["history"]]


def runs_of(path: Path, run: str, task: str, kind: str = "started") -> int:
    return len(select(read_events(path), run=run, task=task, kind=kind))


async def reason_of(executor: Any, execution_id: str) -> Dict[str, Any]:
    """The execution once it carries a reason (the engine may take a moment to notice)."""
    holder: Dict[str, Any] = {}

    async def has_reason() -> bool:
        holder["record"] = await executor.get_execution(execution_id)
        return holder["record"] is not None and holder["record"].get("reason") is not None

    await until(has_reason, what=f"execution {execution_id} has a reason", timeout=10)
    return holder["record"]


# --- submit / wait -------------------------------------------------------------------------------

async def test_submit_returns_at_once_and_wait_matches_get_execution(executor, ids, effects, control):
    t = tasks(ids, effects, control, hang={"b"})
    wf = t.wf("chain")

    execution_id = await executor.submit(wf, {"run": "r"})
    assert_uuid(execution_id)
    # b cannot end before we release it, so submit returned without waiting for the execution.
    record = await executor.get_execution(execution_id)
    assert record is not None
    assert record["execution_id"] == execution_id
    assert record["status"] in ("Pending", "Running"), record
    assert record["completed_at"] is None
    assert "reason" in record
    listed = await executor.list_executions(workflow=wf.name)
    assert [e["execution_id"] for e in listed] == [execution_id]
    assert listed[0]["status"] in ("Pending", "Running")

    await until(has_event(effects, run="r", task=t.tid("b"), kind="started"), what="b started")
    assert (await executor.get_execution(execution_id))["status"] == "Running"
    (control / "release_b").touch()

    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", result
    assert result["execution_id"] == execution_id
    assert result["reason"] is None
    assert result["error"] is None
    assert result["final_context"] == expected_context("chain", "r")
    assert result == await executor.get_execution(execution_id)
    # A second wait on a finished execution returns the same dict at once.
    assert await executor.wait(execution_id, timeout=5) == result

    # execute() is submit + wait: the same dict as get_execution too.
    again = await executor.execute(wf, {"run": "r2"})
    assert again["status"] == "Completed"
    assert again["execution_id"] != execution_id
    assert again == await executor.get_execution(again["execution_id"])
    assert again["reason"] is None


async def test_wait_timeout_raises_and_execution_goes_on(executor, ids, effects, control):
    t = tasks(ids, effects, control, hang={"b"})
    execution_id = await executor.submit(t.wf("chain"), {"run": "r"})
    await until(has_event(effects, run="r", task=t.tid("b"), kind="started"), what="b started")

    with pytest.raises(TimeoutError):
        await executor.wait(execution_id, timeout=0.2)
    # The timeout ended the wait, not the execution.
    record = await executor.get_execution(execution_id)
    assert record["status"] == "Running", record
    assert record["completed_at"] is None
    with pytest.raises(TimeoutError):
        await executor.wait(execution_id, timeout=0.05)

    (control / "release_b").touch()
    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", result
    assert history(by_task(result)[t.tid("b")]) == ["Completed"]
    assert runs_of(effects, "r", t.tid("b")) == 1
    assert runs_of(effects, "r", t.tid("c"), "finished") == 1


# --- idempotency keys ------------------------------------------------------------------------------

async def test_idempotency_key_in_one_process(executor, ids, effects, control):
    t = tasks(ids, effects, control)
    wf = t.wf("chain")
    key = f"{ids.prefix}-key"

    first = await executor.submit(wf, {"run": "r"}, idempotency_key=key)
    second = await executor.submit(wf, {"run": "r"}, idempotency_key=key)
    assert second == first
    result = await finished(executor, first)
    assert result["status"] == "Completed"
    # After the execution ended the key still names it: nothing runs again.
    assert await executor.submit(wf, {"run": "r"}, idempotency_key=key) == first

    # Concurrent submissions with one new key: one execution.
    racing = await asyncio.gather(*(executor.submit(wf, {"run": "race"}, idempotency_key=f"{key}-race")
                                    for _ in range(10)))
    assert len(set(racing)) == 1, racing
    assert racing[0] != first
    # Another key, or no key, is another execution.
    other = await executor.submit(wf, {"run": "other"}, idempotency_key=f"{key}-other")
    unkeyed = await executor.submit(wf, {"run": "unkeyed"})
    assert len({first, racing[0], other, unkeyed}) == 4
    for execution_id in (racing[0], other, unkeyed):
        assert (await finished(executor, execution_id))["status"] == "Completed"

    listed = await executor.list_executions(workflow=wf.name, limit=100)
    assert sorted(e["execution_id"] for e in listed) == sorted([first, racing[0], other, unkeyed])
    for run in ("r", "race", "other", "unkeyed"):
        for name in ("a", "b", "c"):
            assert runs_of(effects, run, t.tid(name)) == 1, (run, name, read_events(effects))
            assert runs_of(effects, run, t.tid(name), "finished") == 1


async def test_idempotency_key_across_processes(database_url, executor, procs, ids, effects, control):
    """Four processes submit the same ten keys at the same moment: ten executions, one id per key."""
    t = tasks(ids, effects, control)  # this process's executor is the worker that runs them
    go = control / "go"
    keys = 10
    submitters = [procs.start_worker(database_url, ids.prefix, effects, control, name=f"submitter{i}",
                                     worker=False, submit="chain", count=keys, key=f"{ids.prefix}-k",
                                     go=go, exit_after_submit=True)
                  for i in range(4)]
    await ready(*submitters)
    go.touch()
    for proc in submitters:
        assert await exited(proc) == 0, proc.describe()

    got = [submitted_ids(proc) for proc in submitters]
    for i in range(keys):
        assert len({mine[i] for mine in got}) == 1, f"key {i}: {[mine[i] for mine in got]}"
    execution_ids = got[0]
    assert len(set(execution_ids)) == keys

    for i, execution_id in enumerate(execution_ids):
        result = await finished(executor, execution_id)
        assert result["status"] == "Completed", result
        assert result["final_context"] == expected_context("chain", f"r{i}")
    listed = await executor.list_executions(workflow=t.wf("chain").name, limit=100)
    assert sorted(e["execution_id"] for e in listed) == sorted(execution_ids)

    events = read_events(effects)
    assert {e.pid for e in events} == {os.getpid()}, "a submit-only process ran a task"
    for i in range(keys):
        for name in ("a", "b", "c"):
            assert len(select(events, run=f"r{i}", task=t.tid(name), kind="started")) == 1, (i, name)
            assert len(select(events, run=f"r{i}", task=t.tid(name), kind="finished")) == 1, (i, name)


# --- workers, and executions no worker can run -------------------------------------------------------

async def test_submit_only_executor_never_runs_tasks(database_url, client, procs, ids, effects, control):
    # The tasks are registered in this process too, but its only executor is submit-only.
    t = tasks(ids, effects, control)
    execution_id = await client.submit(t.wf("chain"), {"run": "r"})
    with pytest.raises(TimeoutError):
        await client.wait(execution_id, timeout=1)
    record = await reason_of(client, execution_id)
    assert record["status"] == "Pending", record
    assert t.tid("a") in record["reason"], record["reason"]
    assert "no live worker" in record["reason"].lower(), record["reason"]
    assert all(tr["attempts"] == 0 for tr in record["task_results"]), record
    assert read_events(effects) == []

    worker = procs.start_worker(database_url, ids.prefix, effects, control)
    result = await finished(client, execution_id, procs=procs)
    assert result["status"] == "Completed", result
    assert result["reason"] is None
    assert result["final_context"] == expected_context("chain", "r")
    events = read_events(effects)
    assert {e.pid for e in events} == {worker.pid}
    for name in ("a", "b", "c"):
        assert len(select(events, task=t.tid(name), kind="started")) == 1
    assert await stopped(worker) == 0, worker.describe()


async def test_tasks_no_live_worker_has_wait_with_a_reason(database_url, executor, procs, ids, effects, control):
    """A process that alone defines the tasks submits; this process's worker lacks them."""
    submitter = procs.start_worker(database_url, ids.prefix, effects, control, name="submitter", worker=False,
                                   submit="chain", exit_after_submit=True)
    assert await exited(submitter) == 0, submitter.describe()
    [execution_id] = submitted_ids(submitter)

    with pytest.raises(TimeoutError):
        await executor.wait(execution_id, timeout=1)
    record = await reason_of(executor, execution_id)
    assert record["status"] == "Pending", record
    assert record["completed_at"] is None
    reason = record["reason"]
    assert f"{ids.prefix}.a" in reason, reason
    assert "no live worker" in reason.lower(), reason
    pending = await executor.list_executions(status="Pending")
    assert execution_id in [e["execution_id"] for e in pending]
    assert read_events(effects) == []

    worker = procs.start_worker(database_url, ids.prefix, effects, control)
    result = await finished(executor, execution_id, procs=procs)
    assert result["status"] == "Completed", result
    assert result["reason"] is None
    assert result["final_context"] == expected_context("chain", "r0")
    assert {e.pid for e in read_events(effects)} == {worker.pid}
    assert await stopped(worker) == 0, worker.describe()


# --- across processes: wait and cancel ----------------------------------------------------------------

async def test_wait_for_executions_of_another_process(database_url, client, procs, ids, effects, control):
    worker = procs.start_worker(database_url, ids.prefix, effects, control, submit="fan", count=3, width=4)
    execution_ids = await ids_of(worker)
    assert len(set(execution_ids)) == 3
    for i, execution_id in enumerate(execution_ids):
        result = await finished(client, execution_id, procs=procs)
        assert result["status"] == "Completed", result
        assert result["final_context"] == expected_context("fan", f"r{i}", width=4)
        assert result == await client.get_execution(execution_id)
    assert {e.pid for e in read_events(effects)} == {worker.pid}
    assert await stopped(worker) == 0, worker.describe()


async def test_cancel_from_another_process(database_url, client, procs, ids, effects, control):
    """Process A submits and runs a->b->c, b waits forever; this process cancels it."""
    worker = procs.start_worker(database_url, ids.prefix, effects, control, hang=["b"], submit="chain")
    b = f"{ids.prefix}.b"
    await until(has_event(effects, run="r0", task=b, kind="started"), what="b started", watch=[worker])
    [execution_id] = await ids_of(worker)
    assert (await client.get_execution(execution_id))["status"] == "Running"

    cancelled_at = time.monotonic()
    assert await client.cancel(execution_id) is True
    result = await finished(client, execution_id, procs=procs)
    ended_after = time.monotonic() - cancelled_at
    assert result["status"] == "Cancelled", result
    assert result["completed_at"] is not None
    tr = by_task(result)
    assert tr[f"{ids.prefix}.a"]["status"] == "Completed"
    assert tr[b]["status"] == "Cancelled"
    assert history(tr[b]) == ["Cancelled"]
    assert tr[f"{ids.prefix}.c"]["status"] == "Cancelled"
    assert tr[f"{ids.prefix}.c"]["attempts"] == 0

    # The task in process A saw CancelledError.
    await until(has_event(effects, run="r0", task=b, kind="cancelled", pid=worker.pid),
                what="b saw CancelledError in the worker", watch=[worker])
    seen_after = time.monotonic() - cancelled_at
    print(f"\nCROSS-PROCESS CANCEL: cancel() -> execution Cancelled {ended_after:.2f} s, "
          f"-> the task in the other process saw CancelledError {seen_after:.2f} s")
    assert await client.cancel(execution_id) is False
    assert await client.get_execution(execution_id) == result
    events = read_events(effects)
    assert select(events, task=b, kind="finished") == []
    assert select(events, task=f"{ids.prefix}.c") == []
    assert await stopped(worker) == 0, worker.describe()


async def test_cancel_pending_execution(client, ids, effects, control):
    t = tasks(ids, effects, control)
    execution_id = await client.submit(t.wf("chain"), {"run": "r"})
    assert (await client.get_execution(execution_id))["status"] == "Pending"
    assert await client.cancel(execution_id) is True
    result = await finished(client, execution_id)
    assert result["status"] == "Cancelled", result
    for task_result in result["task_results"]:
        assert task_result["status"] == "Cancelled"
        assert task_result["attempts"] == 0
    assert await client.cancel(execution_id) is False


async def test_shutdown_cancel_cancels_what_the_executor_submitted(database_url, client, ids, effects, control):
    t = tasks(ids, effects, control)
    submitter = cl.UnifiedExecutor()
    await submitter.initialize(database_url, worker=False)
    try:
        mine = await submitter.submit(t.wf("chain"), {"run": "mine"})
        theirs = await client.submit(t.wf("chain"), {"run": "theirs"})
    finally:
        await submitter.shutdown(cancel=True)
    assert (await finished(client, mine, timeout=10))["status"] == "Cancelled"
    assert (await client.get_execution(theirs))["status"] == "Pending"


# --- resume --------------------------------------------------------------------------------------

async def test_resume_failed_execution(executor, ids, effects, control):
    t = tasks(ids, effects, control, fail={"b"})
    a, b, c = t.tid("a"), t.tid("b"), t.tid("c")
    failed = await executor.execute(t.wf("chain"), {"run": "r"})
    assert failed["status"] == "Failed", failed
    before = by_task(failed)
    assert before[a]["status"] == "Completed"
    assert before[b]["status"] == "Failed"
    assert "not ready" in before[b]["error"]
    assert before[c]["status"] == "Skipped"
    execution_id = failed["execution_id"]

    (control / "ok_b").touch()
    assert await executor.resume(execution_id) == execution_id
    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", result
    assert result["error"] is None
    assert result["final_context"] == expected_context("chain", "r")
    after = by_task(result)
    # a kept its output and was not run again; b ran a second time; c ran once.
    assert history(after[a]) == ["Completed"]
    assert after[a]["started_at"] == before[a]["started_at"]
    assert history(after[b]) == ["Failed", "Completed"]
    assert attempt_numbers(after[b]) == [1, 2]
    assert after[b]["attempts"] == 2
    assert "not ready" in after[b]["history"][0]["error"]
    assert history(after[c]) == ["Completed"]
    assert runs_of(effects, "r", a) == 1
    assert runs_of(effects, "r", b) == 2
    assert runs_of(effects, "r", b, "finished") == 1
    assert runs_of(effects, "r", c) == 1
    assert [e["execution_id"] for e in await executor.list_executions(workflow=t.wf("chain").name)] == [execution_id]

    with pytest.raises((ValueError, cl.CloacinaError)) as info:
        await executor.resume(execution_id)
    assert "completed" in str(info.value).lower(), str(info.value)


async def test_resume_cancelled_execution(executor, ids, effects, control):
    t = tasks(ids, effects, control, hang={"b"})
    a, b, c = t.tid("a"), t.tid("b"), t.tid("c")
    execution_id = await executor.submit(t.wf("chain"), {"run": "r"})
    await until(has_event(effects, run="r", task=b, kind="started"), what="b started")
    assert await executor.cancel(execution_id) is True
    cancelled = await finished(executor, execution_id)
    assert cancelled["status"] == "Cancelled", cancelled
    await until(has_event(effects, run="r", task=b, kind="cancelled"), what="b saw CancelledError")

    (control / "release_b").touch()
    assert await executor.resume(execution_id) == execution_id
    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", result
    assert result["final_context"] == expected_context("chain", "r")
    tr = by_task(result)
    assert history(tr[a]) == ["Completed"]
    assert history(tr[b]) == ["Cancelled", "Completed"]
    assert attempt_numbers(tr[b]) == [1, 2]
    assert history(tr[c]) == ["Completed"]
    assert runs_of(effects, "r", a) == 1
    assert runs_of(effects, "r", b) == 2
    assert runs_of(effects, "r", c) == 1


async def test_resume_running_or_completed_execution_raises(executor, ids, effects, control):
    t = tasks(ids, effects, control, hang={"b"})
    execution_id = await executor.submit(t.wf("chain"), {"run": "r"})
    await until(has_event(effects, run="r", task=t.tid("b"), kind="started"), what="b started")

    with pytest.raises((ValueError, cl.CloacinaError)) as info:
        await executor.resume(execution_id)
    assert "running" in str(info.value).lower(), str(info.value)

    (control / "release_b").touch()
    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", result
    assert runs_of(effects, "r", t.tid("b")) == 1

    with pytest.raises((ValueError, cl.CloacinaError)) as info:
        await executor.resume(execution_id)
    assert "completed" in str(info.value).lower(), str(info.value)
    assert await executor.get_execution(execution_id) == result


# --- bad arguments ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["wait", "cancel", "resume"])
@pytest.mark.parametrize("bad, error", [("not-a-uuid", ValueError), ("", ValueError), ("1234", ValueError),
                                        (123, TypeError), (None, TypeError), (b"x", TypeError)])
async def test_bad_execution_id(executor, method, bad, error):
    with pytest.raises(error):
        await getattr(executor, method)(bad)


async def test_submit_bad_arguments(executor, ids, effects, control):
    t = tasks(ids, effects, control)
    with pytest.raises(TypeError):
        await executor.submit("not a workflow")
    with pytest.raises(TypeError):
        await executor.submit(t.wf("chain"), {"run": "r"}, idempotency_key=123)
    with pytest.raises(TypeError):
        await executor.submit(t.wf("chain"), {"run": "r"}, "positional-key")
    assert await executor.list_executions(workflow=t.wf("chain").name) == []


async def test_durable_methods_need_initialize(ids, effects, control):
    t = tasks(ids, effects, control)
    ex = cl.UnifiedExecutor()
    some_id = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(cl.NotInitializedError):
        await ex.submit(t.wf("chain"))
    with pytest.raises(cl.NotInitializedError):
        await ex.wait(some_id)
    with pytest.raises(cl.NotInitializedError):
        await ex.resume(some_id)


@pytest.mark.timeout(120)
async def test_list_workers_shows_heartbeats_and_running_tasks(database_url, client, procs, ids, effects, control):
    t = define(ids.prefix, str(effects), str(control))
    worker = procs.start_worker(database_url, ids.prefix, effects, control, hang=["b"])
    [info] = await ready(worker)
    execution_id = await client.submit(t.wf("chain"), {"run": "w"})

    async def running_b() -> bool:
        listed = [w for w in await client.list_workers() if w["pid"] == info["pid"]]
        return bool(listed) and listed[0]["running"] == [{"execution_id": execution_id, "task_id": t.tid("b")}]

    await until(running_b, what="the worker to show it runs b", watch=[worker])
    [me] = [w for w in await client.list_workers() if w["pid"] == info["pid"]]
    assert me["alive"] is True and me["hostname"] == info["hostname"]
    assert {t.tid(n) for n in t.task_names("chain")} <= set(me["task_ids"])
    assert parse_ts(me["heartbeat_at"]) >= parse_ts(me["started_at"])
    (control / "release_b").touch()
    await finished(client, execution_id, procs=procs)
    assert await stopped(worker) == 0

    async def gone() -> bool:
        return all(w["pid"] != info["pid"] for w in await client.list_workers())

    await until(gone, what="a cleanly stopped worker to leave the list")

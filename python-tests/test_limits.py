"""Named limits shared by every worker (flow control): caps on running attempts, keys filled from
the context, stored limits and their errors. Real workflows on the test's database."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from backend import cl
from limits_worker import define as define_limited
from procs import (client, effects, finished, has_event, max_overlap, procs, read_events,  # noqa: F401
                   ready, select, stopped, until)



def fan_of_sleepers(ids, n: int, limits: List[str], seconds: float,
                    spans: Dict[str, Tuple[float, float]]):
    """``root`` -> ``n`` tasks holding ``limits`` that each sleep ``seconds`` and record their span."""

    @cl.task(ids("root"))
    def root(ctx):
        return {}

    tasks = []
    for i in range(n):
        def body(ctx, i=i):
            start = time.monotonic()
            time.sleep(seconds)
            spans[f"t{i}"] = (start, time.monotonic())
            return {f"t{i}": i}
        tasks.append(cl.task(ids(f"t{i}"), dependencies=[root], limits=limits)(body))
    return cl.Workflow(ids.wf(), tasks)


async def test_a_cap_holds_and_is_reached(executor, ids):
    name = ids("api")
    await executor.set_limit(name, concurrency=2)
    spans: Dict[str, Tuple[float, float]] = {}
    wf = fan_of_sleepers(ids, 8, [name], 0.15, spans)
    result = await finished(executor, await executor.submit(wf, {}))
    assert result["status"] == "Completed", result["error"]
    assert len(spans) == 8
    overlap = max_overlap(list(spans.values()))
    assert overlap <= 2, f"{overlap} ran at once under concurrency=2: {spans}"
    assert overlap == 2, f"concurrency=2 ran its tasks one at a time: {spans}"
    listed = {limit["name"]: limit for limit in await executor.list_limits()}
    assert listed[name] == {"name": name, "concurrency": 2, "rate": None, "per": 1.0, "running": 0, "waiting": 0}


async def test_keys_filled_from_the_context_limit_each_tenant_apart(executor, ids):
    await executor.set_limit(ids("tenant:") + "*", concurrency=1)
    spans: Dict[str, Tuple[float, float]] = {}
    wf = fan_of_sleepers(ids, 4, [ids("tenant:") + "{tenant}"], 0.15, spans)
    by_tenant: Dict[str, List[Tuple[float, float]]] = {}
    for tenant in ("a", "b"):
        spans.clear()
        execution_id = await executor.submit(wf, {"tenant": tenant})
        result = await finished(executor, execution_id)
        assert result["status"] == "Completed", result["error"]
        by_tenant[tenant] = list(spans.values())
        assert max_overlap(by_tenant[tenant]) == 1, spans


async def test_raising_a_cap_starts_waiting_tasks(executor, ids):
    name = ids("slow")
    await executor.set_limit(name, concurrency=1)
    spans: Dict[str, Tuple[float, float]] = {}
    wf = fan_of_sleepers(ids, 6, [name], 0.4, spans)
    execution_id = await executor.submit(wf, {})
    deadline = time.monotonic() + 30
    while not spans and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await executor.set_limit(name, concurrency=3)
    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", result["error"]
    assert max_overlap(list(spans.values())) == 3, spans


@pytest.mark.parametrize("kwargs, error, words", [
    ({"concurrency": 0}, ValueError, "concurrency=0"),
    ({"concurrency": -1}, ValueError, "concurrency=-1"),
    ({"rate": 5, "per": 0}, ValueError, "per=0"),
    ({"rate": 5, "per": -2.5}, ValueError, "per=-2.5"),
    ({"concurrency": "8"}, TypeError, "concurrency must be an int"),
    ({"concurrency": True}, TypeError, "not a bool"),
    ({"rate": 1.5}, TypeError, "rate must be an int"),
    ({"per": "1s"}, TypeError, "per must be a number"),
])
async def test_bad_arguments_raise_and_store_nothing(executor, ids, kwargs, error, words):
    with pytest.raises(error, match=words):
        await executor.set_limit(ids("bad"), **kwargs)
    assert ids("bad") not in [limit["name"] for limit in await executor.list_limits()]


async def test_bad_names_and_unknown_limits(executor, ids):
    with pytest.raises(ValueError, match="trailing"):
        await executor.set_limit("a*b", concurrency=1)
    with pytest.raises(ValueError, match="empty"):
        await executor.set_limit("", concurrency=1)
    with pytest.raises(LookupError, match="no limit named"):
        await executor.delete_limit(ids("nothing"))
    with pytest.raises(cl.LimitNotFoundError):
        await executor.delete_limit(ids("nothing"))
    await executor.set_limit(ids("x"), rate=10, per=60)
    await executor.delete_limit(ids("x"))
    assert ids("x") not in [limit["name"] for limit in await executor.list_limits()]


@pytest.mark.parametrize("limits, error, words", [
    ("api", TypeError, "not a str"),
    ([1], TypeError, "str keys"),
    (["a{"], ValueError, "unclosed"),
    (["a{}"], ValueError, "empty"),
])
def test_bad_task_limits_raise_when_decorating(ids, limits, error, words):
    with pytest.raises(error, match=words):
        cl.task(ids("t"), limits=limits)(lambda ctx: ctx)


async def test_a_key_missing_from_the_context_fails_the_task_and_names_it(executor, ids):
    @cl.task(ids("root"))
    def root(ctx):
        return {"other": 1}

    @cl.task(ids("keyed"), dependencies=[root], limits=[ids("tenant:") + "{tenant}"])
    def keyed(ctx):
        return {"ran": True}

    @cl.task(ids("after"), dependencies=[keyed])
    def after(ctx):
        return {"after": True}

    result = await finished(executor, await executor.submit(cl.Workflow(ids.wf(), [after]), {}))
    assert result["status"] == "Failed"
    tasks = {t["task_id"]: t for t in result["task_results"]}
    assert tasks[ids("keyed")]["status"] == "Failed"
    assert "'tenant' is not in the task's input context" in tasks[ids("keyed")]["error"]
    assert tasks[ids("after")]["status"] == "Skipped"


async def test_with_one_slot_ready_tasks_start_highest_priority_first(database_url, ids):
    executor = cl.UnifiedExecutor(max_concurrency=1)
    await executor.initialize(database_url)
    try:
        order: List[str] = []

        @cl.task(ids("root"))
        def root(ctx):
            return {}

        priorities = {"a": 0, "b": 5, "c": -1, "d": 3, "e": 10}
        tasks = []
        for name, priority in priorities.items():
            def body(ctx, name=name):
                order.append(name)
                return {name: True}
            tasks.append(cl.task(ids(name), dependencies=[root], priority=priority)(body))
        result = await finished(executor, await executor.submit(cl.Workflow(ids.wf(), tasks), {}))
        assert result["status"] == "Completed", result["error"]
        assert order == sorted(priorities, key=lambda n: -priorities[n]), order
    finally:
        await executor.shutdown()


@pytest.mark.parametrize("priority, error", [(1.5, TypeError), (True, TypeError), (2_000_000, ValueError)])
def test_bad_priorities_raise_when_decorating(ids, priority, error):
    with pytest.raises(error, match="priority"):
        cl.task(ids("t"), priority=priority)(lambda ctx: ctx)


# --- across worker processes ------------------------------------------------------------------

def start_limits_worker(procs, database_url: str, prefix: str, out, *, name: str, seed: int,
                        sleep: float = 0.03, lease_timeout=None, exact: bool = False):
    ready_path = procs.workdir / f"{name}.ready"
    argv = [str(Path(__file__).resolve().parent / "limits_worker.py"), "--url", database_url,
            "--prefix", prefix, "--out", str(out), "--ready", str(ready_path), "--seed", str(seed),
            "--sleep", repr(sleep)]
    if lease_timeout is not None:
        argv += ["--lease-timeout", repr(lease_timeout)]
    if exact:
        argv.append("--exact")
    return procs.start(argv, name=name, ready_path=ready_path)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_three_workers_never_run_more_than_the_cap_per_key(database_url, client, procs, ids, effects,
                                                                 seed):
    """The property that matters: 300 executions over 5 keys with concurrency=2, 3 processes."""
    prefix = ids.prefix
    await client.set_limit(f"{prefix}.key:*", concurrency=2)
    wf = define_limited(prefix, str(effects), seed=seed)
    workers = [start_limits_worker(procs, database_url, prefix, effects, name=f"w{i}", seed=seed)
               for i in range(3)]
    await ready(*workers)
    submitted = [await client.submit(wf, {"key": i % 5}) for i in range(300)]
    for execution_id in submitted:
        result = await finished(client, execution_id, timeout=120, procs=procs)
        assert result["status"] == "Completed", result["error"]
    events = read_events(effects)
    overlaps = {}
    for key in map(str, range(5)):
        spans: Dict[str, List[float]] = {}
        for event in select(events, run=key):
            spans.setdefault(event.task, []).append(event.ts)
        assert len(spans) == 60 and all(len(s) == 2 for s in spans.values()), key
        overlap = max_overlap([(s[0], s[1]) for s in spans.values()])
        assert overlap <= 2, f"key {key}: {overlap} attempts ran at once under concurrency=2"
        overlaps[key] = overlap
    print(f"\nLIMITS seed {seed}: most attempts at once per key {overlaps}")
    assert max(overlaps.values()) == 2, f"no key ever reached its cap: {overlaps}"
    by_pid = {e.pid for e in select(events, kind="start")}
    assert len(by_pid) > 1, "one worker did all the work"
    listed = {limit["name"]: limit for limit in await client.list_limits()}
    assert listed[f"{prefix}.key:*"]["running"] is None
    for worker in workers:
        assert await stopped(worker) == 0, worker.describe()


async def test_map_instances_hold_their_nodes_keys(executor, ids):
    name = ids("m")
    await executor.set_limit(name, concurrency=2)
    spans: List[Tuple[float, float]] = []

    @cl.task(ids("node"), map_over="xs", limits=[name])
    async def node(ctx):
        start = time.monotonic()
        await asyncio.sleep(0.1)
        spans.append((start, time.monotonic()))
        return ctx["item"]

    result = await finished(executor, await executor.submit(cl.Workflow(ids.wf(), [node]), {"xs": list(range(8))}))
    assert result["status"] == "Completed", result["error"]
    assert result["final_context"][ids("node")] == list(range(8))
    assert max_overlap(spans) == 2, spans


async def test_a_root_whose_key_is_missing_fails_and_the_execution_ends(executor, ids):
    @cl.task(ids("root"), limits=[ids("k:") + "{nope}"])
    def root(ctx):
        return {"ran": True}

    @cl.task(ids("after"), dependencies=[root], trigger_rule="all_done")
    def after(ctx):
        return {"after": True}

    result = await finished(executor, await executor.submit(cl.Workflow(ids.wf(), [after]), {}))
    tasks = {t["task_id"]: t for t in result["task_results"]}
    assert tasks[ids("root")]["status"] == "Failed"
    assert "'nope' is not in the task's input context" in tasks[ids("root")]["error"]
    assert tasks[ids("after")]["status"] == "Completed"
    assert result["status"] == "Failed"


async def test_a_worker_killed_holding_a_unit_gives_it_back_and_nothing_is_lost(database_url, client, procs,
                                                                               ids, effects):
    prefix = ids.prefix
    await client.set_limit(f"{prefix}.key:0", concurrency=1)
    wf = define_limited(prefix, str(effects))
    holder = start_limits_worker(procs, database_url, prefix, effects, name="holder", seed=0, sleep=120,
                                 exact=True, lease_timeout=2.0)
    await ready(holder)
    submitted = [await client.submit(wf, {"key": 0}) for _ in range(3)]
    await until(has_event(effects, kind="start", pid=holder.pid), what="the holder's first start", watch=[holder])
    holder.kill()
    other = start_limits_worker(procs, database_url, prefix, effects, name="other", seed=0, sleep=0.05,
                                exact=True, lease_timeout=2.0)
    await ready(other)
    for execution_id in submitted:
        result = await finished(client, execution_id, timeout=90, procs=procs)
        assert result["status"] == "Completed", result["error"]
    events = read_events(effects)
    assert len(select(events, kind="start", pid=holder.pid)) == 1
    assert not select(events, kind="end", pid=holder.pid)
    spans: Dict[str, List[float]] = {}
    for event in select(events, pid=other.pid):
        spans.setdefault(event.task, []).append(event.ts)
    assert len(spans) == 3, spans  # the killed attempt's execution ran again, and the two waiting
    assert max_overlap([(s[0], s[1]) for s in spans.values()]) == 1, spans
    listed = {limit["name"]: limit for limit in await client.list_limits()}
    assert listed[f"{prefix}.key:0"]["running"] == 0
    assert await stopped(other) == 0, other.describe()


async def reason_while_waiting(executor, execution_id: str) -> str:
    """The first task reason of a Pending task naming a limit, read while the execution waits."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        execution = await executor.get_execution(execution_id)
        for task in execution["task_results"]:
            if task["status"] == "Pending" and "limit" in (task.get("reason") or ""):
                return task["reason"]
        assert execution["status"] in ("Pending", "Running"), f"it never waited for a limit: {execution}"
        await asyncio.sleep(0.01)
    raise AssertionError(f"no task of {execution_id} showed a limit's reason within 30 s")


async def test_a_workflow_key_runs_one_execution_per_customer_at_a_time(executor, ids):
    await executor.set_limit(ids("customer:") + "*", concurrency=1)
    spans: Dict[str, List[float]] = {}

    @cl.task(ids("fetch"))
    async def fetch(ctx):
        spans.setdefault(cl.current_task()["execution_id"], []).append(time.monotonic())
        await asyncio.sleep(0.3)
        return {"fetched": True}

    @cl.task(ids("store"), dependencies=[fetch])
    async def store(ctx):
        await asyncio.sleep(0.3)
        spans[cl.current_task()["execution_id"]].append(time.monotonic())
        return {"stored": True}

    wf = cl.Workflow(ids.wf(), [store], limits=[ids("customer:") + "{customer}"])
    assert wf.limits == [ids("customer:") + "{customer}"]
    customers = ["a", "a", "a", "b", "b"]
    submitted = [await executor.submit(wf, {"customer": c}) for c in customers]
    reason = await reason_while_waiting(executor, submitted[2])
    assert reason.startswith(f"waiting for limit '{ids('customer:')}a' (1 of 1 running)"), reason
    in_use = {limit["name"]: limit for limit in await executor.list_limits()}[ids("customer:") + "a"]
    assert in_use["concurrency"] == 1 and in_use["running"] == 1 and in_use["waiting"] >= 1, in_use
    for execution_id in submitted:
        result = await finished(executor, execution_id)
        assert result["status"] == "Completed", result["error"]
    by_customer = {c: [tuple(spans[e]) for e, cc in zip(submitted, customers) if cc == c] for c in "ab"}
    assert max_overlap(by_customer["a"]) == 1, by_customer
    assert max_overlap(by_customer["b"]) == 1, by_customer
    assert max_overlap([tuple(s) for s in spans.values()]) == 2, spans  # a and b ran beside each other
    listed = {limit["name"]: limit for limit in await executor.list_limits()}
    assert ids("customer:") + "a" not in listed, listed  # its units came back: no longer in use


async def test_two_keys_taken_in_either_order_never_deadlock(executor, ids):
    first, second = ids("k1"), ids("k2")
    await executor.set_limit(first, concurrency=1)
    await executor.set_limit(second, concurrency=1)

    @cl.task(ids("root"))
    def root(ctx):
        return {}

    tasks = []
    for i in range(10):
        keys = [first, second] if i % 2 else [second, first]

        async def body(ctx, i=i):
            await asyncio.sleep(0.02)
            return {f"t{i}": i}
        tasks.append(cl.task(ids(f"t{i}"), dependencies=[root], limits=keys)(body))
    results = [await executor.submit(cl.Workflow(ids.wf(), tasks), {}) for _ in range(3)]
    for execution_id in results:
        result = await finished(executor, execution_id)
        assert result["status"] == "Completed", result["error"]


async def test_a_rate_never_starts_more_than_rate_in_any_window(executor, ids):
    name = ids("rated")
    await executor.set_limit(name, rate=3, per=1.0)
    starts: List[float] = []

    @cl.task(ids("root"))
    def root(ctx):
        return {}

    tasks = []
    for i in range(10):
        async def body(ctx, i=i):
            starts.append(time.time())
            return {f"t{i}": i}
        tasks.append(cl.task(ids(f"t{i}"), dependencies=[root], limits=[name])(body))
    result = await finished(executor, await executor.submit(cl.Workflow(ids.wf(), tasks), {}))
    assert result["status"] == "Completed", result["error"]
    starts.sort()
    # Admission spaces starts by the database's clock; a task notes its start a little after its
    # claim, so windows are measured 50 ms short to allow for that delay.
    for i, first in enumerate(starts):
        in_window = [s for s in starts[i:] if s - first < 1.0 - 0.05]
        assert len(in_window) <= 3, f"{len(in_window)} starts within 1 s under rate=3: {starts}"
    assert starts[-1] - starts[0] >= 2.5, starts  # 10 starts at 3 a second take 3 s


async def test_a_task_that_waited_for_a_limit_shows_no_reason_once_running(executor, ids):
    name = ids("one")
    await executor.set_limit(name, concurrency=1)
    spans: Dict[str, Tuple[float, float]] = {}
    wf = fan_of_sleepers(ids, 2, [name], 0.5, spans)
    execution_id = await executor.submit(wf, {})
    reason = await reason_while_waiting(executor, execution_id)
    assert reason.startswith(f"waiting for limit '{name}' (1 of 1 running)"), reason
    deadline = time.monotonic() + 30
    seen: Dict[str, Any] = {}
    while len(seen) < 2 and time.monotonic() < deadline:
        for task in (await executor.get_execution(execution_id))["task_results"]:
            if task["status"] == "Running" and task["task_id"] != ids("root"):
                seen[task["task_id"]] = task.get("reason")
        await asyncio.sleep(0.02)
    assert len(seen) == 2, f"not both tasks were seen Running: {seen}"
    assert all(r is None for r in seen.values()), seen
    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", result["error"]

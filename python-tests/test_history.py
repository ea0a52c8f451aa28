"""Executions are durable: read back by id, listed with filters, shared across executors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

from backend import by_task, cl, parse_ts


def make_workflows(ids):
    @cl.task(ids("ok"))
    def ok(ctx):
        return {"n": ctx.get("n", 0) + 1}

    @cl.task(ids("bad"))
    def bad(ctx):
        raise ValueError("nope")

    return cl.Workflow(ids.wf("good"), [ok]), cl.Workflow(ids.wf("bad"), [bad])


async def test_get_execution_returns_same_record(executor, ids):
    @cl.task(ids("a"))
    def a(ctx):
        return {"a": [1, {"b": "ü"}]}

    @cl.task(ids("b"), dependencies=[a])
    async def b(ctx):
        return {"b": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [b]), {"in": 1})
    stored = await executor.get_execution(result["execution_id"])
    assert stored == result
    assert stored is not result


async def test_list_executions_filters_order_and_limit(executor, ids):
    good, bad = make_workflows(ids)
    order = []
    for i in range(3):
        order.append(("good", (await executor.execute(good, {"n": i}))["execution_id"]))
        await asyncio.sleep(0.01)
    for _ in range(2):
        order.append(("bad", (await executor.execute(bad))["execution_id"]))
        await asyncio.sleep(0.01)

    everything = await executor.list_executions()
    assert [e["execution_id"] for e in everything] == [eid for _, eid in reversed(order)]
    started = [parse_ts(e["started_at"]) for e in everything]
    assert started == sorted(started, reverse=True)
    for entry in everything:
        assert entry["workflow_name"] in (good.name, bad.name)
        assert entry["status"] in ("Completed", "Failed")

    only_good = await executor.list_executions(workflow=good.name)
    assert [e["execution_id"] for e in only_good] == [eid for k, eid in reversed(order) if k == "good"]
    assert {e["status"] for e in only_good} == {"Completed"}

    failed = await executor.list_executions(status="Failed")
    assert [e["execution_id"] for e in failed] == [eid for k, eid in reversed(order) if k == "bad"]
    assert {e["workflow_name"] for e in failed} == {bad.name}

    assert await executor.list_executions(workflow=good.name, status="Failed") == []
    assert await executor.list_executions(workflow=ids.wf("unknown")) == []

    limited = await executor.list_executions(limit=2)
    assert [e["execution_id"] for e in limited] == [eid for _, eid in reversed(order)][:2]
    limited_good = await executor.list_executions(workflow=good.name, limit=1)
    assert [e["execution_id"] for e in limited_good] == [order[2][1]]


async def test_list_executions_default_limit_is_50(executor, ids):
    @cl.task(ids("tiny"))
    def tiny(ctx):
        return None

    wf = cl.Workflow(ids.wf(), [tiny])
    await asyncio.gather(*(executor.execute(wf) for _ in range(55)))
    assert len(await executor.list_executions()) == 50
    assert len(await executor.list_executions(limit=100)) == 55


async def test_listed_entries_match_get_execution(executor, ids):
    good, bad = make_workflows(ids)
    await executor.execute(good)
    await executor.execute(bad)
    for entry in await executor.list_executions():
        stored = await executor.get_execution(entry["execution_id"])
        for key, value in entry.items():
            assert stored[key] == value, key


async def test_new_executor_sees_history(database_url, ids):
    good, bad = make_workflows(ids)
    first = cl.UnifiedExecutor()
    await first.initialize(database_url)
    ok = await first.execute(good, {"n": 41})
    failed = await first.execute(bad)
    await first.shutdown()

    second = cl.UnifiedExecutor()
    await second.initialize(database_url)
    try:
        assert await second.get_execution(ok["execution_id"]) == ok
        assert await second.get_execution(failed["execution_id"]) == failed
        assert [e["execution_id"] for e in await second.list_executions()] == [
            failed["execution_id"], ok["execution_id"]]
        again = await second.execute(good, {"n": 1})
        assert again["final_context"] == {"n": 2}
        assert len(await second.list_executions(workflow=good.name)) == 2
    finally:
        await second.shutdown()


async def test_concurrent_executions_are_all_recorded(executor, ids):
    @cl.task(ids("work"))
    async def work(ctx):
        await asyncio.sleep(0.01 * (ctx["i"] % 3))
        return {"done": ctx["i"]}

    wf = cl.Workflow(ids.wf(), [work])
    results = await asyncio.gather(*(executor.execute(wf, {"i": i}) for i in range(20)))
    listed = await executor.list_executions(workflow=wf.name, limit=100)
    assert {e["execution_id"] for e in listed} == {r["execution_id"] for r in results}
    for r in results:
        stored = await executor.get_execution(r["execution_id"])
        assert stored["final_context"]["done"] == r["final_context"]["i"]


CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from backend import cl

    url, label, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])

    @cl.task("child.step1")
    def step1(ctx):
        return {"who": ctx["label"]}

    @cl.task("child.step2", dependencies=[step1])
    async def step2(ctx):
        await asyncio.sleep(0.01)
        return {"seq": ctx["seq"] * 2}

    async def main():
        ex = cl.UnifiedExecutor()
        await ex.initialize(url)
        ids = []
        try:
            wf = cl.Workflow("child-workflow", [step2])
            for seq in range(runs):
                result = await ex.execute(wf, {"label": label, "seq": seq})
                assert result["status"] == "Completed", result
                ids.append(result["execution_id"])
        finally:
            await ex.shutdown()
        print(json.dumps(ids))

    asyncio.run(main())
    """
)


async def test_two_processes_share_one_database(database_url, subprocess_env, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    runs = 4
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(script), database_url, label, str(runs),
            env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for label in ("left", "right")
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), timeout=50)
    child_ids = {}
    for label, proc, (out, err) in zip(("left", "right"), procs, outputs):
        assert proc.returncode == 0, err.decode()
        child_ids[label] = json.loads(out.decode().strip().splitlines()[-1])
        assert len(child_ids[label]) == runs

    reader = cl.UnifiedExecutor()
    await reader.initialize(database_url)
    try:
        listed = await reader.list_executions(workflow="child-workflow", limit=100)
        assert {e["execution_id"] for e in listed} == set(child_ids["left"]) | set(child_ids["right"])
        assert {e["status"] for e in listed} == {"Completed"}
        for label, eids in child_ids.items():
            for seq, eid in enumerate(eids):
                stored = await reader.get_execution(eid)
                assert stored["final_context"] == {"label": label, "seq": seq * 2, "who": label}
                assert [t["status"] for t in by_task(stored).values()] == ["Completed", "Completed"]
    finally:
        await reader.shutdown()


async def test_list_executions_pages_with_offset(executor, ids):
    @cl.task(task_id=ids("one"))
    def one(ctx):
        return {}

    wf = cl.Workflow(ids.wf(), tasks=[one])
    made = [(await executor.execute(wf, {"i": i}))["execution_id"] for i in range(5)]
    pages = [await executor.list_executions(workflow=wf.name, limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [[e["execution_id"] for e in page] for page in pages] == [
        made[4:2:-1], made[2:0:-1], made[0:1], []]
    with pytest.raises(ValueError, match="offset"):
        await executor.list_executions(offset=-1)
    with pytest.raises(TypeError, match="offset"):
        await executor.list_executions(offset="2")

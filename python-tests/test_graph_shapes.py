"""Real workflows of every common graph shape run to completion."""

from __future__ import annotations

import pytest

from backend import assert_uuid, by_task, cl, parse_ts, statuses


def assert_topological(task_ids, edges):
    pos = {t: i for i, t in enumerate(task_ids)}
    for upstream, downstream in edges:
        assert pos[upstream] < pos[downstream], f"{upstream} must precede {downstream} in {task_ids}"


async def test_single_task_result_shape(executor, ids):
    @cl.task(ids("only"))
    def only(ctx):
        return {"doubled": ctx["n"] * 2}

    wf = cl.Workflow(ids.wf(), [only])
    assert wf.task_ids == [ids("only")]
    result = await executor.execute(wf, {"n": 21})

    assert_uuid(result["execution_id"])
    assert result["workflow_name"] == ids.wf()
    assert result["workflow_version"] == wf.version
    assert result["status"] == "Completed"
    assert result["error"] is None
    assert result["final_context"] == {"n": 21, "doubled": 42}
    assert parse_ts(result["started_at"]) <= parse_ts(result["completed_at"])

    [tr] = result["task_results"]
    assert tr["task_id"] == ids("only")
    assert tr["status"] == "Completed"
    assert tr["attempts"] == 1
    assert tr["error"] is None
    assert tr["traceback"] is None
    assert parse_ts(result["started_at"]) <= parse_ts(tr["started_at"]) <= parse_ts(tr["completed_at"])
    assert parse_ts(tr["completed_at"]) <= parse_ts(result["completed_at"])


async def test_chain_runs_in_order_and_passes_context(executor, ids):
    @cl.task(ids("a"))
    def a(ctx):
        return {"trail": ctx["trail"] + ["a"]}

    @cl.task(ids("b"), dependencies=[a])
    def b(ctx):
        return {"trail": ctx["trail"] + ["b"]}

    @cl.task(ids("c"), dependencies=[ids("b")])
    def c(ctx):
        return {"trail": ctx["trail"] + ["c"]}

    wf = cl.Workflow(ids.wf(), [c])
    assert wf.task_ids == [ids("a"), ids("b"), ids("c")]
    result = await executor.execute(wf, {"trail": ["start"]})

    assert result["status"] == "Completed"
    assert result["final_context"]["trail"] == ["start", "a", "b", "c"]
    assert [r["task_id"] for r in result["task_results"]] == wf.task_ids
    tr = by_task(result)
    assert parse_ts(tr[ids("a")]["completed_at"]) <= parse_ts(tr[ids("b")]["started_at"])
    assert parse_ts(tr[ids("b")]["completed_at"]) <= parse_ts(tr[ids("c")]["started_at"])


async def test_diamond_join_sees_both_branches(executor, ids):
    seen = {}

    @cl.task(ids("root"))
    def root(ctx):
        return {"base": 10}

    @cl.task(ids("left"), dependencies=[root])
    def left(ctx):
        return {"left": ctx["base"] + 1}

    @cl.task(ids("right"), dependencies=[root])
    async def right(ctx):
        return {"right": ctx["base"] + 2}

    @cl.task(ids("join"), dependencies=[left, right])
    def join(ctx):
        seen.update(ctx)
        return {"total": ctx["left"] + ctx["right"]}

    wf = cl.Workflow(ids.wf(), [join])
    assert set(wf.task_ids) == {ids("root"), ids("left"), ids("right"), ids("join")}
    assert_topological(wf.task_ids, [(ids("root"), ids("left")), (ids("root"), ids("right")),
                                     (ids("left"), ids("join")), (ids("right"), ids("join"))])
    result = await executor.execute(wf)

    assert result["status"] == "Completed"
    assert seen == {"base": 10, "left": 11, "right": 12}
    assert result["final_context"] == {"base": 10, "left": 11, "right": 12, "total": 23}
    assert set(statuses(result).values()) == {"Completed"}


async def test_fan_out_fan_in(executor, ids):
    @cl.task(ids("split"))
    def split(ctx):
        return {"items": list(range(1, 6))}

    def make_worker(i):
        def work(ctx):
            return {f"part{i}": ctx["items"][i] ** 2}

        return cl.task(ids(f"work{i}"), dependencies=[split])(work)

    workers = [make_worker(i) for i in range(5)]

    @cl.task(ids("gather"), dependencies=workers)
    def gather(ctx):
        return {"sum": sum(ctx[f"part{i}"] for i in range(5))}

    wf = cl.Workflow(ids.wf(), [gather])
    assert len(wf.task_ids) == 7
    assert wf.task_ids[0] == ids("split") and wf.task_ids[-1] == ids("gather")
    result = await executor.execute(wf)

    assert result["status"] == "Completed"
    assert result["final_context"]["sum"] == 1 + 4 + 9 + 16 + 25
    assert all(r["attempts"] == 1 for r in result["task_results"])


async def test_wide_parallel_independent_tasks(executor, ids):
    def make_leaf(i):
        def leaf(ctx):
            return {f"leaf{i}": i}

        return cl.task(ids(f"leaf{i}"))(leaf)

    tasks = [make_leaf(i) for i in range(24)]

    wf = cl.Workflow(ids.wf(), tasks)
    assert sorted(wf.task_ids) == sorted(ids(f"leaf{i}") for i in range(24))
    result = await executor.execute(wf, {"seed": True})

    assert result["status"] == "Completed"
    expected = {f"leaf{i}": i for i in range(24)}
    expected["seed"] = True
    assert result["final_context"] == expected
    assert len(result["task_results"]) == 24


async def test_disconnected_components_do_not_see_each_other(executor, ids):
    seen = {}

    @cl.task(ids("a1"))
    def a1(ctx):
        return {"from_a1": 1}

    @cl.task(ids("a2"), dependencies=[a1])
    def a2(ctx):
        seen["a2"] = dict(ctx)
        return {"from_a2": 2}

    @cl.task(ids("b1"))
    async def b1(ctx):
        return {"from_b1": 3}

    @cl.task(ids("b2"), dependencies=[b1])
    def b2(ctx):
        seen["b2"] = dict(ctx)
        return {"from_b2": 4}

    wf = cl.Workflow(ids.wf(), [a2, b2])
    assert set(wf.task_ids) == {ids("a1"), ids("a2"), ids("b1"), ids("b2")}
    result = await executor.execute(wf, {"input": "x"})

    assert result["status"] == "Completed"
    assert seen["a2"] == {"input": "x", "from_a1": 1}
    assert seen["b2"] == {"input": "x", "from_b1": 3}
    assert result["final_context"] == {"input": "x", "from_a1": 1, "from_a2": 2, "from_b1": 3, "from_b2": 4}


async def test_transitive_dependencies_join_automatically(executor, ids):
    @cl.task(ids("extract"))
    def extract(ctx):
        return {"rows": [1, 2, 3]}

    @cl.task(ids("transform"), dependencies=[extract])
    def transform(ctx):
        return {"rows": [r * 10 for r in ctx["rows"]]}

    @cl.task(ids("load"), dependencies=[transform])
    def load(ctx):
        return {"loaded": len(ctx["rows"]), "sum": sum(ctx["rows"])}

    wf = cl.Workflow(ids.wf(), [ids("load")])
    assert wf.task_ids == [ids("extract"), ids("transform"), ids("load")]
    result = await executor.execute(wf)
    assert result["final_context"] == {"rows": [10, 20, 30], "loaded": 3, "sum": 60}


@pytest.mark.sqlite_only
async def test_memory_database_runs_workflow(memory_executor, ids):
    @cl.task(ids("a"))
    def a(ctx):
        return {"a": "done"}

    @cl.task(ids("b"), dependencies=[a])
    async def b(ctx):
        return {"b": ctx["a"] + "!"}

    wf = cl.Workflow(ids.wf(), [b])
    result = await memory_executor.execute(wf)
    assert result["status"] == "Completed"
    assert result["final_context"] == {"a": "done", "b": "done!"}
    assert await memory_executor.get_execution(result["execution_id"]) == result


async def test_task_results_name_each_tasks_dependencies(executor, ids):
    @cl.task(task_id=ids("a"))
    def a(ctx):
        return {}

    @cl.task(task_id=ids("b"), dependencies=[a])
    def b(ctx):
        return {}

    @cl.task(task_id=ids("c"), dependencies=[a, b])
    async def c(ctx):
        return {}

    result = await executor.execute(cl.Workflow(ids.wf(), tasks=[c]))
    stored = await executor.get_execution(result["execution_id"])
    for record in (result, stored):
        assert {t["task_id"]: t["dependencies"] for t in record["task_results"]} == {
            ids("a"): [], ids("b"): [ids("a")], ids("c"): [ids("a"), ids("b")]}

"""How task outputs merge into the context, and what values round-trip."""

from __future__ import annotations

import copy

import pytest

from backend import cl

UNICODE = "héllo ✓ 日本語 🐍 \u0000 \"quoted\" \\ back\nline"

NESTED = {
    "str": UNICODE,
    "empty_str": "",
    "ключ": "значение",
    "🔑": ["emoji key"],
    "ints": [0, 1, -1, 2**31, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1],
    "floats": [0.1, -2.5, 1e300, -1e-300, 3.141592653589793, 0.0, 1.0],
    "bools": [True, False],
    "none": None,
    "empty_list": [],
    "empty_dict": {},
    "deep": {"a": [{"b": [{"c": {"d": [1, [2, [3, {"e": None}]]]}}]}]},
}


def deep_types(value):
    """Structure of Python types, so 1 vs 1.0 vs True differences are visible."""
    if isinstance(value, dict):
        return {k: deep_types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_types(v) for v in value]
    return type(value).__name__


async def test_input_context_reaches_tasks_and_final_context(executor, ids):
    seen = {}

    @cl.task(ids("read"))
    def read(ctx):
        seen.update(ctx)
        return {"out": ctx["in"].upper()}

    result = await executor.execute(cl.Workflow(ids.wf(), [read]), {"in": "abc", "keep": [1]})
    assert seen == {"in": "abc", "keep": [1]}
    assert result["final_context"] == {"in": "abc", "keep": [1], "out": "ABC"}


async def test_none_context_means_empty(executor, ids):
    seen = []

    @cl.task(ids("read"))
    def read(ctx):
        seen.append(dict(ctx))
        return {}

    result = await executor.execute(cl.Workflow(ids.wf(), [read]))
    assert seen == [{}]
    assert result["final_context"] == {}
    result = await executor.execute(cl.Workflow(ids.wf(), [read]), None)
    assert result["final_context"] == {}


async def test_downstream_output_overrides_upstream_and_input(executor, ids):
    @cl.task(ids("first"))
    def first(ctx):
        assert ctx["k"] == "input"
        return {"k": "first", "only_first": 1}

    @cl.task(ids("second"), dependencies=[first])
    def second(ctx):
        assert ctx["k"] == "first"
        return {"k": "second"}

    result = await executor.execute(cl.Workflow(ids.wf(), [second]), {"k": "input"})
    assert result["status"] == "Completed", result
    assert result["final_context"] == {"k": "second", "only_first": 1}


async def test_conflicting_parallel_outputs_resolved_by_topological_order(executor, ids):
    seen = {}
    branch_ids = [ids(f"branch{i}") for i in range(4)]
    def make_branch(tid):
        def branch(ctx):
            return {"winner": tid, tid: True}

        return cl.task(tid)(branch)

    branches = [make_branch(tid) for tid in branch_ids]

    @cl.task(ids("join"), dependencies=branches)
    def join(ctx):
        seen.update(ctx)
        return None

    wf = cl.Workflow(ids.wf(), [join])
    last_branch = [t for t in wf.task_ids if t in branch_ids][-1]
    for _ in range(3):
        result = await executor.execute(wf)
        assert result["status"] == "Completed"
        assert result["final_context"]["winner"] == last_branch
        assert seen["winner"] == last_branch
        assert all(result["final_context"][t] is True for t in branch_ids)


async def test_unrelated_later_task_wins_conflict_in_final_context(executor, ids):
    @cl.task(ids("slow"))
    def slow(ctx):
        import time

        time.sleep(0.2)
        return {"shared": "slow"}

    @cl.task(ids("fast"))
    def fast(ctx):
        return {"shared": "fast"}

    wf = cl.Workflow(ids.wf(), [slow, fast])
    expected = "slow" if wf.task_ids.index(ids("slow")) > wf.task_ids.index(ids("fast")) else "fast"
    result = await executor.execute(wf)
    assert result["final_context"]["shared"] == expected


async def test_none_return_keeps_in_place_changes(executor, ids):
    @cl.task(ids("mutate"))
    def mutate(ctx):
        ctx["added"] = "yes"
        ctx["nested"]["inner"].append(3)

    @cl.task(ids("check"), dependencies=[mutate])
    def check(ctx):
        return {"check_saw": sorted(ctx)}

    wf = cl.Workflow(ids.wf(), [check])
    result = await executor.execute(wf, {"nested": {"inner": [1, 2]}, "kept": 0})
    assert result["status"] == "Completed"
    final = result["final_context"]
    assert final["added"] == "yes"
    assert final["nested"] == {"inner": [1, 2, 3]}
    assert final["kept"] == 0
    assert final["check_saw"] == ["added", "kept", "nested"]


async def test_none_return_without_changes_keeps_context(executor, ids):
    @cl.task(ids("noop"))
    def noop(ctx):
        return None

    result = await executor.execute(cl.Workflow(ids.wf(), [noop]), {"a": 1})
    assert result["status"] == "Completed"
    assert result["final_context"] == {"a": 1}


async def test_returned_dict_merges_not_replaces(executor, ids):
    @cl.task(ids("partial"))
    def partial(ctx):
        return {"b": 2}

    result = await executor.execute(cl.Workflow(ids.wf(), [partial]), {"a": 1})
    assert result["final_context"] == {"a": 1, "b": 2}


@pytest.mark.parametrize("where", ["input", "output"])
async def test_values_round_trip_exactly(executor, ids, where):
    seen = {}

    @cl.task(ids("echo"))
    def echo(ctx):
        seen.update(copy.deepcopy(ctx))
        return copy.deepcopy(NESTED) if where == "output" else None

    result = await executor.execute(cl.Workflow(ids.wf(), [echo]), NESTED if where == "input" else {})
    assert result["status"] == "Completed", result
    final = result["final_context"]
    assert final == NESTED
    assert deep_types(final) == deep_types(NESTED)
    if where == "input":
        assert seen == NESTED
        assert deep_types(seen) == deep_types(NESTED)

    stored = await executor.get_execution(result["execution_id"])
    assert stored["final_context"] == NESTED
    assert deep_types(stored["final_context"]) == deep_types(NESTED)


async def test_large_context_round_trips(executor, ids):
    big = {f"key{i}": {"values": list(range(50)), "text": "x" * 200} for i in range(200)}

    @cl.task(ids("grow"))
    def grow(ctx):
        return {"count": len(ctx)}

    result = await executor.execute(cl.Workflow(ids.wf(), [grow]), big)
    assert result["status"] == "Completed"
    assert result["final_context"] == {**big, "count": 200}

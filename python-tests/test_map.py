"""Dynamic map: a task run once per element of a list in its input context (docs/map.md).

A mapped task ("the node", ``@task(map_over=...)``) runs one instance per element; instance ``i``
sees ``ctx[map_item] = element`` and ``current_task()["map_index"] == i``; the node's output is
``{collect_as or task_id: [v0, v1, ...]}`` in index order. Most tests run in this process (the
``executor`` fixture); the last ones share a map among worker processes (``map_worker.py``) and
SIGKILL one of them in the middle of it.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import random
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest

from backend import by_task, cl, parse_ts
from map_worker import define as define_map_workflow, value_of
from procs import (Proc, Procs, client, effects, finished, max_overlap, procs, read_events, ready,  # noqa: F401
                   select, stopped, summary, until)

MAP_COUNT_KEYS = {"count", "pending", "running", "completed", "failed", "skipped", "cancelled"}
INSTANCE_KEYS = {"map_index", "status", "attempts", "error", "started_at", "completed_at", "child_execution_id"}
LIMIT = 100_000  # the most elements a map may have


async def run(executor: Any, workflow: Any, context: Optional[Dict[str, Any]] = None, *,
              timeout: float = 30) -> Dict[str, Any]:
    """Submits ``workflow`` and waits for it, failing readably (not hanging) past ``timeout``."""
    execution_id = await executor.submit(workflow, context)
    return await finished(executor, execution_id, timeout=timeout)


def counts(**nonzero: int) -> Dict[str, int]:
    """A node's map counts: the given ones, every other count 0."""
    base = {key: 0 for key in MAP_COUNT_KEYS}
    base.update(nonzero)
    return base


async def all_instances(executor: Any, execution_id: str, task_id: str) -> List[Dict[str, Any]]:
    return list(await executor.list_task_instances(execution_id, task_id, limit=10_000))


# --- values, items, indices -----------------------------------------------------------------------

async def test_values_in_index_order_with_default_item_and_map_index(executor, ids):
    """Instances finish in scrambled order; the list is in index order. Each instance sees its element
    as ctx["item"], its index in current_task(), the other keys of its input but not the list."""
    items = [f"f{i}" for i in range(12)]
    seen: Dict[int, Dict[str, Any]] = {}

    @cl.task(ids("src"))
    def src(ctx):
        return {"files": items, "other": "kept", "root_index": cl.current_task()["map_index"],
                "root_has_index": "map_index" in cl.current_task()}

    @cl.task(ids("m"), dependencies=[src], map_over="files")
    async def m(ctx):
        me = cl.current_task()
        # Later indices finish first.
        await asyncio.sleep(0.01 * (len(items) - me["map_index"]))
        seen[me["map_index"]] = {"item": ctx["item"], "keys": sorted(ctx), "execution_id": me["execution_id"]}
        return ctx["item"].upper()

    @cl.task(ids("after"), dependencies=[m])
    def after(ctx):
        return {"after": list(ctx[ids("m")]), "after_index": cl.current_task()["map_index"]}

    result = await run(executor, cl.Workflow(ids.wf(), [after]), {"run": "r"})
    assert result["status"] == "Completed", summary(result)
    out = result["final_context"]
    expected = [item.upper() for item in items]
    assert out[ids("m")] == expected
    assert out["after"] == expected
    assert out["root_index"] is None and out["root_has_index"] is True
    assert out["after_index"] is None
    assert sorted(seen) == list(range(len(items)))
    for i, view in seen.items():
        assert view["item"] == items[i]
        assert view["execution_id"] == result["execution_id"]
        # The list the node maps over is not handed to its instances; everything else is.
        assert "files" not in view["keys"], view
        assert {"item", "other", "run", "root_index"} <= set(view["keys"]), view
    assert by_task(result)[ids("m")]["status"] == "Completed"


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_custom_map_item_name(executor, ids, kind):
    seen: List[Tuple[int, Any, bool]] = []

    @cl.task(ids("src"))
    def src(ctx):
        return {"orders": [{"id": 7}, {"id": 8}, {"id": 9}]}

    def body(ctx):
        seen.append((cl.current_task()["map_index"], ctx["order"], "item" in ctx))
        return ctx["order"]["id"] * 10

    if kind == "sync":
        @cl.task(ids("m"), dependencies=[src], map_over="orders", map_item="order")
        def m(ctx):
            return body(ctx)
    else:
        @cl.task(ids("m"), dependencies=[src], map_over="orders", map_item="order")
        async def m(ctx):
            return body(ctx)

    result = await run(executor, cl.Workflow(ids.wf(), [m]))
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"][ids("m")] == [70, 80, 90]
    assert sorted(seen, key=lambda s: s[0]) == [(0, {"id": 7}, False), (1, {"id": 8}, False),
                                                 (2, {"id": 9}, False)]


async def test_instances_may_return_any_json_value(executor, ids):
    values: List[Any] = [{"a": 1, "nested": {"b": [1, 2]}}, [1, "x", None], "text", "", 3, -2, 2.5, None,
                         True, False, {}, [], "ünïcødé"]

    @cl.task(ids("m"), map_over="idx")
    def m(ctx):
        return values[ctx["item"]]

    result = await run(executor, cl.Workflow(ids.wf(), [m]), {"idx": list(range(len(values)))})
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"][ids("m")] == values
    assert by_task(result)[ids("m")]["map"] == counts(count=len(values), completed=len(values))


@pytest.mark.parametrize("source", ["input", "upstream"])
async def test_dotted_map_over_reaches_into_nested_dicts(executor, ids, source):
    """The list may come from the input or from an upstream task run in this process (whose output
    object must not reach an instance with the list still in it). Instances changing their context
    in place do not change their siblings' contexts."""
    seen: List[Dict[str, Any]] = []
    batch = {"files": ["a", "bb", "ccc", "dddd", "eeeee", "f"], "name": "b1", "inner": {"x": 1}}

    @cl.task(ids("src"))
    def src(ctx):
        return {"batch": {**batch, "files": list(batch["files"]), "inner": {"x": 1}}, "top": 1}

    @cl.task(ids("m"), dependencies=[src] if source == "upstream" else [], map_over="batch.files", map_item="f")
    def m(ctx):
        seen.append({"f": ctx["f"], "batch": copy.deepcopy(ctx["batch"]), "top": ctx["top"]})
        ctx["batch"]["name"] = f"changed by {ctx['f']}"
        ctx["batch"]["inner"]["x"] = 2
        time.sleep(0.01)
        return len(ctx["f"])

    wf = cl.Workflow(ids.wf(), [m])
    result = await run(executor, wf, {"batch": batch, "top": 1} if source == "input" else {})
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"][ids("m")] == [1, 2, 3, 4, 5, 1]
    assert sorted(s["f"] for s in seen) == sorted(batch["files"])
    for view in seen:
        # "files" is taken out of "batch" in each instance; the other keys of "batch" stay.
        assert view["batch"] == {"name": "b1", "inner": {"x": 1}}, view
        assert view["top"] == 1
    assert result["final_context"]["batch"] == batch


async def test_collect_as_names_the_output_key(executor, ids):
    @cl.task(ids("m"), map_over="xs", collect_as="squares")
    def m(ctx):
        return ctx["item"] ** 2

    @cl.task(ids("after"), dependencies=[m])
    def after(ctx):
        return {"sum": sum(ctx["squares"]), "has_task_key": ids("m") in ctx}

    result = await run(executor, cl.Workflow(ids.wf(), [after]), {"xs": [1, 2, 3, 4]})
    assert result["status"] == "Completed", summary(result)
    out = result["final_context"]
    assert out["squares"] == [1, 4, 9, 16]
    assert ids("m") not in out
    assert out["sum"] == 30 and out["has_task_key"] is False


async def test_skipping_instance_leaves_none_and_node_completes(executor, ids):
    @cl.task(ids("m"), map_over="xs")
    def m(ctx):
        if ctx["item"] == 2:
            raise cl.SkipTask("nothing to do for 2")
        return ctx["item"]

    result = await run(executor, cl.Workflow(ids.wf(), [m]), {"xs": [0, 1, 2, 3]})
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"][ids("m")] == [0, 1, None, 3]
    node = by_task(result)[ids("m")]
    assert node["status"] == "Completed"
    assert node["map"] == counts(count=4, completed=3, skipped=1)
    statuses = [i["status"] for i in await all_instances(executor, result["execution_id"], ids("m"))]
    assert statuses == ["Completed", "Completed", "Skipped", "Completed"]


@pytest.mark.parametrize("options", [
    {"map_item": "x"}, {"map_limit": 2}, {"collect_as": "out"},
    {"map_over": "xs", "map_limit": 0}, {"map_over": "xs", "map_limit": -1},
])
def test_bad_map_options_raise_when_decorating(ids, options):
    with pytest.raises((ValueError, TypeError)) as info:
        @cl.task(ids("bad"), **options)
        def bad(ctx):
            return {}
    named = [name for name in options if name != "map_over"] or ["map_limit"]
    assert any(name in str(info.value) for name in named + ["map_over"]), str(info.value)


# --- empty, missing, wrong type, too long ----------------------------------------------------------

async def test_empty_list_completes_node_with_empty_list_and_dependents_run(executor, ids):
    ran: List[str] = []

    @cl.task(ids("m"), map_over="files")
    def m(ctx):
        ran.append("instance")
        return 1

    @cl.task(ids("after"), dependencies=[m])
    def after(ctx):
        ran.append("after")
        return {"got": ctx[ids("m")]}

    result = await run(executor, cl.Workflow(ids.wf(), [after]), {"files": []})
    assert result["status"] == "Completed", summary(result)
    assert ran == ["after"]
    assert result["final_context"][ids("m")] == []
    assert result["final_context"]["got"] == []
    node = by_task(result)[ids("m")]
    assert node["status"] == "Completed"
    assert node["map"] == counts(count=0)
    assert await executor.list_task_instances(result["execution_id"], ids("m")) == []


def _assert_node_failed_without_instances(result: Dict[str, Any], node_id: str, after_id: str) -> str:
    assert result["status"] == "Failed", summary(result)
    tr = by_task(result)
    assert tr[node_id]["status"] == "Failed", summary(result)
    assert tr[after_id]["status"] == "Skipped", summary(result)
    error = tr[node_id]["error"]
    assert isinstance(error, str), summary(result)
    return error


async def test_missing_key_fails_node(executor, ids):
    ran: List[int] = []

    @cl.task(ids("m"), map_over="files")
    def m(ctx):
        ran.append(1)
        return 1

    @cl.task(ids("after"), dependencies=[m])
    def after(ctx):
        return {"after": True}

    result = await run(executor, cl.Workflow(ids.wf(), [after]), {"other": [1, 2]})
    error = _assert_node_failed_without_instances(result, ids("m"), ids("after"))
    assert "map_over key 'files' is not in the task's input context" in error, error
    assert ran == []
    assert await executor.list_task_instances(result["execution_id"], ids("m")) == []


async def test_missing_dotted_key_fails_node(executor, ids):
    @cl.task(ids("m"), map_over="batch.files")
    def m(ctx):
        return 1

    @cl.task(ids("after"), dependencies=[m])
    def after(ctx):
        return {"after": True}

    result = await run(executor, cl.Workflow(ids.wf(), [after]), {"batch": {"name": "b"}})
    error = _assert_node_failed_without_instances(result, ids("m"), ids("after"))
    assert "batch.files" in error and "not in" in error, error


@pytest.mark.parametrize("value, type_names", [
    ({"a": [1, 2]}, ("dict",)),
    ("abc", ("str", "string")),
    (5, ("int", "number", "integer")),
])
async def test_non_list_fails_node_naming_key_and_type(executor, ids, value, type_names):
    ran: List[int] = []

    @cl.task(ids("m"), map_over="files")
    def m(ctx):
        ran.append(1)
        return 1

    @cl.task(ids("after"), dependencies=[m])
    def after(ctx):
        return {"after": True}

    result = await run(executor, cl.Workflow(ids.wf(), [after]), {"files": value})
    error = _assert_node_failed_without_instances(result, ids("m"), ids("after"))
    assert "map_over key 'files' holds a" in error and "not a list" in error, error
    assert any(f"holds a {name}" in error or f"holds an {name}" in error for name in type_names), error
    assert ran == []
    assert await executor.list_task_instances(result["execution_id"], ids("m")) == []


async def test_over_the_limit_fails_node_naming_the_limit(executor, ids):
    ran: List[int] = []

    @cl.task(ids("m"), map_over="files")
    def m(ctx):
        ran.append(1)
        return 1

    @cl.task(ids("after"), dependencies=[m])
    def after(ctx):
        return {"after": True}

    started = time.monotonic()
    result = await run(executor, cl.Workflow(ids.wf(), [after]), {"files": [0] * (LIMIT + 1)})
    elapsed = time.monotonic() - started
    error = _assert_node_failed_without_instances(result, ids("m"), ids("after"))
    assert f"map_over key 'files' holds {LIMIT + 1} elements; a map may have at most {LIMIT}" in error, error
    assert ran == []
    assert await executor.list_task_instances(result["execution_id"], ids("m")) == []
    assert elapsed < 20, f"refusing an over-long list took {elapsed:.1f} s"


# --- failures, all_done, resume -------------------------------------------------------------------

async def test_failed_instance_fails_node_then_resume_reruns_it_alone(executor, ids, tmp_path):
    ok = tmp_path / "ok"
    runs: collections.Counter = collections.Counter()
    seen_by_after: List[Any] = []

    @cl.task(ids("m"), map_over="xs", retries=1, retry_delay=0)
    def m(ctx):
        index = cl.current_task()["map_index"]
        runs[index] += 1
        if index == 3 and not ok.exists():
            raise ValueError("boom at 3")
        if index == 5:
            raise cl.SkipTask("nothing to do at 5")
        return ctx["item"] * 10

    @cl.task(ids("tidy"), dependencies=[m], trigger_rule="all_done")
    def tidy(ctx):
        seen_by_after.append(list(ctx[ids("m")]))
        return {"tidy": True}

    @cl.task(ids("join"), dependencies=[m])
    def join(ctx):
        return {"join": list(ctx[ids("m")])}

    wf = cl.Workflow(ids.wf(), [tidy, join])
    failed = await run(executor, wf, {"xs": [0, 1, 2, 3, 4, 5]})
    assert failed["status"] == "Failed", summary(failed)
    execution_id = failed["execution_id"]
    tr = by_task(failed)
    node = tr[ids("m")]
    assert node["status"] == "Failed", summary(failed)
    assert re.search(r"1 of 6 map instances failed \(ind(ex|ices) 3\)", node["error"]), node["error"]
    assert "index 3" in node["error"] and "ValueError: boom at 3" in node["error"], node["error"]
    assert node["map"] == counts(count=6, completed=4, failed=1, skipped=1)
    # Under all_done the dependent runs and sees None at the failed index; under all_success it does not.
    assert tr[ids("tidy")]["status"] == "Completed", summary(failed)
    assert seen_by_after == [[0, 10, 20, None, 40, None]]
    assert tr[ids("join")]["status"] == "Skipped", summary(failed)
    # Each instance retried alone: only index 3 ran twice.
    assert dict(runs) == {0: 1, 1: 1, 2: 1, 3: 2, 4: 1, 5: 1}
    instances = await all_instances(executor, execution_id, ids("m"))
    assert [i["status"] for i in instances] == ["Completed"] * 3 + ["Failed", "Completed", "Skipped"]
    assert [i["attempts"] for i in instances] == [1, 1, 1, 2, 1, 1]
    assert "boom at 3" in instances[3]["error"]
    assert all(i["error"] is None for k, i in enumerate(instances) if k != 3)

    ok.touch()
    assert await executor.resume(execution_id) == execution_id
    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", summary(result)
    assert result["error"] is None
    # Only the failed instance ran again; the others kept their values (the skipped one its None).
    assert dict(runs) == {0: 1, 1: 1, 2: 1, 3: 3, 4: 1, 5: 1}
    assert result["final_context"][ids("m")] == [0, 10, 20, 30, 40, None]
    assert result["final_context"]["join"] == [0, 10, 20, 30, 40, None]
    after = by_task(result)
    assert after[ids("m")]["status"] == "Completed"
    assert after[ids("m")]["map"] == counts(count=6, completed=5, skipped=1)
    assert after[ids("join")]["status"] == "Completed"
    instances_after = await all_instances(executor, execution_id, ids("m"))
    assert [i["status"] for i in instances_after] == ["Completed"] * 5 + ["Skipped"]
    assert [i["attempts"] for i in instances_after] == [1, 1, 1, 3, 1, 1]
    # Completed and Skipped instances were not touched by the resume.
    for k in (0, 1, 2, 4, 5):
        assert instances_after[k]["started_at"] == instances[k]["started_at"], (k, instances[k], instances_after[k])
        assert instances_after[k]["completed_at"] == instances[k]["completed_at"]


async def test_error_lists_the_first_five_failed_indices(executor, ids):
    failing = {1, 2, 3, 5, 6, 7, 8, 9}

    @cl.task(ids("m"), map_over="xs")
    def m(ctx):
        if ctx["item"] in failing:
            raise ValueError(f"bad {ctx['item']}")
        return ctx["item"]

    result = await run(executor, cl.Workflow(ids.wf(), [m]), {"xs": list(range(10))})
    assert result["status"] == "Failed", summary(result)
    node = by_task(result)[ids("m")]
    error = node["error"]
    assert "8 of 10 map instances failed (indices 1, 2, 3, 5, 6, ...)" in error, error
    assert "first, index 1: ValueError: bad 1" in error, error
    assert node["map"] == counts(count=10, completed=2, failed=8)


async def test_instances_inherit_timeout_and_retry_on_and_retry_alone(executor, ids):
    attempts: collections.Counter = collections.Counter()

    @cl.task(ids("m"), map_over="xs", retries=2, retry_delay=0, retry_on=ConnectionError, timeout=0.5)
    async def m(ctx):
        index = cl.current_task()["map_index"]
        attempts[index] += 1
        if index == 0:
            raise ValueError("not retried")  # not a ConnectionError: fails at once
        if index == 1 and attempts[index] == 1:
            raise ConnectionError("flaky")  # retried, then succeeds
        if index == 2:
            await asyncio.sleep(30)  # times out; a timeout is not a ConnectionError either
        return index

    started = time.monotonic()
    result = await run(executor, cl.Workflow(ids.wf(), [m]), {"xs": [0, 1, 2, 3]})
    assert time.monotonic() - started < 10, "the instance's timeout did not bound it"
    assert result["status"] == "Failed", summary(result)
    node = by_task(result)[ids("m")]
    assert "2 of 4 map instances failed (indices 0, 2)" in node["error"], node["error"]
    assert "first, index 0: ValueError: not retried" in node["error"], node["error"]
    assert node["map"] == counts(count=4, completed=2, failed=2)
    instances = await all_instances(executor, result["execution_id"], ids("m"))
    assert [i["status"] for i in instances] == ["Failed", "Completed", "Failed", "Completed"], instances
    assert [instances[k]["attempts"] for k in (0, 1, 3)] == [1, 2, 1], instances
    assert "time" in instances[2]["error"].lower(), instances[2]
    assert attempts[0] == 1 and attempts[1] == 2 and attempts[3] == 1, dict(attempts)
    assert attempts[2] == instances[2]["attempts"], (dict(attempts), instances[2])


async def test_node_skipped_by_its_upstream_makes_no_instances(executor, ids):
    ran: List[int] = []

    @cl.task(ids("up"))
    def up(ctx):
        raise ValueError("upstream broke")

    @cl.task(ids("m"), dependencies=[up], map_over="xs")
    def m(ctx):
        ran.append(1)
        return 1

    result = await run(executor, cl.Workflow(ids.wf(), [m]), {"xs": [1, 2, 3]})
    assert result["status"] == "Failed", summary(result)
    node = by_task(result)[ids("m")]
    assert node["status"] == "Skipped", summary(result)
    assert ran == []
    assert await executor.list_task_instances(result["execution_id"], ids("m")) == []
    # A mapped task carries counts even when it never expanded.
    assert node["map"] == counts(count=0), node["map"]


async def test_two_thousand_instances_in_order(executor, ids):
    @cl.task(ids("m"), map_over="xs")
    def m(ctx):
        return {"i": ctx["item"], "at": cl.current_task()["map_index"]}

    n = 2_000
    result = await run(executor, cl.Workflow(ids.wf(), [m]), {"xs": list(range(n))})
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"][ids("m")] == [{"i": k, "at": k} for k in range(n)]
    assert by_task(result)[ids("m")]["map"] == counts(count=n, completed=n)
    last_page = await executor.list_task_instances(result["execution_id"], ids("m"), offset=n - 3, limit=10)
    assert [i["map_index"] for i in last_page] == [n - 3, n - 2, n - 1]


# --- map_limit --------------------------------------------------------------------------------------

async def _overlap_of_eight(executor: Any, ids: Any, name: str, map_limit: Optional[int]) -> Tuple[int, Dict]:
    intervals: Dict[int, Tuple[float, float]] = {}
    options: Dict[str, Any] = {"map_limit": map_limit} if map_limit is not None else {}

    @cl.task(ids(name), map_over="xs", **options)
    async def m(ctx):
        start = time.monotonic()
        await asyncio.sleep(0.2)
        intervals[cl.current_task()["map_index"]] = (start, time.monotonic())
        return ctx["item"]

    result = await run(executor, cl.Workflow(ids.wf(name), [m]), {"xs": list(range(8))})
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"][ids(name)] == list(range(8))
    assert sorted(intervals) == list(range(8)), "not every instance ran"
    return max_overlap(list(intervals.values())), intervals


async def test_map_limit_caps_instances_running_at_once(executor, ids):
    assert executor.max_concurrency >= 4  # the worker could run more: the limit is what binds
    overlap, intervals = await _overlap_of_eight(executor, ids, "limited", 2)
    assert overlap <= 2, f"{overlap} instances ran at once under map_limit=2: {intervals}"
    assert overlap == 2, f"map_limit=2 ran its instances one at a time: {intervals}"
    # Without the limit the same map runs more than two at once on this worker.
    unlimited, intervals = await _overlap_of_eight(executor, ids, "unlimited", None)
    assert unlimited > 2, f"without map_limit only {unlimited} ran at once: {intervals}"


async def test_map_limit_is_per_execution(executor, ids):
    """Two executions of a map_limit=1 node run one instance each at the same time."""
    intervals: Dict[Tuple[str, int], Tuple[float, float]] = {}

    @cl.task(ids("m"), map_over="xs", map_limit=1)
    async def m(ctx):
        me = cl.current_task()
        start = time.monotonic()
        await asyncio.sleep(0.15)
        intervals[(me["execution_id"], me["map_index"])] = (start, time.monotonic())
        return ctx["item"]

    wf = cl.Workflow(ids.wf(), [m])
    first, second = [await executor.submit(wf, {"xs": [0, 1, 2, 3]}) for _ in range(2)]
    for execution_id in (first, second):
        result = await finished(executor, execution_id)
        assert result["status"] == "Completed", summary(result)
        assert result["final_context"][ids("m")] == [0, 1, 2, 3]
        mine = [span for (e, _), span in intervals.items() if e == execution_id]
        assert len(mine) == 4 and max_overlap(mine) == 1, mine
    assert max_overlap(list(intervals.values())) == 2, intervals


async def test_failed_instance_under_map_limit_lets_the_others_run(executor, ids):
    ran: List[int] = []

    @cl.task(ids("m"), map_over="xs", map_limit=1)
    def m(ctx):
        ran.append(ctx["item"])
        if ctx["item"] == 0:
            raise ValueError("first one breaks")
        return ctx["item"]

    result = await run(executor, cl.Workflow(ids.wf(), [m]), {"xs": [0, 1, 2, 3]})
    assert result["status"] == "Failed", summary(result)
    node = by_task(result)[ids("m")]
    assert node["map"] == counts(count=4, completed=3, failed=1), node["map"]
    assert sorted(ran) == [0, 1, 2, 3]
    assert "1 of 4 map instances failed" in node["error"], node["error"]


async def test_mapped_task_under_all_done_maps_after_a_failed_upstream(executor, ids):
    @cl.task(ids("up"))
    def up(ctx):
        raise ValueError("upstream broke")

    @cl.task(ids("m"), dependencies=[up], map_over="xs", trigger_rule="all_done")
    def m(ctx):
        return ctx["item"] + 1

    result = await run(executor, cl.Workflow(ids.wf(), [m]), {"xs": [1, 2, 3]})
    assert result["status"] == "Failed", summary(result)
    tr = by_task(result)
    assert tr[ids("up")]["status"] == "Failed"
    assert tr[ids("m")]["status"] == "Completed", summary(result)
    assert tr[ids("m")]["map"] == counts(count=3, completed=3)
    assert result["final_context"][ids("m")] == [2, 3, 4]


async def test_execution_timeout_mid_map_cancels_every_instance(executor, ids):
    @cl.task(ids("m"), map_over="xs")
    async def m(ctx):
        await asyncio.sleep(30)
        return 1

    execution_id = await executor.submit(cl.Workflow(ids.wf(), [m]), {"xs": list(range(12))}, timeout=0.5)
    result = await finished(executor, execution_id, timeout=10)
    assert result["status"] == "Cancelled", summary(result)
    assert by_task(result)[ids("m")]["map"] == counts(count=12, cancelled=12)
    statuses = {i["status"] for i in await all_instances(executor, execution_id, ids("m"))}
    assert statuses == {"Cancelled"}, statuses


# --- counts and instance pages ----------------------------------------------------------------------

async def test_task_results_carry_map_counts_and_instances_page_in_order(executor, ids):
    @cl.task(ids("root"))
    def root(ctx):
        return {"xs": list(range(25))}

    @cl.task(ids("m"), dependencies=[root], map_over="xs")
    async def m(ctx):
        await asyncio.sleep(random.uniform(0, 0.01))
        return ctx["item"]

    result = await run(executor, cl.Workflow(ids.wf(), [m]))
    assert result["status"] == "Completed", summary(result)
    execution_id = result["execution_id"]
    tr = by_task(result)
    # Instances are not task results: the node appears once.
    assert set(tr) == {ids("root"), ids("m")}
    assert tr[ids("root")]["map"] is None
    assert tr[ids("m")]["map"] == counts(count=25, completed=25)
    assert set(tr[ids("m")]["map"]) == MAP_COUNT_KEYS
    assert await executor.get_execution(execution_id) == result

    everything = await executor.list_task_instances(execution_id, ids("m"))  # default limit 100
    assert [i["map_index"] for i in everything] == list(range(25))
    for inst in everything:
        assert set(inst) == INSTANCE_KEYS, inst
        assert inst["status"] == "Completed" and inst["attempts"] == 1 and inst["error"] is None, inst
        assert parse_ts(inst["started_at"]) <= parse_ts(inst["completed_at"]), inst

    pages = [await executor.list_task_instances(execution_id, ids("m"), offset=o, limit=10) for o in (0, 10, 20)]
    assert [[i["map_index"] for i in page] for page in pages] == [list(range(10)), list(range(10, 20)),
                                                                  list(range(20, 25))]
    assert [i for page in pages for i in page] == everything
    assert await executor.list_task_instances(execution_id, ids("m"), offset=25) == []
    assert await executor.list_task_instances(execution_id, ids("m"), offset=3, limit=1) == [everything[3]]
    assert await executor.list_task_instances(execution_id, ids("m"), limit=10_000) == everything
    # An ordinary task has no instances.
    assert await executor.list_task_instances(execution_id, ids("root")) == []

    for bad in ({"offset": -1}, {"limit": 0}, {"limit": -5}, {"limit": 10_001}):
        with pytest.raises(ValueError) as info:
            await executor.list_task_instances(execution_id, ids("m"), **bad)
        assert next(iter(bad)) in str(info.value), str(info.value)


# --- cancel -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("map_limit", [None, 2])
async def test_cancel_mid_map_stops_running_and_cancels_unstarted_instances(executor, ids, map_limit):
    started: Set[int] = set()
    cancelled: Set[int] = set()
    total = 20
    running_at_most = map_limit or executor.max_concurrency
    options = {"map_limit": map_limit} if map_limit else {}

    @cl.task(ids("m"), map_over="xs", **options)
    async def m(ctx):
        index = cl.current_task()["map_index"]
        started.add(index)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.add(index)
            raise
        return index

    @cl.task(ids("after"), dependencies=[m])
    def after(ctx):
        return {"after": True}

    wf = cl.Workflow(ids.wf(), [after])
    execution_id = await executor.submit(wf, {"xs": list(range(total))})
    await until(lambda: len(started) >= min(4, running_at_most), what="instances running")

    record = await executor.get_execution(execution_id)
    node = by_task(record)[ids("m")]
    assert node["status"] == "Running", summary(record)
    assert node["map"]["count"] == total and node["map"]["running"] >= 1, node["map"]
    assert node["map"]["running"] <= running_at_most, node["map"]

    began = time.monotonic()
    assert await executor.cancel(execution_id) is True
    result = await finished(executor, execution_id, timeout=10)
    assert time.monotonic() - began < 5, "cancelling the map took long: running instances were not stopped"
    assert result["status"] == "Cancelled", summary(result)
    tr = by_task(result)
    assert tr[ids("m")]["status"] == "Cancelled", summary(result)
    assert tr[ids("after")]["status"] == "Cancelled", summary(result)
    assert tr[ids("m")]["map"]["pending"] == 0 and tr[ids("m")]["map"]["running"] == 0, tr[ids("m")]["map"]
    assert tr[ids("m")]["map"] == counts(count=total, cancelled=total), tr[ids("m")]["map"]

    instances = await all_instances(executor, execution_id, ids("m"))
    assert [i["map_index"] for i in instances] == list(range(total))
    assert {i["status"] for i in instances} == {"Cancelled"}, instances
    await until(lambda: cancelled == started, what="every running instance saw CancelledError", timeout=5)
    assert len(started) <= running_at_most


async def test_resume_after_cancel_reruns_only_unfinished_instances(executor, ids, tmp_path):
    release = tmp_path / "release"
    runs: collections.Counter = collections.Counter()

    @cl.task(ids("m"), map_over="xs")
    async def m(ctx):
        index = cl.current_task()["map_index"]
        runs[index] += 1
        if index >= 4:
            while not release.exists():
                await asyncio.sleep(0.02)
        return index * 2

    wf = cl.Workflow(ids.wf(), [m])
    execution_id = await executor.submit(wf, {"xs": list(range(10))})

    async def four_completed() -> bool:
        page = await executor.list_task_instances(execution_id, ids("m"))
        return sum(i["status"] == "Completed" for i in page) == 4 and sum(runs[k] for k in range(4, 10)) >= 1

    await until(four_completed, what="the quick instances completed, a slow one running")
    assert await executor.cancel(execution_id) is True
    cancelled = await finished(executor, execution_id, timeout=10)
    assert cancelled["status"] == "Cancelled", summary(cancelled)
    before = await all_instances(executor, execution_id, ids("m"))
    assert [i["status"] for i in before] == ["Completed"] * 4 + ["Cancelled"] * 6, before
    assert by_task(cancelled)[ids("m")]["map"] == counts(count=10, completed=4, cancelled=6)

    release.touch()
    assert await executor.resume(execution_id) == execution_id
    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"][ids("m")] == [k * 2 for k in range(10)]
    assert all(runs[k] == 1 for k in range(4)), dict(runs)
    assert all(runs[k] >= 1 for k in range(4, 10)), dict(runs)
    after = await all_instances(executor, execution_id, ids("m"))
    assert [i["status"] for i in after] == ["Completed"] * 10
    for k in range(4):
        assert after[k]["completed_at"] == before[k]["completed_at"], (before[k], after[k])


# --- shapes -----------------------------------------------------------------------------------------

async def test_map_over_the_collected_list_of_a_map(executor, ids):
    @cl.task(ids("src"))
    def src(ctx):
        return {"words": ["a", "bb", "ccc", "dddd"]}

    @cl.task(ids("pairs"), dependencies=[src], map_over="words", map_item="w", collect_as="pairs")
    def pairs(ctx):
        return [ctx["w"], len(ctx["w"])]

    @cl.task(ids("render"), dependencies=[pairs], map_over="pairs", map_item="pair")
    async def render(ctx):
        assert "pairs" not in ctx
        word, size = ctx["pair"]
        return {"word": word, "size": size, "index": cl.current_task()["map_index"]}

    @cl.task(ids("join"), dependencies=[render])
    def join(ctx):
        return {"joined": ",".join(r["word"] for r in ctx[ids("render")]), "pairs_seen": ctx["pairs"]}

    result = await run(executor, cl.Workflow(ids.wf(), [join]))
    assert result["status"] == "Completed", summary(result)
    out = result["final_context"]
    assert out["pairs"] == [["a", 1], ["bb", 2], ["ccc", 3], ["dddd", 4]]
    assert out[ids("render")] == [{"word": w, "size": len(w), "index": k}
                                  for k, w in enumerate(["a", "bb", "ccc", "dddd"])]
    assert out["joined"] == "a,bb,ccc,dddd"
    assert out["pairs_seen"] == out["pairs"]
    tr = by_task(result)
    assert tr[ids("pairs")]["map"] == counts(count=4, completed=4)
    assert tr[ids("render")]["map"] == counts(count=4, completed=4)


async def test_map_inside_a_diamond(executor, ids):
    order: List[str] = []

    @cl.task(ids("a"))
    def a(ctx):
        order.append("a")
        return {"xs": [1, 2, 3], "y": 10}

    @cl.task(ids("m"), dependencies=[a], map_over="xs")
    async def m(ctx):
        await asyncio.sleep(0.01)
        order.append("m")
        return ctx["item"] * ctx["y"]

    @cl.task(ids("b"), dependencies=[a])
    def b(ctx):
        order.append("b")
        return {"b": ctx["y"] + 1}

    @cl.task(ids("join"), dependencies=[m, b])
    def join(ctx):
        order.append("join")
        return {"join": sum(ctx[ids("m")]) + ctx["b"], "xs_seen": ctx["xs"]}

    result = await run(executor, cl.Workflow(ids.wf(), [join]))
    assert result["status"] == "Completed", summary(result)
    out = result["final_context"]
    assert out[ids("m")] == [10, 20, 30]
    assert out["b"] == 11
    assert out["join"] == 71
    assert out["xs_seen"] == [1, 2, 3]  # the list leaves only the instances' contexts
    assert order[0] == "a" and order[-1] == "join"
    assert sorted(order[1:-1]) == ["b", "m", "m", "m"]
    assert {t: r["status"] for t, r in by_task(result).items()} == {
        ids("a"): "Completed", ids("m"): "Completed", ids("b"): "Completed", ids("join"): "Completed"}


# --- worker processes ---------------------------------------------------------------------------------

MAP_SIZE = 300
WORKER_CONCURRENCY = 8


def start_map_worker(procs: Procs, database_url: str, prefix: str, out: Path, *, name: str, sleep: float,
                     lease_timeout: Optional[float] = None, map_limit: int = 3,
                     max_concurrency: int = WORKER_CONCURRENCY) -> Proc:
    ready_path = procs.workdir / f"{name}.ready"
    argv = [str(Path(__file__).resolve().parent / "map_worker.py"), "--url", database_url, "--prefix", prefix,
            "--out", str(out), "--ready", str(ready_path), "--max-concurrency", str(max_concurrency),
            "--sleep", repr(sleep), "--map-limit", str(map_limit)]
    if lease_timeout is not None:
        argv += ["--lease-timeout", repr(lease_timeout)]
    return procs.start(argv, name=name, ready_path=ready_path)


def check_map_result(record: Dict[str, Any], prefix: str) -> None:
    assert record["status"] == "Completed", summary(record)
    out = record["final_context"]
    expected = [value_of(i) for i in range(MAP_SIZE)]
    assert out[f"{prefix}.m"] == expected, "the collected list is not every value once, in order"
    assert out["total"] == sum(expected) and out["seen"] == MAP_SIZE
    node = by_task(record)[f"{prefix}.m"]
    assert node["map"] == counts(count=MAP_SIZE, completed=MAP_SIZE), node["map"]


async def worker_mid_map(workers: List[Proc], effects: Path, *, ended_at_least: int, what: str) -> Proc:
    """Waits for a worker that has ended ``ended_at_least`` instances and is in the middle of another."""
    chosen: List[Proc] = []

    def found() -> bool:
        events = read_events(effects)
        for worker in workers:
            mine = select(events, pid=worker.pid)
            ended = {e.task for e in mine if e.kind == "end"}
            if len(ended) >= ended_at_least and {e.task for e in mine if e.kind == "start"} - ended:
                chosen.append(worker)
                return True
        return False

    await until(found, what=what, watch=workers)
    return chosen[0]


async def test_three_workers_share_a_map(database_url, client, procs, ids, effects):
    wf = define_map_workflow(ids.prefix, str(effects), sleep=0.02)["map"]
    workers = [start_map_worker(procs, database_url, ids.prefix, effects, name=f"w{i}", sleep=0.02)
               for i in range(3)]
    await ready(*workers)

    execution_id = await client.submit(wf, {"run": "r", "n": MAP_SIZE})
    record = await finished(client, execution_id, timeout=45, procs=procs)
    check_map_result(record, ids.prefix)

    events = read_events(effects)
    for kind in ("start", "end"):
        per_index = collections.Counter(int(e.task) for e in select(events, kind=kind))
        assert per_index == {i: 1 for i in range(MAP_SIZE)}, \
            f"{kind}: not every instance exactly once: {sorted(k for k, v in per_index.items() if v != 1)}"
    by_pid = collections.Counter(e.pid for e in select(events, kind="end"))
    print(f"\nMAP SHARED: {MAP_SIZE} instances over 3 workers: {dict(by_pid)}")
    assert set(by_pid) <= {w.pid for w in workers}, "an instance ran in a process the test did not start"
    assert len(by_pid) > 1, f"one worker did all the work: {dict(by_pid)}"
    instances = await all_instances(client, execution_id, f"{ids.prefix}.m")
    assert [(i["map_index"], i["status"], i["attempts"]) for i in instances] == \
        [(k, "Completed", 1) for k in range(MAP_SIZE)]
    for worker in workers:
        assert await stopped(worker) == 0, worker.describe()


async def test_worker_killed_mid_map_loses_nothing_and_reruns_only_its_instances(database_url, client, procs,
                                                                                ids, effects):
    sleep = 0.05
    wf = define_map_workflow(ids.prefix, str(effects), sleep=sleep)["map"]
    node_id = f"{ids.prefix}.m"
    workers = [start_map_worker(procs, database_url, ids.prefix, effects, name=f"w{i}", sleep=sleep,
                                lease_timeout=5.0) for i in range(3)]
    await ready(*workers)

    execution_id = await client.submit(wf, {"run": "r", "n": MAP_SIZE})

    victim = await worker_mid_map(workers, effects, ended_at_least=3, what="a worker in the middle of the map")
    victim.kill()
    survivors = [w for w in workers if w is not victim]

    at_kill = await all_instances(client, execution_id, node_id)
    completed_at_kill = {i["map_index"] for i in at_kill if i["status"] == "Completed"}
    events = read_events(effects)
    victim_started = {int(e.task) for e in select(events, pid=victim.pid, kind="start")}
    victim_ended = {int(e.task) for e in select(events, pid=victim.pid, kind="end")}
    assert len(completed_at_kill) < MAP_SIZE, "the map ended before the kill: it tested nothing"
    assert completed_at_kill <= {int(e.task) for e in select(events, kind="end")}, \
        "Completed in the database without having run to its end"

    record = await finished(client, execution_id, timeout=45, what="the map after the kill", procs=procs)
    check_map_result(record, ids.prefix)

    events = read_events(effects)
    starts = collections.defaultdict(list)
    ends = collections.defaultdict(list)
    for e in events:
        (starts if e.kind == "start" else ends)[int(e.task)].append(e.pid)
    assert set(ends) == set(range(MAP_SIZE)), "an instance never ran to its end"
    assert {e.pid for e in events} <= {w.pid for w in workers}
    final = await all_instances(client, execution_id, node_id)
    assert [(i["map_index"], i["status"]) for i in final] == [(k, "Completed") for k in range(MAP_SIZE)]

    rerun = sorted(k for k, pids in starts.items() if len(pids) > 1)
    twice_ended = sorted(k for k, pids in ends.items() if len(pids) > 1)
    in_flight = victim_started - completed_at_kill  # the victim's instances not Completed at the kill
    for k in range(MAP_SIZE):
        where = f"index {k}: starts in {starts[k]}, ends in {ends[k]}, victim {victim.pid}, record {final[k]}"
        # Nothing Completed at the kill ran again.
        if k in completed_at_kill:
            assert len(starts[k]) == 1 and len(ends[k]) == 1, where
        # No instance ran twice in one process, and only the victim's ran more than once.
        assert len(starts[k]) == len(set(starts[k])), where
        if len(starts[k]) > 1:
            assert k in in_flight and starts[k][0] == victim.pid, where
            assert final[k]["attempts"] >= len(starts[k]), where
        # A second end line: the victim finished it but died before its commit landed.
        for pid in ends[k][:-1]:
            assert pid == victim.pid, where
    # Ended in the victim and ran again: it died after the instance returned, before its commit
    # landed; at most the instances it ran at once.
    assert len(twice_ended) <= WORKER_CONCURRENCY, twice_ended
    assert set(rerun) <= in_flight
    print(f"\nMAP KILL: victim {victim.pid} had ended {len(victim_ended)} instances, {len(in_flight)} in flight; "
          f"{len(completed_at_kill)}/{MAP_SIZE} Completed at the kill; re-ran {rerun}; ended twice {twice_ended}")
    for worker in survivors:
        assert await stopped(worker) == 0, worker.describe()


async def test_map_limit_holds_across_worker_processes(database_url, client, procs, ids, effects):
    """map_limit=3 with three workers that run 2 tasks at once each: never more than 3 instances at
    once (the workers could run 6), as the instances' own start/end lines (one clock: one machine)
    show; one worker alone cannot run 3, so the limit holds across processes."""
    sleep, n, limit = 0.1, 24, 3
    wf = define_map_workflow(ids.prefix, str(effects), sleep=sleep, map_limit=limit)["limited"]
    workers = [start_map_worker(procs, database_url, ids.prefix, effects, name=f"w{i}", sleep=sleep,
                                map_limit=limit, max_concurrency=2) for i in range(3)]
    await ready(*workers)

    execution_id = await client.submit(wf, {"run": "r", "n": n})
    record = await finished(client, execution_id, timeout=45, procs=procs)
    assert record["status"] == "Completed", summary(record)
    assert record["final_context"][f"{ids.prefix}.limited"] == [value_of(i) for i in range(n)]

    events = read_events(effects)
    start = {int(e.task): e.ts for e in select(events, kind="start")}
    end = {int(e.task): e.ts for e in select(events, kind="end")}
    assert sorted(start) == sorted(end) == list(range(n))
    assert len(select(events, kind="start")) == n, "an instance ran twice"
    overlap = max_overlap([(start[k], end[k]) for k in range(n)])
    pids = collections.Counter(e.pid for e in select(events, kind="end"))
    print(f"\nMAP LIMIT {limit} over 3 workers: max overlap {overlap}, instances per worker {dict(pids)}")
    assert overlap <= limit, f"{overlap} instances ran at once under map_limit={limit}"
    assert overlap >= 2, f"map_limit={limit} ran one instance at a time"
    assert len(pids) > 1, f"one worker ran every instance: {dict(pids)}"
    for worker in workers:
        assert await stopped(worker) == 0, worker.describe()


async def test_worker_killed_under_map_limit_frees_its_slot(database_url, client, procs, ids, effects):
    """A worker dies in the middle of an instance of a map_limit=3 node: its instance runs again
    elsewhere, the map still ends with every value in order, and the limit held throughout (the
    killed instance counts as running until the kill)."""
    sleep, n, limit = 0.15, 18, 3
    wf = define_map_workflow(ids.prefix, str(effects), sleep=sleep, map_limit=limit)["limited"]
    node_id = f"{ids.prefix}.limited"
    workers = [start_map_worker(procs, database_url, ids.prefix, effects, name=f"w{i}", sleep=sleep,
                                map_limit=limit, max_concurrency=2, lease_timeout=5.0) for i in range(3)]
    await ready(*workers)
    execution_id = await client.submit(wf, {"run": "r", "n": n})

    victim = await worker_mid_map(workers, effects, ended_at_least=1,
                                  what="a worker in the middle of an instance")
    victim.kill()
    assert victim.killed_at is not None
    at_kill = await all_instances(client, execution_id, node_id)
    assert sum(i["status"] == "Completed" for i in at_kill) < n, "the map ended before the kill: it tested nothing"

    record = await finished(client, execution_id, timeout=30, what="the limited map after the kill", procs=procs)
    assert record["status"] == "Completed", summary(record)
    assert record["final_context"][node_id] == [value_of(i) for i in range(n)]
    assert by_task(record)[node_id]["map"] == counts(count=n, completed=n)

    events = read_events(effects)
    intervals: List[Tuple[float, float]] = []
    for k in range(n):
        starts = sorted(e.ts for e in select(events, task=str(k), kind="start"))
        ends = sorted(e.ts for e in select(events, task=str(k), kind="end"))
        assert starts and ends, f"index {k} never ran to its end"
        for i, begun in enumerate(starts):
            # An attempt without its end line was the victim's, cut short by the kill.
            intervals.append((begun, ends[i] if i < len(ends) else victim.killed_at))
    overlap = max_overlap(intervals)
    rerun = sorted(k for k in range(n) if len(select(events, task=str(k), kind="start")) > 1)
    print(f"\nMAP LIMIT KILL: re-ran {rerun}, max overlap {overlap}")
    assert rerun, "the victim's instance did not run again"
    assert overlap <= limit, f"{overlap} instances ran at once under map_limit={limit}"
    for worker in workers:
        if worker is not victim:
            assert await stopped(worker) == 0, worker.describe()

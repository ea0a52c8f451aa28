"""Sub-workflows: ``subworkflow(workflow)`` runs a workflow as one task (a node) of another.

When the node runs it submits its workflow as a child execution and waits for it (``Waiting``, no
worker slot held); its output is ``{task_id: <the child's final context>}``, one child per element
with ``map_over``. A failed or cancelled child fails the node, naming the child. Each node has
exactly one child (per map index) whatever happens: a retry or a ``resume`` resumes it, a worker
killed with ``kill -9`` leaves it to the next worker; ``cancel`` reaches every descendant. Most
tests run in this process (the ``executor`` fixture); the kill and cancel tests run
``subworkflow_worker.py`` processes, whose tasks append lines to the side-effect file.
"""

from __future__ import annotations

import asyncio
import collections
import random
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import pytest

from backend import BACKEND, assert_uuid, by_task, cl
from procs import (DEADLINE, FINAL_STATUSES, POLL, Proc, Procs, client, control, effects,  # noqa: F401
                   finished, procs, read_events, ready, select, stopped, summary, until)
from subworkflow_worker import define

WORKER = Path(__file__).resolve().parent / "subworkflow_worker.py"

LIVE = ("Pending", "Running", "Waiting")  # the statuses of a task that may still do something
HOLD = 2.0  # seconds a test watches that nothing starts any more after a cancel


# --- helpers -----------------------------------------------------------------------------------

def history(task_result: Dict[str, Any]) -> List[str]:
    return [h["status"] for h in task_result["history"]]


def waiting_reason(child_id: str, workflow_name: str) -> str:
    return f"waiting for child execution {child_id} (workflow '{workflow_name}')"


def node_error(child: Dict[str, Any]) -> str:
    """The error of a node whose child ended Failed or Cancelled, from the child's record."""
    return (f"SubworkflowError: child execution {child['execution_id']} of workflow '{child['workflow_name']}' "
            f"ended {child['status']}: {child['error']}")


async def run(executor: Any, workflow: Any, context: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return await finished(executor, await executor.submit(workflow, context))


async def children_of(executor: Any, parent_id: str, workflow_name: str) -> List[Dict[str, Any]]:
    """The executions of ``workflow_name`` whose parent is ``parent_id``, by their node's key."""
    listed = await executor.list_executions(workflow=workflow_name, limit=10_000)
    return sorted((e for e in listed if e["parent_execution_id"] == parent_id), key=lambda e: e["parent_task_id"])


async def record_when(executor: Any, execution_id: str, check: Callable[[Dict[str, Any]], bool], *, what: str,
                      watch: Sequence[Proc] = ()) -> Dict[str, Any]:
    """The execution's record once ``check`` holds for it."""
    last: Dict[str, Any] = {}

    async def holds() -> bool:
        last["record"] = await executor.get_execution(execution_id)
        return last["record"] is not None and check(last["record"])

    try:
        await until(holds, what=what, watch=watch)
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast seen: {summary(last.get('record'))}") from None
    return last["record"]


async def when_node_waits(executor: Any, execution_id: str, node: str) -> Dict[str, Any]:
    """The parent's record once ``node`` is Waiting with a child (fails if the parent ends first)."""

    def waits(record: Dict[str, Any]) -> bool:
        assert record["status"] in ("Pending", "Running"), f"ended before {node} waited: {summary(record)}"
        task = by_task(record)[node]
        return task["status"] == "Waiting" and task["child_execution_id"] is not None

    return await record_when(executor, execution_id, waits, what=f"{node} Waiting for its child")


def start_worker(procs: Procs, database_url: str, prefix: str, out: Path, control: Path, *, name: str) -> Proc:
    """Starts ``subworkflow_worker.py`` (see its docstring); the ready file appears once it works."""
    ready_path = procs.workdir / f"{name}.ready"
    return procs.start([str(WORKER), "--url", database_url, "--prefix", prefix, "--out", str(out),
                        "--control", str(control), "--ready", str(ready_path)], name=name, ready_path=ready_path)


def tags(effects: Path, task: str, kind: str) -> List[str]:
    """The tags of the side-effect lines of ``task`` with ``kind``, in file order."""
    return [e.run for e in select(read_events(effects), task=task, kind=kind)]


# --- what a child gives its parent -------------------------------------------------------------

async def test_the_child_final_context_reaches_the_node_and_the_next_task(executor, ids):
    @cl.task(ids("price"))
    def price(ctx):
        return {"price": ctx["order"] * 10}

    @cl.task(ids("tax"), dependencies=[price])
    async def tax(ctx):
        return {"tax": ctx["price"] // 10}

    child = cl.Workflow(ids.wf("child"), [tax])

    @cl.task(ids("prep"))
    def prep(ctx):
        return {"order": 7}

    node = cl.subworkflow(child, dependencies=[prep])
    assert isinstance(node, cl.TaskRef)
    assert node.task_id == child.name  # task_id defaults to the child workflow's name

    @cl.task(ids("total"), dependencies=[node])
    def total(ctx):
        return {"total": ctx[child.name]["price"] + ctx[child.name]["tax"]}

    parent = cl.Workflow(ids.wf("parent"), [total])
    assert sorted(parent.task_ids) == sorted([ids("prep"), child.name, ids("total")])

    result = await run(executor, parent, {"run": "r"})
    assert result["status"] == "Completed", summary(result)
    child_context = {"run": "r", "order": 7, "price": 70, "tax": 7}
    assert result["final_context"] == {"run": "r", "order": 7, child.name: child_context, "total": 77}

    tasks = by_task(result)
    assert tasks[child.name]["status"] == "Completed" and tasks[child.name]["error"] is None
    child_id = tasks[child.name]["child_execution_id"]
    assert_uuid(child_id)
    assert {t: tasks[t]["child_execution_id"] for t in (ids("prep"), ids("total"))} == {ids("prep"): None,
                                                                                        ids("total"): None}
    record = await executor.get_execution(child_id)
    assert record["workflow_name"] == child.name
    assert record["status"] == "Completed", summary(record)
    assert record["input_context"] == {"run": "r", "order": 7}
    assert record["final_context"] == child_context
    assert (record["parent_execution_id"], record["parent_task_id"]) == (result["execution_id"], child.name)
    assert all(t["child_execution_id"] is None for t in record["task_results"])
    # Every record has the keys; a top-level execution's are None.
    assert (result["parent_execution_id"], result["parent_task_id"]) == (None, None)
    assert [e["execution_id"] for e in await executor.list_executions(workflow=child.name)] == [child_id]
    [listed] = await executor.list_executions(workflow=parent.name)
    assert (listed["parent_execution_id"], listed["parent_task_id"]) == (None, None)


async def test_input_keys_give_the_child_only_those_keys(executor, ids):
    @cl.task(ids("look"))
    def look(ctx):
        return {"looked": sorted(ctx)}

    child = cl.Workflow(ids.wf("child"), [look])
    node = cl.subworkflow(child, task_id=ids("node"), input_keys=["order_id", "customer"])
    parent = cl.Workflow(ids.wf("parent"), [node])

    result = await run(executor, parent, {"order_id": 1, "customer": {"name": "ana"}, "secret": 3})
    assert result["status"] == "Completed", summary(result)
    expected = {"order_id": 1, "customer": {"name": "ana"}, "looked": ["customer", "order_id"]}
    assert result["final_context"][ids("node")] == expected
    record = await executor.get_execution(by_task(result)[ids("node")]["child_execution_id"])
    assert record["input_context"] == {"order_id": 1, "customer": {"name": "ana"}}


async def test_a_key_missing_from_input_keys_fails_the_node_naming_it_and_starts_no_child(executor, ids):
    @cl.task(ids("look"))
    def look(ctx):
        return {"looked": sorted(ctx)}

    child = cl.Workflow(ids.wf("child"), [look])
    node = cl.subworkflow(child, task_id=ids("node"), input_keys=["order_id", "customer"])
    result = await run(executor, cl.Workflow(ids.wf("parent"), [node]), {"order_id": 1})
    assert result["status"] == "Failed", summary(result)
    task = by_task(result)[ids("node")]
    assert task["status"] == "Failed", task
    assert "customer" in (task["error"] or ""), task
    assert task["child_execution_id"] is None, task
    assert await executor.list_executions(workflow=child.name) == []


async def test_a_failed_child_fails_the_node_naming_the_child_and_its_error(executor, ids):
    @cl.task(ids("check"))
    def check(ctx):
        raise ValueError("out of stock")

    @cl.task(ids("ship"), dependencies=[check])
    def ship(ctx):
        return {"shipped": True}

    child = cl.Workflow(ids.wf("child"), [ship])
    node = cl.subworkflow(child, task_id=ids("node"))

    @cl.task(ids("after"), dependencies=[node])
    def after(ctx):
        return {"after": True}

    result = await run(executor, cl.Workflow(ids.wf("parent"), [after]), {"run": "r"})
    assert result["status"] == "Failed", summary(result)
    tasks = by_task(result)
    child_id = tasks[ids("node")]["child_execution_id"]
    assert_uuid(child_id)
    record = await executor.get_execution(child_id)
    assert record["status"] == "Failed", summary(record)
    assert "ValueError: out of stock" in record["error"], record["error"]
    assert by_task(record)[ids("ship")]["status"] == "Skipped"

    assert tasks[ids("node")]["status"] == "Failed"
    assert tasks[ids("node")]["error"] == node_error(record)
    assert history(tasks[ids("node")]) == ["Failed"]
    assert tasks[ids("after")]["status"] == "Skipped"
    for words in (ids("node"), child_id, "ValueError: out of stock"):
        assert words in result["error"], (words, result["error"])
    assert ids("node") not in result["final_context"]


async def test_the_node_waits_for_its_child_and_says_so(executor, ids):
    release = threading.Event()

    @cl.task(ids("slow"))
    def slow(ctx):
        release.wait(DEADLINE)
        return {"slow": True}

    child = cl.Workflow(ids.wf("child"), [slow])
    node = cl.subworkflow(child, task_id=ids("node"))
    try:
        execution_id = await executor.submit(cl.Workflow(ids.wf("parent"), [node]), {})
        record = await when_node_waits(executor, execution_id, ids("node"))
        task = by_task(record)[ids("node")]
        child_id = task["child_execution_id"]
        assert task["reason"] == waiting_reason(child_id, child.name), task
        assert record["status"] == "Running" and record["completed_at"] is None, summary(record)
        await record_when(executor, child_id, lambda r: by_task(r)[ids("slow")]["status"] == "Running",
                          what="the child's task Running")
    finally:
        release.set()
    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", summary(result)
    task = by_task(result)[ids("node")]
    assert (task["reason"], task["child_execution_id"]) == (None, child_id), task
    assert result["final_context"] == {ids("node"): {"slow": True}}


async def test_a_cancelled_child_fails_the_node(executor, ids):
    @cl.task(ids("forever"))
    async def forever(ctx):
        await asyncio.sleep(3600)

    child = cl.Workflow(ids.wf("child"), [forever])
    node = cl.subworkflow(child, task_id=ids("node"))
    execution_id = await executor.submit(cl.Workflow(ids.wf("parent"), [node]), {})
    child_id = by_task(await when_node_waits(executor, execution_id, ids("node")))[ids("node")]["child_execution_id"]
    assert await executor.cancel(child_id) is True
    result = await finished(executor, execution_id)
    assert result["status"] == "Failed", summary(result)
    record = await executor.get_execution(child_id)
    assert record["status"] == "Cancelled", summary(record)
    task = by_task(result)[ids("node")]
    assert task["error"] == node_error(record), task
    assert child_id in result["error"], result["error"]


async def test_a_waiting_node_holds_no_worker_slot(database_url, ids):
    """One slot in all, three levels, a map of three: only the innermost tasks need the slot."""

    @cl.task(ids("leaf"))
    def leaf(ctx):
        return {"leaf": ctx["item"] * 2}

    inner = cl.Workflow(ids.wf("inner"), [leaf])
    middle = cl.Workflow(ids.wf("middle"), [cl.subworkflow(inner, task_id=ids("each"), map_over="xs")])
    outer = cl.Workflow(ids.wf("outer"), [cl.subworkflow(middle, task_id=ids("middle"))])
    executor = cl.UnifiedExecutor(max_concurrency=1)
    await executor.initialize(database_url)
    try:
        result = await run(executor, outer, {"xs": [1, 2, 3]})
    finally:
        await executor.shutdown()
    assert result["status"] == "Completed", summary(result)
    each = result["final_context"][ids("middle")][ids("each")]
    assert [c["leaf"] for c in each] == [2, 4, 6]


# --- map_over ----------------------------------------------------------------------------------

async def test_a_mapped_subworkflow_over_20_items_has_20_children_and_values_in_order(executor, ids):
    count = 20

    @cl.task(ids("value"))
    async def value(ctx):
        # Later items finish first.
        await asyncio.sleep(0.005 * (count - ctx["order"]))
        return {"value": 3 * ctx["order"] + 1}

    child = cl.Workflow(ids.wf("child"), [value])
    node = cl.subworkflow(child, task_id=ids("each"), map_over="orders", map_item="order")

    @cl.task(ids("after"), dependencies=[node])
    def after(ctx):
        return {"values": [c["value"] for c in ctx[ids("each")]]}

    result = await run(executor, cl.Workflow(ids.wf("parent"), [after]), {"run": "r", "orders": list(range(count))})
    assert result["status"] == "Completed", summary(result)
    contexts = result["final_context"][ids("each")]
    assert [c["order"] for c in contexts] == list(range(count))
    assert [c["value"] for c in contexts] == [3 * i + 1 for i in range(count)]
    assert result["final_context"]["values"] == [3 * i + 1 for i in range(count)]
    assert all(c["run"] == "r" for c in contexts), contexts

    children = await children_of(executor, result["execution_id"], child.name)
    assert len(await executor.list_executions(workflow=child.name, limit=1000)) == count
    keys = {c["parent_task_id"]: c for c in children}
    assert sorted(keys) == sorted(f"{ids('each')}[{i}]" for i in range(count)), sorted(keys)
    for i in range(count):
        record = keys[f"{ids('each')}[{i}]"]
        assert record["status"] == "Completed", summary(record)
        assert record["input_context"]["order"] == i
        assert record["final_context"] == contexts[i]
    node_result = by_task(result)[ids("each")]
    assert node_result["status"] == "Completed"
    assert (node_result["map"]["count"], node_result["map"]["completed"]) == (count, count), node_result["map"]
    instances = await executor.list_task_instances(result["execution_id"], ids("each"), limit=100)
    assert [(i["map_index"], i["status"]) for i in instances] == [(k, "Completed") for k in range(count)]
    # Each instance names its own child.
    assert [i["child_execution_id"] for i in instances] == [
        keys[f"{ids('each')}[{k}]"]["execution_id"] for k in range(count)]


async def test_input_keys_of_a_mapped_subworkflow_keep_each_child_its_element(executor, ids):
    @cl.task(ids("look"))
    def look(ctx):
        return {"looked": sorted(ctx)}

    child = cl.Workflow(ids.wf("child"), [look])
    node = cl.subworkflow(child, task_id=ids("each"), map_over="xs", map_item="x", input_keys=["run"])
    result = await run(executor, cl.Workflow(ids.wf("parent"), [node]), {"run": "r", "xs": [5, 6], "other": 1})
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"][ids("each")] == [{"run": "r", "x": x, "looked": ["run", "x"]} for x in (5, 6)]


async def test_a_failed_mapped_child_fails_the_node_and_resume_reruns_only_that_child(executor, ids, tmp_path):
    ok = tmp_path / "ok"
    runs: Dict[int, int] = collections.Counter()

    @cl.task(ids("work"))
    def work(ctx):
        runs[ctx["item"]] += 1
        if ctx["item"] == 2 and not ok.exists():
            raise RuntimeError("item 2 is not ready")
        return {"done": ctx["item"]}

    child = cl.Workflow(ids.wf("child"), [work])
    node = cl.subworkflow(child, task_id=ids("each"), map_over="xs")
    parent = cl.Workflow(ids.wf("parent"), [node])
    failed = await run(executor, parent, {"xs": [0, 1, 2, 3]})
    assert failed["status"] == "Failed", summary(failed)
    children = {c["parent_task_id"]: c for c in await children_of(executor, failed["execution_id"], child.name)}
    assert sorted(children) == [f"{ids('each')}[{i}]" for i in range(4)]
    bad = children[f"{ids('each')}[2]"]
    assert bad["status"] == "Failed", summary(bad)
    assert [children[f"{ids('each')}[{i}]"]["status"] for i in (0, 1, 3)] == ["Completed"] * 3
    instances = await executor.list_task_instances(failed["execution_id"], ids("each"))
    assert [i["status"] for i in instances] == ["Completed", "Completed", "Failed", "Completed"]
    assert instances[2]["error"] == node_error(bad), instances[2]
    assert bad["execution_id"] in failed["error"], failed["error"]

    ok.touch()
    assert await executor.resume(failed["execution_id"]) == failed["execution_id"]
    result = await finished(executor, failed["execution_id"])
    assert result["status"] == "Completed", summary(result)
    assert [c["done"] for c in result["final_context"][ids("each")]] == [0, 1, 2, 3]
    after = {c["parent_task_id"]: c for c in await children_of(executor, failed["execution_id"], child.name)}
    assert {k: c["execution_id"] for k, c in after.items()} == {k: c["execution_id"] for k, c in children.items()}
    assert runs == {0: 1, 1: 1, 2: 2, 3: 1}


# --- retries, resume, timeout ------------------------------------------------------------------

async def test_a_retry_resumes_the_same_child(executor, ids):
    runs: Dict[str, int] = collections.Counter()

    @cl.task(ids("before"))
    def before(ctx):
        runs["before"] += 1
        return {"before": True}

    @cl.task(ids("flaky"), dependencies=[before])
    def flaky(ctx):
        runs["flaky"] += 1
        if runs["flaky"] == 1:
            raise ConnectionError("fails once")
        return {"flaky": runs["flaky"]}

    child = cl.Workflow(ids.wf("child"), [flaky])
    node = cl.subworkflow(child, task_id=ids("node"), retries=1)
    result = await run(executor, cl.Workflow(ids.wf("parent"), [node]), {})
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"][ids("node")] == {"before": True, "flaky": 2}
    [record] = await executor.list_executions(workflow=child.name)
    task = by_task(result)[ids("node")]
    assert task["child_execution_id"] == record["execution_id"]
    assert history(task) == ["Failed", "Completed"], task
    assert record["execution_id"] in task["history"][0]["error"], task["history"]
    assert "fails once" in task["history"][0]["error"], task["history"]
    # The child was resumed: its completed task kept its output, its failed one ran again.
    assert runs == {"before": 1, "flaky": 2}
    assert history(by_task(record)[ids("flaky")]) == ["Failed", "Completed"]
    assert history(by_task(record)[ids("before")]) == ["Completed"]


async def test_a_child_that_keeps_failing_uses_up_the_retries_in_one_child(executor, ids):
    @cl.task(ids("broken"))
    def broken(ctx):
        raise ConnectionError("down")

    child = cl.Workflow(ids.wf("child"), [broken])
    node = cl.subworkflow(child, task_id=ids("node"), retries=2)
    result = await run(executor, cl.Workflow(ids.wf("parent"), [node]), {})
    assert result["status"] == "Failed", summary(result)
    [record] = await executor.list_executions(workflow=child.name)
    assert record["status"] == "Failed", summary(record)
    task = by_task(result)[ids("node")]
    assert history(task) == ["Failed", "Failed", "Failed"], task
    assert task["error"] == node_error(record), task
    assert history(by_task(record)[ids("broken")]) == ["Failed", "Failed", "Failed"]


@pytest.mark.parametrize("levels", [2, 3])
async def test_resume_of_a_failed_parent_resumes_its_failed_child(executor, ids, tmp_path, levels):
    """The innermost task fails until a marker file exists; ``resume`` of the top execution resumes
    the same child (and grandchild), which then completes."""
    ok = tmp_path / "ok"
    runs: Dict[str, int] = collections.Counter()

    @cl.task(ids("before"))
    def before(ctx):
        runs["before"] += 1
        return {"before": True}

    @cl.task(ids("flaky"), dependencies=[before])
    def flaky(ctx):
        runs["flaky"] += 1
        if not ok.exists():
            raise RuntimeError("not ready yet")
        return {"flaky": True}

    workflows = [cl.Workflow(ids.wf("level0"), [flaky])]
    for level in range(1, levels):
        node = cl.subworkflow(workflows[-1], task_id=ids(f"node{level}"))
        workflows.append(cl.Workflow(ids.wf(f"level{level}"), [node]))
    top = workflows[-1]

    failed = await run(executor, top, {"run": "r"})
    assert failed["status"] == "Failed", summary(failed)
    before_resume = {}
    for workflow in workflows:
        [record] = await executor.list_executions(workflow=workflow.name)
        assert record["status"] == "Failed", summary(record)
        before_resume[workflow.name] = record["execution_id"]

    ok.touch()
    assert await executor.resume(failed["execution_id"]) == failed["execution_id"]
    result = await finished(executor, failed["execution_id"])
    assert result["status"] == "Completed", summary(result)
    for workflow in workflows:
        [record] = await executor.list_executions(workflow=workflow.name)
        assert record["execution_id"] == before_resume[workflow.name], f"{workflow.name} started anew"
        assert record["status"] == "Completed", summary(record)
    for level in range(1, levels):
        [record] = await executor.list_executions(workflow=workflows[level].name)
        task = by_task(record)[ids(f"node{level}")]
        assert task["child_execution_id"] == before_resume[workflows[level - 1].name]
        assert history(task) == ["Failed", "Completed"], task
    assert runs == {"before": 1, "flaky": 2}
    [innermost] = await executor.list_executions(workflow=workflows[0].name)
    assert history(by_task(innermost)[ids("flaky")]) == ["Failed", "Completed"]


@pytest.mark.parametrize("timeout", [0.5, timedelta(milliseconds=500)], ids=["seconds", "timedelta"])
async def test_a_timeout_cancels_the_child_and_fails_the_node(executor, ids, timeout):
    cancelled: List[str] = []

    @cl.task(ids("forever"))
    async def forever(ctx):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(cl.current_task()["execution_id"])
            raise

    child = cl.Workflow(ids.wf("child"), [forever])
    node = cl.subworkflow(child, task_id=ids("node"), timeout=timeout)

    @cl.task(ids("after"), dependencies=[node])
    def after(ctx):
        return {"after": True}

    began = time.monotonic()
    result = await run(executor, cl.Workflow(ids.wf("parent"), [after]), {})
    assert time.monotonic() - began >= 0.5
    assert result["status"] == "Failed", summary(result)
    task = by_task(result)[ids("node")]
    assert task["status"] == "Failed" and task["error"].startswith("TimeoutError: "), task
    assert by_task(result)[ids("after")]["status"] == "Skipped"
    child_id = task["child_execution_id"]
    record = await record_when(executor, child_id, lambda r: r["status"] == "Cancelled", what="the child Cancelled")
    assert by_task(record)[ids("forever")]["status"] == "Cancelled", summary(record)
    await until(lambda: cancelled == [child_id], what="the child's task saw CancelledError")


async def test_a_parent_past_its_timeout_is_cancelled_with_its_child(executor, ids):
    cancelled: List[str] = []

    @cl.task(ids("forever"))
    async def forever(ctx):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(cl.current_task()["execution_id"])
            raise

    child = cl.Workflow(ids.wf("child"), [forever])
    node = cl.subworkflow(child, task_id=ids("node"))
    result = await executor.execute(cl.Workflow(ids.wf("parent"), [node]), {}, timeout=0.5)
    assert result["status"] == "Cancelled", summary(result)
    [record] = await executor.list_executions(workflow=child.name)
    record = await record_when(executor, record["execution_id"], lambda r: r["status"] in FINAL_STATUSES,
                               what="the child ended")
    assert record["status"] == "Cancelled", summary(record)
    assert by_task(record)[ids("forever")]["status"] == "Cancelled", summary(record)
    await until(lambda: cancelled == [record["execution_id"]], what="the child's task saw CancelledError")


# --- arguments and building --------------------------------------------------------------------

def a_child(ids) -> Any:
    @cl.task(ids("inner"))
    def inner(ctx):
        return {}

    return cl.Workflow(ids.wf("child"), [inner])


@pytest.mark.parametrize("call, error, words", [
    (lambda wf, t: cl.subworkflow("a workflow name", task_id=t), TypeError, ["workflow", "str"]),
    (lambda wf, t: cl.subworkflow(None, task_id=t), TypeError, ["workflow", "None"]),
    (lambda wf, t: cl.subworkflow(wf.task_ids, task_id=t), TypeError, ["workflow", "list"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=5), TypeError, ["task_id", "int"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=""), ValueError, ["task_id"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, map_over=5), TypeError, ["map_over", "int"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, map_over=""), ValueError, ["map_over"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, map_over="xs", map_item=3), TypeError, ["map_item", "int"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, input_keys=5), TypeError, ["input_keys", "int"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, input_keys="order_id"), TypeError, ["input_keys", "str"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, input_keys=["a", 7]), TypeError, ["input_keys", "int"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, input_keys=["a", ""]), ValueError, ["input_keys"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, retries=-1), ValueError, ["retries", "-1"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, retries=1.5), TypeError, ["retries", "float"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, timeout=0), ValueError, ["timeout", "0"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, timeout=-2.5), ValueError, ["timeout", "-2.5"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, timeout=timedelta(0)), ValueError, ["timeout"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, timeout="5"), TypeError, ["timeout", "str"]),
    (lambda wf, t: cl.subworkflow(wf, task_id=t, dependencies=[5]), TypeError, ["int"]),
])
def test_bad_arguments_raise_naming_the_value_and_register_nothing(ids, call, error, words):
    child = a_child(ids)
    with pytest.raises(error) as info:
        call(child, ids("bad"))
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    with pytest.raises(Exception, match=re.escape(ids("bad"))):
        cl.Workflow(ids.wf(), [ids("bad")])  # nothing was registered under the id


def test_a_subworkflow_returns_a_task_ref_named_for_what_it_is(ids):
    child = a_child(ids)
    node = cl.subworkflow(child, task_id=ids("node"))
    assert isinstance(node, cl.TaskRef) and node.task_id == node.__cloacina_task_id__ == ids("node")
    assert repr(node) == f"<cloacina sub-workflow task '{ids('node')}'>"


def test_a_workflow_that_contains_itself_is_a_workflow_error(ids):
    child = a_child(ids)
    node = cl.subworkflow(child, task_id=ids("node"))
    with pytest.raises(cl.WorkflowError, match=re.escape(child.name)):
        cl.Workflow(child.name, [node])


def test_a_workflow_that_contains_itself_further_down_is_a_workflow_error(ids):
    a = a_child(ids)
    b = cl.Workflow(ids.wf("b"), [cl.subworkflow(a, task_id=ids("a_node"))])
    c = cl.Workflow(ids.wf("c"), [cl.subworkflow(b, task_id=ids("b_node"))])
    with pytest.raises(cl.WorkflowError, match=re.escape(a.name)):
        cl.Workflow(a.name, [cl.subworkflow(c, task_id=ids("c_node"))])


def test_nesting_deeper_than_16_levels_is_a_workflow_error(ids):
    """A chain of workflows each holding the one before: 16 levels below the top build, 17 do not."""
    workflow = a_child(ids)
    for level in range(1, 17):
        workflow = cl.Workflow(ids.wf(f"level{level}"), [cl.subworkflow(workflow, task_id=ids(f"node{level}"))])
    too_deep = cl.subworkflow(workflow, task_id=ids("node17"))
    with pytest.raises(cl.WorkflowError, match="16"):
        cl.Workflow(ids.wf("level17"), [too_deep])


async def test_sixteen_levels_of_nesting_run(executor, ids):
    @cl.task(ids("leaf"))
    def leaf(ctx):
        return {"leaf": ctx["x"] + 1}

    workflows = [cl.Workflow(ids.wf("level0"), [leaf])]
    for level in range(1, 17):
        workflows.append(cl.Workflow(ids.wf(f"level{level}"),
                                     [cl.subworkflow(workflows[-1], task_id=ids(f"node{level}"))]))
    result = await run(executor, workflows[-1], {"x": 1})
    assert result["status"] == "Completed", summary(result)
    context = result["final_context"]
    for level in range(16, 0, -1):
        context = context[ids(f"node{level}")]
    assert context == {"x": 1, "leaf": 2}
    [deepest] = await executor.list_executions(workflow=workflows[0].name)
    assert deepest["parent_task_id"] == ids("node1")
    [above] = await executor.list_executions(workflow=workflows[1].name)
    assert deepest["parent_execution_id"] == above["execution_id"]


def test_the_sync_executor_runs_a_subworkflow(database_url, ids):
    import cloacina

    if cloacina.backend != BACKEND:
        pytest.skip(f"the cloacina dispatcher binds {cloacina.backend}, the suite tests {BACKEND}")

    @cloacina.task(ids("leaf"))
    def leaf(ctx):
        return {"leaf": ctx["x"] + 1}

    child = cloacina.Workflow(ids.wf("child"), [leaf])
    node = cloacina.subworkflow(child)
    assert isinstance(node, cloacina.TaskRef)
    with cloacina.SyncExecutor() as executor:
        executor.initialize(database_url)
        result = executor.execute(cloacina.Workflow(ids.wf(), [node]), {"x": 1})
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"] == {"x": 1, child.name: {"x": 1, "leaf": 2}}


# --- processes: kill -9, cancel ----------------------------------------------------------------

async def assert_one_child_per_node(executor: Any, parent: Dict[str, Any], prefix: str,
                                    items: Sequence[int]) -> List[Dict[str, Any]]:
    """The ``parent`` workflow of subworkflow_worker.py has exactly one child for ``sub`` and one per
    item for ``fan``, all Completed; returns them in node-key order."""
    child_name = f"{prefix}.workflow.child"
    children = await children_of(executor, parent["execution_id"], child_name)
    keys = [c["parent_task_id"] for c in children]
    expected = sorted([f"{prefix}.sub"] + [f"{prefix}.fan[{i}]" for i in items])
    assert sorted(keys) == expected, f"children by node: {collections.Counter(keys)}"
    for record in children:
        assert record["status"] == "Completed", summary(record)
    by_key = {c["parent_task_id"]: c for c in children}
    assert by_task(parent)[f"{prefix}.sub"]["child_execution_id"] == by_key[f"{prefix}.sub"]["execution_id"]
    return [by_key[k] for k in expected]


async def test_kill_9_while_children_run_leaves_one_child_per_node(database_url, client, procs, ids, effects,
                                                                  control):
    """The only worker dies while the four children (one node, and a node mapped over three items)
    run; a new worker finishes them: each node still has its one child, each child's held task
    runs again there (Lost, then Completed)."""
    flows = define(ids.prefix, str(effects), str(control))
    step, tail = f"{ids.prefix}.step", f"{ids.prefix}.tail"
    victim = start_worker(procs, database_url, ids.prefix, effects, control, name="victim")
    await ready(victim)
    parent_id = await client.submit(flows["parent"], {"run": "r", "items": [0, 1, 2], "hold": True})
    every = {"r:-", "r:0", "r:1", "r:2"}
    await until(lambda: set(tags(effects, step, "started")) == every, what="the four children's steps started",
                watch=[victim])

    victim.kill()
    (control / "release").touch()
    survivor = start_worker(procs, database_url, ids.prefix, effects, control, name="survivor")
    result = await finished(client, parent_id, procs=procs, what="the parent after the kill")
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"]["after"] == {"sub": "r:-", "fan": ["r:0", "r:1", "r:2"]}
    children = await assert_one_child_per_node(client, result, ids.prefix, [0, 1, 2])
    assert len(await client.list_executions(workflow=f"{ids.prefix}.workflow.child")) == 4
    for record in children:
        assert history(by_task(record)[step]) == ["Lost", "Completed"], summary(record)
    events = read_events(effects)
    for tag in sorted(every):
        assert [e.pid for e in select(events, run=tag, task=step, kind="started")] == [victim.pid, survivor.pid]
        assert [e.pid for e in select(events, run=tag, task=tail, kind="started")] == [survivor.pid]
    assert await stopped(survivor) == 0, survivor.describe()


@pytest.mark.parametrize("moment", ["as_a_child_fails", "while_the_children_rerun"])
async def test_kill_9_around_a_node_retry_leaves_one_child_per_node(database_url, client, procs, ids, effects,
                                                                   control, moment):
    """Every child's step fails once (the nodes have ``retries=1``); the worker is killed just as the
    first one fails, or once every resumed child runs its step again. A new worker finishes:
    still one child per node, each resumed, never resubmitted."""
    flows = define(ids.prefix, str(effects), str(control))
    step = f"{ids.prefix}.step"
    every = ["r:-", "r:0", "r:1", "r:2"]
    victim = start_worker(procs, database_url, ids.prefix, effects, control, name="victim")
    await ready(victim)
    parent_id = await client.submit(flows["parent"], {"run": "r", "items": [0, 1, 2], "fail_once": True,
                                                      "hold": True})
    if moment == "as_a_child_fails":
        await until(lambda: tags(effects, step, "failed"), what="a child's step failed", watch=[victim])
    else:
        await until(lambda: sorted(tags(effects, step, "started")) == sorted(every * 2),
                    what="every child's step failed and started again", watch=[victim])

    victim.kill()
    (control / "release").touch()
    survivor = start_worker(procs, database_url, ids.prefix, effects, control, name="survivor")
    result = await finished(client, parent_id, procs=procs, what="the parent after the kill")
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"]["after"] == {"sub": "r:-", "fan": ["r:0", "r:1", "r:2"]}
    children = await assert_one_child_per_node(client, result, ids.prefix, [0, 1, 2])
    assert len(await client.list_executions(workflow=f"{ids.prefix}.workflow.child")) == 4
    failed_lines = collections.Counter(tags(effects, step, "failed"))
    assert set(failed_lines.values()) <= {1}, failed_lines
    for record in children:
        steps = history(by_task(record)[step])
        assert steps[-1] == "Completed" and steps.count("Failed") <= 1, summary(record)
        if moment == "while_the_children_rerun":
            assert steps == ["Failed", "Lost", "Completed"], summary(record)
    sub_child = children[-1]
    assert sub_child["parent_task_id"] == f"{ids.prefix}.sub"
    sub_node = history(by_task(result)[f"{ids.prefix}.sub"])
    # The node's history has a Failed attempt per failed run of its child.
    assert sub_node[-1] == "Completed" and sub_node.count("Failed") == \
        history(by_task(sub_child)[step]).count("Failed"), (sub_node, summary(sub_child))
    assert await stopped(survivor) == 0, survivor.describe()


async def test_kill_9_while_nodes_submit_their_children_never_duplicates_one(database_url, client, procs, ids,
                                                                             effects, control):
    """Twenty parents (four children each, whose steps nap 50 ms) are worked on by four workers in
    turn, each killed at a moment 0 to 50 ms after it is ready, mostly while nodes submit
    their children (what the kills found is printed); a last worker finishes. Every node has its
    one child."""
    count = 20
    flows = define(ids.prefix, str(effects), str(control))
    step = f"{ids.prefix}.step"
    parents = [await client.submit(flows["parent"], {"run": f"p{n}", "items": [0, 1, 2], "nap": 0.05})
               for n in range(count)]
    rng = random.Random(26)
    at_kills = []
    for round_ in range(4):
        victim = start_worker(procs, database_url, ids.prefix, effects, control, name=f"victim{round_}")
        await ready(victim)
        # Only to vary the moment of the kill: a sweep over the first 50 ms of the worker's life.
        await asyncio.sleep(0.012 * round_ + rng.uniform(0, 0.012))
        victim.kill()
        records = [await client.get_execution(p) for p in parents]
        children = await client.list_executions(workflow=f"{ids.prefix}.workflow.child", limit=1000)
        at_kills.append((sum(r["status"] in FINAL_STATUSES for r in records), len(children)))
    assert at_kills[-1][0] < count, f"the kills came too late to test anything: {at_kills}"
    survivor = start_worker(procs, database_url, ids.prefix, effects, control, name="survivor")
    await ready(survivor)
    for parent_id in parents:
        result = await finished(client, parent_id, procs=procs, what="a parent after the kills")
        assert result["status"] == "Completed", summary(result)
        await assert_one_child_per_node(client, result, ids.prefix, [0, 1, 2])
    children = await client.list_executions(workflow=f"{ids.prefix}.workflow.child", limit=1000)
    assert len(children) == 4 * count
    lost = sum(history(by_task(c)[step]).count("Lost") for c in children)
    print(f"\nKILLS while nodes submit ({BACKEND}): (parents ended, children submitted) at each kill {at_kills}; "
          f"{lost} child steps Lost")
    assert await stopped(survivor) == 0, survivor.describe()


async def below(executor: Any, top_id: str, prefix: str) -> List[Dict[str, Any]]:
    """Every execution under the ``top`` workflow's execution ``top_id`` (its mid and the mid's children)."""
    mids = await children_of(executor, top_id, f"{prefix}.workflow.mid")
    out = list(mids)
    for mid in mids:
        out += await children_of(executor, mid["execution_id"], f"{prefix}.workflow.child")
    return out


def live_tasks(records: Sequence[Dict[str, Any]]) -> List[str]:
    return [f"{r['workflow_name']} {r['execution_id']}: {t['task_id']} {t['status']}"
            for r in records for t in r["task_results"] if t["status"] in LIVE]


async def test_cancel_of_a_parent_reaches_its_grandchildren_and_nothing_starts_after(database_url, client, procs,
                                                                                    ids, effects, control):
    """top -> mid -> three mapped children, each holding its step until cancelled; the mid also runs
    a sync gate that cannot be interrupted, before a node that would start one more child. After
    ``cancel(top)`` every descendant ends Cancelled; released, the gate ends, and for a while
    afterwards no task starts, no execution appears and nothing comes back to life."""
    flows = define(ids.prefix, str(effects), str(control))
    step, gate = f"{ids.prefix}.step", f"{ids.prefix}.gate"
    worker = start_worker(procs, database_url, ids.prefix, effects, control, name="worker")
    await ready(worker)
    top_id = await client.submit(flows["top"], {"run": "r", "items": [0, 1, 2], "hold": True})
    leaves = {"r:0", "r:1", "r:2"}
    await until(lambda: set(tags(effects, step, "started")) == leaves and tags(effects, gate, "started"),
                what="the grandchildren's steps and the mid's gate started", watch=[worker])

    assert await client.cancel(top_id) is True
    # The cancel ended every unstarted and waiting task below the top in its transaction; only
    # running tasks (the held steps, the gate) are still to stop.
    at_once = [await client.get_execution(top_id)] + await below(client, top_id, ids.prefix)
    assert [t for t in live_tasks(at_once) if not t.endswith(" Running")] == [], live_tasks(at_once)
    result = await finished(client, top_id, procs=procs, what="the cancelled top execution")
    assert result["status"] == "Cancelled", summary(result)
    await until(lambda: set(tags(effects, step, "cancelled")) == leaves, what="the held steps saw CancelledError",
                watch=[worker])
    (control / "release").touch()  # a step still running would end now, and what follows it start
    await until(lambda: tags(effects, gate, "finished"), what="the gate ended", watch=[worker])

    descendants = await below(client, top_id, ids.prefix)
    keys = sorted(d["parent_task_id"] for d in descendants)
    assert keys == sorted([f"{ids.prefix}.mid"] + [f"{ids.prefix}.leaves[{i}]" for i in range(3)]), keys

    async def all_cancelled() -> bool:
        records = [await client.get_execution(d["execution_id"]) for d in descendants]
        return all(r["status"] == "Cancelled" for r in records) and not live_tasks(records)

    await until(all_cancelled, what="every descendant Cancelled with no live task", watch=[worker])
    started = sorted((e.task, e.run) for e in read_events(effects) if e.kind == "started")
    assert started == sorted([(gate, "r:-")] + [(step, tag) for tag in leaves]), started

    watched_until = time.monotonic() + HOLD
    while time.monotonic() < watched_until:
        now_started = sorted((e.task, e.run) for e in read_events(effects) if e.kind == "started")
        assert now_started == started, f"started after the cancel: {sorted(set(now_started) - set(started))}"
        now_below = await below(client, top_id, ids.prefix)
        assert len(now_below) == len(descendants), [summary(r) for r in now_below]
        assert [r["status"] for r in now_below] == ["Cancelled"] * len(descendants), \
            [summary(r) for r in now_below]
        assert not live_tasks(now_below), live_tasks(now_below)
        record = await client.get_execution(top_id)
        assert record["status"] == "Cancelled" and not live_tasks([record]), summary(record)
        assert worker.alive(), worker.describe()
        await asyncio.sleep(POLL)
    assert await stopped(worker) == 0, worker.describe()


async def test_cancels_while_nodes_submit_their_children_leave_nothing_live(database_url, client, procs, ids,
                                                                           effects, control):
    """Twenty ``top`` executions (three levels; the children's steps nap 0.2 s) are cancelled one
    after another as a worker starts them, the first while their nodes submit children. Below
    each, everything ends Cancelled (or had Completed), and for a while afterwards no task starts
    and no execution appears."""
    count = 20
    flows = define(ids.prefix, str(effects), str(control))
    worker = start_worker(procs, database_url, ids.prefix, effects, control, name="worker")
    await ready(worker)
    tops = [await client.submit(flows["top"], {"run": f"t{n}", "items": [0, 1, 2], "nap": 0.2})
            for n in range(count)]
    cancelled = []
    for top_id in tops:
        cancelled.append(await client.cancel(top_id))
        await asyncio.sleep(0.01)  # only to spread the cancels over the executions' first moments
    names = [f"{ids.prefix}.workflow.{name}" for name in ("top", "mid", "child")]

    async def everything() -> List[Dict[str, Any]]:
        return [e for name in names for e in await client.list_executions(workflow=name, limit=1000)]

    async def settled() -> bool:
        records = await everything()
        return all(r["status"] in FINAL_STATUSES for r in records) and not live_tasks(records)

    await until(settled, what="every execution ended with no live task", watch=[worker])
    records = await everything()
    tops_ended = collections.Counter(r["status"] for r in records if r["workflow_name"] == names[0])
    below_ended = collections.Counter(r["status"] for r in records if r["workflow_name"] != names[0])
    print(f"\nCANCELS while nodes submit ({BACKEND}): cancel returned {collections.Counter(cancelled)}; "
          f"tops {dict(tops_ended)}, below them {dict(below_ended)}")
    assert tops_ended["Cancelled"] == cancelled.count(True), (tops_ended, cancelled)
    assert set(below_ended) <= {"Cancelled", "Completed"}, below_ended
    assert below_ended["Cancelled"] > 0, "no cancel reached a descendant: the test tested nothing"
    started = sorted((e.task, e.run) for e in read_events(effects) if e.kind == "started")
    watched_until = time.monotonic() + HOLD
    while time.monotonic() < watched_until:
        now_started = sorted((e.task, e.run) for e in read_events(effects) if e.kind == "started")
        assert now_started == started, f"started after the cancels: {sorted(set(now_started) - set(started))}"
        now = await everything()
        assert sorted((r["execution_id"], r["status"]) for r in now) == \
            sorted((r["execution_id"], r["status"]) for r in records), "an execution appeared or changed"
        assert worker.alive(), worker.describe()
        await asyncio.sleep(POLL)
    assert await stopped(worker) == 0, worker.describe()

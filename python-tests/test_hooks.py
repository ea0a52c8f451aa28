"""Hooks: ``Workflow(on_success=, on_failure=)`` run once an execution's outcome is decided.

A hook is a task of its own: it runs durably on any worker (with its own retries), after every
other task has ended; ``on_failure`` runs for Failed and for Cancelled, the other hook is Skipped
with a reason. It sees the final context plus ``ctx["execution"]``; it never changes the
execution's status or error, and ``wait()`` returns once it has ended. Most tests run in this
process (the ``executor`` fixture); the kill and several-worker tests run ``hooks_worker.py``
processes, whose tasks append lines to the side-effect file.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import signal
from typing import Any, Dict, List, Optional

import pytest

from backend import by_task, cl
from hooks_worker import LEAVES, define, seen_path
from procs import (Proc, Procs, client, control, effects, exited, finished, procs, read_events,  # noqa: F401
                   ready, select, stopped, summary, until)

WORKER = Path(__file__).resolve().parent / "hooks_worker.py"


def skip_reason(outcome: str, kind: str) -> str:
    """The reason of the hook an execution that ended ``outcome`` does not run."""
    runs = "Completed" if kind == "success" else "Failed or Cancelled"
    return f"the execution ended {outcome}; this on_{kind} hook runs only when it ends {runs}"


def history(task_result: Dict[str, Any]) -> List[Any]:
    return [(h["attempt"], h["status"]) for h in task_result["history"]]


def start_hooks_worker(procs: Procs, database_url: str, prefix: str, out: Path, control: Path, *, name: str,
                       hold_hooks: bool = False, die_after_failing: Optional[float] = None) -> Proc:
    """Starts ``hooks_worker.py`` (see its docstring for ``hold_hooks`` and ``die_after_failing``)."""
    ready_path = procs.workdir / f"{name}.ready"
    argv = [str(WORKER), "--url", database_url, "--prefix", prefix, "--out", str(out), "--control", str(control),
            "--ready", str(ready_path), "--lease-timeout", "5"]
    if hold_hooks:
        argv.append("--hold-hooks")
    if die_after_failing is not None:
        argv += ["--die-after-failing", repr(die_after_failing)]
    return procs.start(argv, name=name, ready_path=ready_path)


# --- durably, on another worker ----------------------------------------------------------------

@pytest.mark.parametrize("kill_when", ["its hook started", "0 ms after the last attempt raised",
                                       "10 ms after the last attempt raised", "30 ms after the last attempt raised"])
async def test_on_failure_runs_on_another_worker_when_the_failing_worker_is_killed(
        database_url, client, procs, ids, effects, control, kill_when):
    """The last attempt of a task fails in the only worker, which is then killed with kill -9: by
    the test once its on_failure hook started there (the failure is recorded: a hook starts after
    the outcome is decided), or by itself a few ms after the attempt raised (before or after its
    failure is committed, its hook claimed or started). A worker started afterwards runs the hook,
    once, and the hook sees the failure. The first worker's hooks never finish."""
    flows = define(ids.prefix, str(effects), str(control))
    doomed, alert, publish = ids("doomed"), ids("alert"), ids("publish")
    delay = None if kill_when == "its hook started" else int(kill_when.split(" ")[0]) / 1000
    first = start_hooks_worker(procs, database_url, ids.prefix, effects, control, name="first", hold_hooks=True,
                               die_after_failing=delay)
    await ready(first)
    execution_id = await client.submit(flows["fail"], {"run": "r"})
    if delay is None:
        await until(lambda: bool(select(read_events(effects), task=alert, kind="started")),
                    what="the hook started on the first worker", watch=[first])
        first.kill()
    assert await exited(first) == -signal.SIGKILL, first.describe()
    second = start_hooks_worker(procs, database_url, ids.prefix, effects, control, name="second")
    result = await finished(client, execution_id, procs=procs)
    assert await stopped(second) == 0, second.describe()
    print(f"\nHOOK after kill -9 {kill_when}: doomed {history(by_task(result)[doomed])}, "
          f"alert {history(by_task(result)[alert])}")

    assert result["status"] == "Failed", summary(result)
    tasks = by_task(result)
    # Two attempts failed (retries=1); one killed before its failure was committed is Lost and runs again.
    assert [status for _, status in history(tasks[doomed]) if status != "Lost"] == ["Failed", "Failed"], \
        summary(result)
    assert tasks[doomed]["status"] == "Failed"
    last_attempt = tasks[doomed]["history"][-1]["attempt"]
    assert result["error"] == f"task '{doomed}' failed: RuntimeError: doomed attempt {last_attempt}"
    events = read_events(effects)
    assert [e.pid for e in select(events, task=alert, kind="finished")] == [second.pid], events
    assert {e.pid for e in select(events, task=alert, kind="started")} <= {first.pid, second.pid}
    if delay is None:
        assert [e.pid for e in select(events, task=alert, kind="started")] == [first.pid, second.pid], events
        assert [status for _, status in history(tasks[alert])] == ["Lost", "Completed"], summary(result)
    assert tasks[alert]["status"] == "Completed" and tasks[alert]["error"] is None, summary(result)
    assert result["final_context"][alert.rsplit(".", 1)[1]] == second.pid
    assert json.loads(seen_path(control, "alert", "r", second.pid).read_text()) == {
        "execution_id": execution_id, "workflow_name": flows["fail"].name, "status": "Failed",
        "error": result["error"], "failed_tasks": [doomed]}
    assert tasks[publish]["status"] == "Skipped" and tasks[publish]["reason"] == skip_reason("Failed", "success")
    assert not select(events, task=publish), events


async def test_on_success_runs_once_per_execution_among_three_workers(database_url, client, procs, ids, effects,
                                                                      control):
    """Twelve executions whose last tasks end together on three workers: each runs its on_success
    hook exactly once, and skips its on_failure hook."""
    flows = define(ids.prefix, str(effects), str(control))
    publish, alert = ids("publish"), ids("alert")
    workers = [start_hooks_worker(procs, database_url, ids.prefix, effects, control, name=f"w{i}") for i in range(3)]
    await ready(*workers)
    runs = [f"r{i}" for i in range(12)]
    execution_ids = [await client.submit(flows["ok"], {"run": run}) for run in runs]
    results = [await finished(client, execution_id, procs=procs) for execution_id in execution_ids]
    for worker in workers:
        assert await stopped(worker) == 0, worker.describe()

    events = read_events(effects)
    for run, result in zip(runs, results):
        assert result["status"] == "Completed" and result["error"] is None, summary(result)
        tasks = by_task(result)
        assert tasks[publish]["status"] == "Completed" and history(tasks[publish]) == [(1, "Completed")], \
            summary(result)
        assert tasks[alert]["status"] == "Skipped" and tasks[alert]["reason"] == skip_reason("Completed", "failure")
        started = select(events, run=run, task=publish, kind="started")
        assert len(started) == 1 and len(select(events, run=run, task=publish, kind="finished")) == 1, events
        assert result["final_context"]["publish"] == started[0].pid
        assert json.loads(seen_path(control, "publish", run, started[0].pid).read_text()) == {
            "execution_id": result["execution_id"], "workflow_name": flows["ok"].name, "status": "Completed",
            "error": None, "failed_tasks": []}
        assert {f"leaf{i}" for i in range(LEAVES)} <= set(result["final_context"])
    assert not select(events, task=alert), events


# --- what a hook sees and changes --------------------------------------------------------------

def fan_with_hooks(ids: Any, seen: Dict[str, Any], *, fail: bool) -> Any:
    """root -> bad1, bad2, good; after (bad1, good): with ``fail``, bad1 and bad2 fail and after is
    skipped. Its hooks put what they see in ``seen``."""
    @cl.task(ids("root"))
    def root(ctx):
        return {"root": 1}

    @cl.task(ids("bad1"), dependencies=[root])
    def bad1(ctx):
        if fail:
            raise ValueError("one")
        return {"bad1": "fine"}

    @cl.task(ids("bad2"), dependencies=[root])
    def bad2(ctx):
        if fail:
            raise KeyError("two")
        return {"bad2": "fine"}

    @cl.task(ids("good"), dependencies=[root])
    def good(ctx):
        return {"good": 2}

    @cl.task(ids("after"), dependencies=[bad1, good])
    def after(ctx):
        return {"after": 3}

    @cl.task(ids("alert"))
    def alert(ctx):
        seen["on_failure"] = dict(ctx)
        return {"alerted": True}

    @cl.task(ids("publish"))
    async def publish(ctx):
        seen["on_success"] = dict(ctx)
        return {"published": True}

    return cl.Workflow(ids.wf(), [after, bad2], on_failure=alert, on_success=publish)


async def test_on_failure_sees_the_final_context_and_the_failure(executor, ids):
    seen: Dict[str, Any] = {}
    workflow = fan_with_hooks(ids, seen, fail=True)
    result = await executor.execute(workflow, {"input": "x"})

    assert result["status"] == "Failed", summary(result)
    assert result["error"].startswith(f"task '{ids('bad1')}' failed: ValueError: one"), result["error"]
    ctx = seen["on_failure"]
    execution = ctx.pop("execution")
    assert {**execution, "failed_tasks": sorted(execution["failed_tasks"])} == {
        "execution_id": result["execution_id"], "workflow_name": workflow.name, "status": "Failed",
        "error": result["error"], "failed_tasks": [ids("bad1"), ids("bad2")]}
    assert ctx == {"input": "x", "root": 1, "good": 2}
    assert "on_success" not in seen
    tasks = by_task(result)
    assert tasks[ids("after")]["status"] == "Skipped"
    assert tasks[ids("alert")]["status"] == "Completed" and tasks[ids("alert")]["dependencies"] == []
    assert tasks[ids("publish")]["status"] == "Skipped"
    assert tasks[ids("publish")]["reason"] == skip_reason("Failed", "success")
    # The hook's output joins the final context; ctx["execution"] does not.
    assert result["final_context"] == {"input": "x", "root": 1, "good": 2, "alerted": True}


async def test_on_success_sees_the_final_context_and_the_success(executor, ids):
    seen: Dict[str, Any] = {}
    workflow = fan_with_hooks(ids, seen, fail=False)
    result = await executor.execute(workflow, {"input": "x"})

    assert result["status"] == "Completed" and result["error"] is None, summary(result)
    ctx = seen["on_success"]
    assert ctx.pop("execution") == {"execution_id": result["execution_id"], "workflow_name": workflow.name,
                                    "status": "Completed", "error": None, "failed_tasks": []}
    assert ctx == {"input": "x", "root": 1, "bad1": "fine", "bad2": "fine", "good": 2, "after": 3}
    assert "on_failure" not in seen
    tasks = by_task(result)
    assert tasks[ids("alert")]["status"] == "Skipped"
    assert tasks[ids("alert")]["reason"] == skip_reason("Completed", "failure")
    assert result["final_context"]["published"] is True


@pytest.mark.parametrize("outcome", ["Completed", "Failed"])
async def test_a_failing_hook_is_recorded_and_leaves_the_status_and_error_alone(executor, ids, outcome):
    attempts: List[int] = []

    @cl.task(ids("work"))
    def work(ctx):
        if outcome == "Failed":
            raise ValueError("the work failed")
        return {"work": True}

    @cl.task(ids("hook"), retries=1, retry_delay=0.05)
    def hook(ctx):
        attempts.append(cl.current_task()["attempt"])
        raise RuntimeError(f"the hook broke (attempt {attempts[-1]})")

    hooks = {"on_success": hook} if outcome == "Completed" else {"on_failure": hook}
    result = await executor.execute(cl.Workflow(ids.wf(), [work], **hooks), {})

    assert result["status"] == outcome, summary(result)
    assert result["error"] == (None if outcome == "Completed" else f"task '{ids('work')}' failed: ValueError: the work failed")
    assert attempts == [1, 2]  # its own retries
    task = by_task(result)[ids("hook")]
    assert task["status"] == "Failed" and task["error"] == "RuntimeError: the hook broke (attempt 2)", task
    assert "RuntimeError: the hook broke" in task["traceback"]
    assert history(task) == [(1, "Failed"), (2, "Failed")]
    assert await executor.get_execution(result["execution_id"]) == result


async def test_a_hook_retries_on_its_own(executor, ids):
    @cl.task(ids("work"))
    def work(ctx):
        raise ValueError("the work failed")

    @cl.task(ids("hook"), retries=2, retry_delay=0.05)
    def hook(ctx):
        if cl.current_task()["attempt"] == 1:
            raise ConnectionError("the pager is down")
        return {"paged": ctx["execution"]["status"]}

    result = await executor.execute(cl.Workflow(ids.wf(), [work], on_failure=hook), {})
    assert result["status"] == "Failed", summary(result)
    assert result["error"] == f"task '{ids('work')}' failed: ValueError: the work failed"
    task = by_task(result)[ids("hook")]
    assert task["status"] == "Completed" and history(task) == [(1, "Failed"), (2, "Completed")], task
    assert result["final_context"] == {"paged": "Failed"}


async def test_the_execution_runs_until_its_hook_ends_and_wait_returns_after_it(executor, ids):
    release = asyncio.Event()
    started = asyncio.Event()
    ended: List[bool] = []

    @cl.task(ids("work"))
    def work(ctx):
        return {"work": True}

    @cl.task(ids("hook"))
    async def hook(ctx):
        started.set()
        await release.wait()
        ended.append(True)
        return {"hooked": True}

    execution_id = await executor.submit(cl.Workflow(ids.wf(), [work], on_success=hook), {})
    await asyncio.wait_for(started.wait(), 30)
    record = await executor.get_execution(execution_id)
    assert record["status"] == "Running" and record["completed_at"] is None, summary(record)
    assert by_task(record)[ids("work")]["status"] == "Completed"
    assert by_task(record)[ids("hook")]["status"] == "Running"
    waiter = asyncio.ensure_future(executor.wait(execution_id, timeout=30))
    done, _ = await asyncio.wait({waiter}, timeout=0.3)
    assert not done, "wait() returned while the hook ran"
    release.set()
    result = await waiter
    assert ended == [True]
    assert result["status"] == "Completed", summary(result)
    assert by_task(result)[ids("hook")]["status"] == "Completed"
    assert result["final_context"] == {"work": True, "hooked": True}


@pytest.mark.parametrize("how", ["cancel", "timeout", "cancel before any worker"])
async def test_on_failure_runs_after_a_cancellation_and_is_not_cancelled(database_url, ids, how):
    seen: List[Dict[str, Any]] = []
    slow_started = asyncio.Event()

    @cl.task(ids("slow"))
    async def slow(ctx):
        slow_started.set()
        await asyncio.sleep(60)
        return {"slow": True}

    @cl.task(ids("alert"))
    async def alert(ctx):
        await asyncio.sleep(0.3)  # a cancellation reaching it would end it here
        seen.append(ctx["execution"])
        return {"alerted": True}

    @cl.task(ids("publish"))
    def publish(ctx):
        return {"published": True}

    workflow = cl.Workflow(ids.wf(), [slow], on_failure=alert, on_success=publish)
    executor = cl.UnifiedExecutor()
    try:
        if how == "cancel before any worker":
            client = cl.UnifiedExecutor()
            await client.initialize(database_url, worker=False)
            try:
                execution_id = await client.submit(workflow, {})
                assert await client.cancel(execution_id) is True
            finally:
                await client.shutdown()
            await executor.initialize(database_url)
            result = await finished(executor, execution_id)
            message = "cancelled: cancelled by UnifiedExecutor.cancel()"
        else:
            await executor.initialize(database_url)
            if how == "cancel":
                execution_id = await executor.submit(workflow, {})
                await asyncio.wait_for(slow_started.wait(), 30)
                assert await executor.cancel(execution_id) is True
                result = await finished(executor, execution_id)
                message = "cancelled: cancelled by UnifiedExecutor.cancel()"
            else:
                result = await executor.execute(workflow, {}, timeout=0.5)
                execution_id = result["execution_id"]
                message = "cancelled: execution timed out after 0.5 s"
    finally:
        await executor.shutdown()

    assert result["status"] == "Cancelled" and result["error"] == message, summary(result)
    tasks = by_task(result)
    assert tasks[ids("slow")]["status"] == "Cancelled"
    assert tasks[ids("alert")]["status"] == "Completed" and history(tasks[ids("alert")]) == [(1, "Completed")], \
        summary(result)
    assert tasks[ids("publish")]["status"] == "Skipped"
    assert tasks[ids("publish")]["reason"] == skip_reason("Cancelled", "success")
    assert seen == [{"execution_id": execution_id, "workflow_name": workflow.name, "status": "Cancelled",
                     "error": message, "failed_tasks": []}]
    assert result["final_context"] == {"alerted": True}


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_cancel_or_timeout_while_the_hook_runs_keeps_the_outcome_and_the_hook(executor, ids, how):
    """The outcome was decided before the hook started: neither changes it nor stops the hook."""
    started = asyncio.Event()
    cancelled: List[bool] = []

    @cl.task(ids("work"))
    def work(ctx):
        return {"work": True}

    @cl.task(ids("publish"))
    async def publish(ctx):
        started.set()
        try:
            await asyncio.sleep(0.8)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return {"published": ctx["execution"]["status"]}

    workflow = cl.Workflow(ids.wf(), [work], on_success=publish)
    if how == "cancel":
        execution_id = await executor.submit(workflow, {})
        await asyncio.wait_for(started.wait(), 30)
        await executor.cancel(execution_id)  # True (the execution is Running), though nothing changes
        result = await finished(executor, execution_id)
    else:
        result = await executor.execute(workflow, {}, timeout=0.3)
    assert result["status"] == "Completed" and result["error"] is None, summary(result)
    assert cancelled == []
    assert by_task(result)[ids("publish")]["status"] == "Completed", summary(result)
    assert result["final_context"] == {"work": True, "published": "Completed"}


async def test_a_cancelled_execution_waiting_for_a_worker_names_its_hook_not_its_cancelled_task(client, ids):
    @cl.task(ids("work"))
    def work(ctx):
        return None

    @cl.task(ids("alert"))
    def alert(ctx):
        return None

    execution_id = await client.submit(cl.Workflow(ids.wf(), [work], on_failure=alert), {})
    assert await client.cancel(execution_id) is True
    record = await client.get_execution(execution_id)
    assert record["status"] in ("Pending", "Running"), summary(record)
    assert by_task(record)[ids("work")]["status"] == "Cancelled", summary(record)
    assert by_task(record)[ids("alert")]["status"] == "Pending", summary(record)
    assert ids("work") not in (record["reason"] or ""), summary(record)


async def test_resume_runs_the_hooks_again_after_the_new_outcome(executor, ids, tmp_path):
    fixed = tmp_path / "fixed"
    alerts: List[str] = []
    publishes: List[str] = []

    @cl.task(ids("flaky"))
    def flaky(ctx):
        if not fixed.exists():
            raise ValueError("not yet")
        return {"flaky": True}

    @cl.task(ids("alert"))
    def alert(ctx):
        alerts.append(ctx["execution"]["status"])

    @cl.task(ids("publish"))
    def publish(ctx):
        publishes.append(ctx["execution"]["status"])

    workflow = cl.Workflow(ids.wf(), [flaky], on_failure=alert, on_success=publish)
    first = await executor.execute(workflow, {})
    assert first["status"] == "Failed" and alerts == ["Failed"] and publishes == [], summary(first)

    again = await finished(executor, await executor.resume(first["execution_id"]))
    assert again["status"] == "Failed" and alerts == ["Failed", "Failed"] and publishes == [], summary(again)
    assert by_task(again)[ids("alert")]["status"] == "Completed"

    fixed.touch()
    last = await finished(executor, await executor.resume(first["execution_id"]))
    assert last["status"] == "Completed" and last["error"] is None, summary(last)
    assert alerts == ["Failed", "Failed"] and publishes == ["Completed"]
    tasks = by_task(last)
    assert tasks[ids("publish")]["status"] == "Completed"
    assert tasks[ids("alert")]["status"] == "Skipped"
    assert tasks[ids("alert")]["reason"] == skip_reason("Completed", "failure")


# --- hooks and sub-workflows -------------------------------------------------------------------

async def test_a_child_workflow_s_hook_runs_before_its_node_completes(executor, ids):
    @cl.task(ids("step"))
    def step(ctx):
        return {"step": 1}

    @cl.task(ids("child_hook"))
    async def child_hook(ctx):
        await asyncio.sleep(0.2)
        return {"child_hook": ctx["execution"]["workflow_name"]}

    child = cl.Workflow(ids.wf("child"), [step], on_success=child_hook)
    node = cl.subworkflow(child, task_id=ids("node"))

    @cl.task(ids("after"), dependencies=[node])
    def after(ctx):
        return {"after": ctx[ids("node")]}

    result = await executor.execute(cl.Workflow(ids.wf(), [after]), {})
    assert result["status"] == "Completed", summary(result)
    assert result["final_context"]["after"] == {"step": 1, "child_hook": child.name}


async def test_cancelling_a_parent_runs_the_on_failure_hooks_of_its_child_and_its_own(executor, ids):
    seen: Dict[str, Dict[str, Any]] = {}
    started = asyncio.Event()

    @cl.task(ids("slow"))
    async def slow(ctx):
        started.set()
        await asyncio.sleep(60)

    @cl.task(ids("child_alert"))
    def child_alert(ctx):
        seen["child"] = ctx["execution"]

    @cl.task(ids("parent_alert"))
    def parent_alert(ctx):
        seen["parent"] = ctx["execution"]

    child = cl.Workflow(ids.wf("child"), [slow], on_failure=child_alert)
    node = cl.subworkflow(child, task_id=ids("node"))
    execution_id = await executor.submit(cl.Workflow(ids.wf(), [node], on_failure=parent_alert), {})
    await asyncio.wait_for(started.wait(), 30)
    child_id = by_task(await executor.get_execution(execution_id))[ids("node")]["child_execution_id"]
    assert await executor.cancel(execution_id) is True
    result = await finished(executor, execution_id)
    child_result = await finished(executor, child_id)

    assert result["status"] == "Cancelled" and child_result["status"] == "Cancelled", summary(result)
    assert by_task(child_result)[ids("child_alert")]["status"] == "Completed", summary(child_result)
    assert by_task(result)[ids("parent_alert")]["status"] == "Completed", summary(result)
    assert seen["child"]["execution_id"] == child_id and seen["child"]["status"] == "Cancelled"
    assert seen["parent"]["execution_id"] == execution_id and seen["parent"]["status"] == "Cancelled"


# --- building workflows with hooks -------------------------------------------------------------

def test_hooks_are_tasks_of_the_workflow_given_as_functions_or_ids(ids):
    @cl.task(ids("work"))
    def work(ctx):
        return None

    @cl.task(ids("alert"))
    def alert(ctx):
        return None

    @cl.task(ids("publish"), dependencies=[work])
    def publish(ctx):
        return None

    by_function = cl.Workflow(ids.wf("a"), [work], on_success=publish, on_failure=alert)
    by_id = cl.Workflow(ids.wf("b"), [work], on_success=ids("publish"), on_failure=ids("alert"))
    for workflow in (by_function, by_id):
        assert workflow.task_ids == [ids("work"), ids("publish"), ids("alert")]
    assert by_function.version == by_id.version
    assert cl.Workflow(ids.wf("c"), [work], on_success=None, on_failure=None).task_ids == [ids("work")]


@pytest.mark.parametrize("case, error, words", [
    ("hook is a task", cl.WorkflowError, "is given as on_failure and is also one of its tasks"),
    ("hook is a dependency", cl.WorkflowError, "is given as on_success and is also one of its tasks"),
    ("one task both hooks", cl.WorkflowError, "is given as on_failure and is also one of its tasks (or a hook"),
    ("unknown id", cl.WorkflowError, "names unknown task"),
    ("mapped", ValueError, "is a mapped or sub-workflow task; a hook must be a plain @task"),
    ("sub-workflow", ValueError, "is a mapped or sub-workflow task; a hook must be a plain @task"),
    ("not a task", TypeError, "expected a task id (str) or an @task function, got int"),
])
def test_bad_hooks_raise_naming_them(ids, case, error, words):
    @cl.task(ids("root"))
    def root(ctx):
        return None

    @cl.task(ids("work"), dependencies=[root])
    def work(ctx):
        return None

    @cl.task(ids("hook"))
    def hook(ctx):
        return None

    @cl.task(ids("mapped"), map_over="items")
    def mapped(ctx):
        return None

    sub = cl.subworkflow(cl.Workflow(ids.wf("child"), [root]), task_id=ids("sub"))
    hooks = {
        "hook is a task": {"on_failure": work},
        "hook is a dependency": {"on_success": root},
        "one task both hooks": {"on_success": hook, "on_failure": hook},
        "unknown id": {"on_success": ids("nowhere")},
        "mapped": {"on_failure": mapped},
        "sub-workflow": {"on_failure": sub},
        "not a task": {"on_success": 5},
    }[case]
    with pytest.raises(error) as raised:
        cl.Workflow(ids.wf(), [work], **hooks)
    assert words in str(raised.value)

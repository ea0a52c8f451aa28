"""Calls that used to wait forever now return or raise: nested executions, blocked task threads,
a forked child, a cancelled initialize, and a task's ``__del__`` running while it is replaced.
Scenarios that could hang the whole interpreter run in a child process with a time limit."""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap
from typing import Any, Dict, List

import pytest

from backend import IS_SQLITE, by_task, cl

CHILD_TIMEOUT = 120  # seconds; a child still running then is killed and the test fails


async def run_child(python: str, env: Dict[str, str], script: str, *args: str) -> List[str]:
    """Runs `script` in a fresh interpreter (killed after CHILD_TIMEOUT); returns its stdout lines."""
    try:
        done = await asyncio.to_thread(
            subprocess.run, [python, "-c", textwrap.dedent(script), *args], env=env, capture_output=True,
            text=True, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"the child hung for {CHILD_TIMEOUT}s\n{expired.stdout}\n{expired.stderr}") from None
    assert done.returncode == 0, f"child exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout.splitlines()


# --- nested executions -------------------------------------------------------------------------

def child_workflow(ids: Any) -> Any:
    @cl.task(ids("child"))
    async def child(ctx):
        return {"doubled": ctx["n"] * 2}

    return cl.Workflow(ids.wf("child"), [child])


@pytest.mark.parametrize("parents, max_concurrency", [(1, 1), (8, 8)])
async def test_tasks_awaiting_nested_executions_do_not_hold_the_slots_those_need(
        database_url, ids, parents, max_concurrency):
    executor = cl.UnifiedExecutor(max_concurrency=max_concurrency)
    await executor.initialize(database_url)
    nested = child_workflow(ids)
    tasks = []
    for i in range(parents):
        async def parent(ctx, i=i):
            result = await executor.execute(nested, {"n": i})
            return {f"p{i}": result["final_context"]["doubled"]}
        tasks.append(cl.task(ids(f"parent{i}"))(parent))
    try:
        result = await asyncio.wait_for(executor.execute(cl.Workflow(ids.wf(), tasks)), 60)
    finally:
        await executor.shutdown()
    assert result["status"] == "Completed", result
    assert {k: v for k, v in result["final_context"].items()} == {f"p{i}": 2 * i for i in range(parents)}


@pytest.mark.parametrize("form", ["readme", "wrapped"])
async def test_a_sync_task_waiting_on_a_nested_execution_through_the_loop_lends_its_slot(database_url, ids, form):
    """The README's form, `run_coroutine_threadsafe(executor.execute(wf), loop).result()`, calls
    `execute` off the loop (it returns a coroutine that starts once the loop runs it); the
    wrapped form calls it on the loop."""
    executor = cl.UnifiedExecutor(max_concurrency=1)
    await executor.initialize(database_url)
    nested = child_workflow(ids)
    loop = asyncio.get_running_loop()

    async def run_nested():
        return await executor.execute(nested, {"n": 21})

    @cl.task(ids("parent"))
    def parent(ctx):
        coroutine = executor.execute(nested, {"n": 21}) if form == "readme" else run_nested()
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        return {"answer": future.result(timeout=60)["final_context"]["doubled"]}

    try:
        result = await asyncio.wait_for(executor.execute(cl.Workflow(ids.wf(), [parent])), 60)
    finally:
        await executor.shutdown()
    assert result["status"] == "Completed", result
    assert result["final_context"] == {"answer": 42}


async def test_called_off_the_loop_the_executor_methods_start_only_once_a_loop_runs_them(database_url, ids):
    executor = cl.UnifiedExecutor()
    await executor.initialize(database_url)
    loop = asyncio.get_running_loop()
    workflow = child_workflow(ids)

    def off_the_loop() -> Dict[str, Any]:
        dropped = executor.submit(workflow, {"n": 1})
        assert asyncio.iscoroutine(dropped)
        dropped.close()  # never run: nothing submitted
        execution_id = asyncio.run_coroutine_threadsafe(executor.submit(workflow, {"n": 2}), loop).result(60)
        record: Dict[str, Any] = asyncio.run_coroutine_threadsafe(executor.wait(execution_id), loop).result(60)
        return record

    try:
        record = await asyncio.wait_for(asyncio.to_thread(off_the_loop), 60)
        listed = await executor.list_executions()
    finally:
        await executor.shutdown()
    assert record["status"] == "Completed" and record["final_context"] == {"n": 2, "doubled": 4}, record
    assert [r["execution_id"] for r in listed] == [record["execution_id"]]


# --- blocked sync task threads -----------------------------------------------------------------

STARVE = """
import asyncio, json, sys, threading
from backend import cl

async def main(first, second):
    blocked = threading.Event()
    tasks = []
    for i in range(400):
        def block(ctx):
            blocked.wait(120)
        tasks.append(cl.task(f"block{i}", timeout=0.05)(block))
    executor = cl.UnifiedExecutor(max_concurrency=64)
    await executor.initialize(first)
    result = await asyncio.wait_for(executor.execute(cl.Workflow("blocked", tasks)), 100)
    refused = [t for t in result["task_results"] if "threads are still blocked" in (t["error"] or "")]
    print(json.dumps({"status": result["status"], "refused": len(refused)}), flush=True)

    @cl.task("quick")
    async def quick(ctx):
        return {"quick": 1}

    other = cl.UnifiedExecutor()
    await asyncio.wait_for(other.initialize(second), 30)
    done = await asyncio.wait_for(other.execute(cl.Workflow("quick", [quick])), 30)
    print(json.dumps({"other": done["status"]}), flush=True)

    blocked.set()
    @cl.task("sync_again")
    def sync_again(ctx):
        return {"again": 1}
    for _ in range(600):  # abandoned threads return once released; sync tasks work again
        again = await asyncio.wait_for(other.execute(cl.Workflow("again", [sync_again])), 30)
        if again["status"] == "Completed":
            break
        await asyncio.sleep(0.05)
    print(json.dumps({"again": again["status"]}), flush=True)
    await other.shutdown()
    await executor.shutdown()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.sqlite_only
async def test_blocked_sync_task_threads_neither_hang_execute_nor_starve_the_database(
        python, subprocess_env, tmp_path):
    lines = await run_child(python, subprocess_env, STARVE, f"sqlite:///{tmp_path / 'a.db'}",
                            f"sqlite:///{tmp_path / 'b.db'}")
    first, other, again = (json.loads(line) for line in lines)
    assert first["status"] == "Failed"
    assert first["refused"] > 0, first  # past the bound, attempts fail at once
    assert other == {"other": "Completed"}
    assert again == {"again": "Completed"}


# --- os.fork -----------------------------------------------------------------------------------

FORK = """
import asyncio, os, sys
from backend import cl

async def parent(url):
    executor = cl.UnifiedExecutor()
    await executor.initialize(url)
    pid = os.fork()
    if pid == 0:
        async def child():
            for call in (lambda: executor.list_executions(), lambda: cl.UnifiedExecutor().initialize(url)):
                try:
                    await asyncio.wait_for(call(), 10)
                    print("child: no error", flush=True)
                except cl.CloacinaError as e:
                    print("child:", type(e).__name__, str(e), flush=True)
        asyncio.run(child())
        os._exit(0)
    os.waitpid(pid, 0)
    print("parent:", len(await executor.list_executions()) >= 0, flush=True)
    await executor.shutdown()

asyncio.run(parent(sys.argv[1]))
"""


async def test_using_cloacina_in_a_forked_child_raises_instead_of_hanging(python, subprocess_env, database_url):
    lines = await run_child(python, subprocess_env, FORK, database_url)
    children = [line for line in lines if line.startswith("child:")]
    assert len(children) == 2, lines
    for line in children:
        assert line.startswith("child: CloacinaError cloacina cannot run in a process forked"), line
        assert "'spawn' or 'forkserver'" in line
    assert "parent: True" in lines


# --- a cancelled initialize --------------------------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


async def test_a_cancelled_initialize_leaves_the_executor_new(database_url, silent_server, python, tmp_path):
    executor = cl.UnifiedExecutor()
    if IS_SQLITE:
        path = tmp_path / "locked.db"
        with subprocess.Popen([python, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) as holder:
            try:
                assert holder.stdout.readline().strip() == "locked"
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(executor.initialize(f"sqlite:///{path}"), 0.5)
                assert "not initialized" in repr(executor)
            finally:
                holder.kill()
    else:
        silent = f"postgresql://u:p@127.0.0.1:{silent_server.port}/db?connect_timeout=30"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(executor.initialize(silent), 0.5)
        assert "not initialized" in repr(executor)
    with pytest.raises(cl.NotInitializedError):
        await executor.list_executions()
    await executor.initialize(database_url)
    try:
        assert "ready" in repr(executor)
        assert isinstance(await executor.list_executions(), list)
    finally:
        await executor.shutdown()


# --- the registry and __del__ ------------------------------------------------------------------

REREGISTER = """
from backend import cl

@cl.task("plain")
def plain(ctx):
    return None

class BuildsAWorkflowWhenCollected:
    def __del__(self):
        print("del built", cl.Workflow("from_del", [plain]).name, flush=True)

def with_finalizer():
    keep = BuildsAWorkflowWhenCollected()
    def task_body(ctx, keep=keep):
        return None
    return task_body

cl.task("replaced")(with_finalizer())
cl.task("replaced")(with_finalizer())
print("registered twice", flush=True)
"""


async def test_replacing_a_task_whose_function_builds_a_workflow_when_collected(python, subprocess_env):
    lines = await run_child(python, subprocess_env, REREGISTER)
    assert lines[:2] == ["del built from_del", "registered twice"], lines


# --- a sync task still running when the program ends -------------------------------------------

STUCK_AT_EXIT = """
import asyncio, sys, threading, time
from backend import cl

started = threading.Event()

@cl.task(task_id="stuck.forever")
def forever(ctx):
    print("task started", flush=True)
    started.set()
    while True:  # ignores cancellation, as a sync task can
        time.sleep(0.05)

async def main(url):
    executor = cl.UnifiedExecutor()
    await executor.initialize(url)
    execution = await executor.submit(cl.Workflow("stuck", [forever]))
    # Its function must be running (a task claimed but not yet started is cancelled cleanly).
    assert await asyncio.to_thread(started.wait, 60), "the task never started"
    await executor.cancel(execution)
    print((await executor.wait(execution, timeout=60))["status"], flush=True)
    await executor.shutdown()
    print("main returned", flush=True)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_sync_task_stuck_at_exit_ends_the_process_with_status_1_not_an_abort(
        python, subprocess_env, database_url):
    done = await asyncio.to_thread(
        subprocess.run, [python, "-c", textwrap.dedent(STUCK_AT_EXIT), database_url], env=subprocess_env,
        capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    assert done.returncode == 1, f"child exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert done.stdout.splitlines() == ["task started", "Cancelled", "main returned"], done.stdout
    assert "task thread(s) still running Python code" in done.stderr, done.stderr

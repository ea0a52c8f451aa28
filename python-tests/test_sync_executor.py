"""cloacina.SyncExecutor: the UnifiedExecutor's methods, blocking, from plain (non-async) code.

These are plain ``def`` tests on purpose: no event loop runs in the test's thread. They use
the dispatcher package (``cloacina``), which must bind the backend under test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import uuid
from typing import Any, Callable, Dict, Iterator, List

import pytest

import cloacina
from backend import BACKEND

pytestmark = pytest.mark.skipif(
    cloacina.backend != BACKEND,
    reason=f"the cloacina dispatcher binds {cloacina.backend}, the suite tests {BACKEND} (set CLOACINA_BACKEND)",
)

DEADLINE = 30.0  # seconds allowed for anything a test waits for
LOOP_THREAD = "cloacina-sync-executor"


def loop_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == LOOP_THREAD]


@pytest.fixture
def blocking_task(ids: Any) -> Iterator[Dict[str, Any]]:
    """A sync task that signals ``started`` and blocks until ``release`` is set (at teardown
    at the latest), and a workflow of it."""
    started, release = threading.Event(), threading.Event()

    @cloacina.task(ids("block"))
    def block(ctx: Dict[str, Any]) -> Dict[str, Any]:
        started.set()
        release.wait(DEADLINE)
        return {"released": True}

    try:
        yield {"workflow": cloacina.Workflow(ids.wf("block"), [block]), "started": started, "release": release}
    finally:
        release.set()


# --- running workflows -------------------------------------------------------------------------


def test_execute_runs_sync_and_async_tasks(sync_executor, ids):
    seen: Dict[str, str] = {}

    @cloacina.task(ids("extract"))
    def extract(ctx):
        seen["extract"] = threading.current_thread().name
        return {"rows": [1, 2, 3]}

    @cloacina.task(ids("total"), dependencies=[extract])
    async def total(ctx):
        await asyncio.sleep(0.01)
        seen["total"] = threading.current_thread().name
        return {"total": sum(ctx["rows"])}

    wf = cloacina.Workflow(ids.wf(), [total])
    result = sync_executor.execute(wf, {"source": "demo"})
    assert result["status"] == "Completed", result
    assert result["final_context"] == {"source": "demo", "rows": [1, 2, 3], "total": 6}
    assert [r["task_id"] for r in result["task_results"]] == [ids("extract"), ids("total")]
    # Async tasks run on the executor's own loop; sync tasks on worker threads.
    assert seen["total"] == LOOP_THREAD
    assert seen["extract"] not in (LOOP_THREAD, threading.current_thread().name)


def test_failing_task_gives_failed_result(sync_executor, ids):
    @cloacina.task(ids("boom"))
    def boom(ctx):
        raise ValueError("boom")

    result = sync_executor.execute(cloacina.Workflow(ids.wf(), [boom]))
    assert result["status"] == "Failed"
    assert result["task_results"][0]["error"] == "ValueError: boom"


def test_submit_wait_get_and_list(sync_executor, ids):
    @cloacina.task(ids("double"))
    def double(ctx):
        return {"y": ctx["x"] * 2}

    wf = cloacina.Workflow(ids.wf(), [double])
    execution_id = sync_executor.submit(wf, {"x": 21}, idempotency_key=ids("key"))
    assert str(uuid.UUID(execution_id)) == execution_id
    assert sync_executor.submit(wf, {"x": 0}, idempotency_key=ids("key")) == execution_id

    result = sync_executor.wait(execution_id, timeout=DEADLINE)
    assert result["status"] == "Completed" and result["final_context"]["y"] == 42
    assert sync_executor.get_execution(execution_id) == result
    assert sync_executor.get_execution(str(uuid.uuid4())) is None

    other = sync_executor.execute(wf, {"x": 1})
    listed = sync_executor.list_executions(workflow=wf.name)
    assert [e["execution_id"] for e in listed] == [other["execution_id"], execution_id]
    assert [e["execution_id"] for e in sync_executor.list_executions(limit=1)] == [other["execution_id"]]
    assert sync_executor.list_executions(workflow=wf.name, status="Failed") == []


def test_cancel_and_resume(sync_executor, blocking_task):
    execution_id = sync_executor.submit(blocking_task["workflow"])
    assert blocking_task["started"].wait(DEADLINE)
    with pytest.raises(TimeoutError):
        sync_executor.wait(execution_id, timeout=0.05)
    assert sync_executor.cancel(execution_id) is True
    assert sync_executor.wait(execution_id, timeout=DEADLINE)["status"] == "Cancelled"
    assert sync_executor.cancel(execution_id) is False

    blocking_task["release"].set()
    assert sync_executor.resume(execution_id) == execution_id
    result = sync_executor.wait(execution_id, timeout=DEADLINE)
    assert result["status"] == "Completed" and result["final_context"] == {"released": True}


def test_schedule_round_trip(sync_executor, ids):
    @cloacina.task(ids("nightly"))
    def nightly(ctx):
        return None

    wf = cloacina.Workflow(ids.wf(), [nightly])
    name = sync_executor.schedule(wf, "0 3 * * *", timezone="Europe/Berlin", context={"v": 1})
    assert name == wf.name
    [listed] = sync_executor.list_schedules()
    assert (listed["name"], listed["cron"], listed["timezone"]) == (name, "0 3 * * *", "Europe/Berlin")
    assert listed["context"] == {"v": 1} and listed["paused"] is False

    sync_executor.pause_schedule(name)
    assert sync_executor.list_schedules()[0]["paused"] is True
    sync_executor.resume_schedule(name)
    assert sync_executor.list_schedules()[0]["paused"] is False

    sync_executor.unschedule(name)
    assert sync_executor.list_schedules() == []
    with pytest.raises(cloacina.ScheduleNotFoundError):
        sync_executor.unschedule(name)


def test_limit_round_trip(sync_executor, ids):
    sync_executor.set_limit(ids("api"), concurrency=3, rate=10, per=2)
    assert sync_executor.list_limits() == [
        {"name": ids("api"), "concurrency": 3, "rate": 10, "per": 2.0, "running": 0, "waiting": 0}]
    with pytest.raises(ValueError):
        sync_executor.set_limit(ids("api"), concurrency=0)

    sync_executor.delete_limit(ids("api"))
    assert sync_executor.list_limits() == []
    with pytest.raises(cloacina.LimitNotFoundError):
        sync_executor.delete_limit(ids("api"))


def test_calls_from_several_threads_at_once(sync_executor, ids):
    @cloacina.task(ids("square"))
    def square(ctx):
        return {"y": ctx["x"] ** 2}

    wf = cloacina.Workflow(ids.wf(), [square])
    results: Dict[int, Any] = {}

    def run(x: int) -> None:
        results[x] = sync_executor.execute(wf, {"x": x})["final_context"]["y"]

    threads = [threading.Thread(target=run, args=(x,)) for x in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert results == {x: x * x for x in range(8)}


# --- errors ------------------------------------------------------------------------------------


def test_errors_propagate_with_their_types(sync_executor, ids):
    with pytest.raises(cloacina.ExecutionNotFoundError) as not_found:
        sync_executor.wait(str(uuid.uuid4()))
    assert type(not_found.value) is cloacina.ExecutionNotFoundError
    with pytest.raises(ValueError, match="not a valid execution id"):
        sync_executor.wait("not-a-uuid")
    with pytest.raises(TypeError):
        sync_executor.get_execution(42)
    with pytest.raises(cloacina.ScheduleNotFoundError):
        sync_executor.pause_schedule(ids("nope"))

    @cloacina.task(ids("ok"))
    def ok(ctx):
        return None

    wf = cloacina.Workflow(ids.wf(), [ok])
    done = sync_executor.execute(wf)
    with pytest.raises(cloacina.ExecutionStateError):
        sync_executor.resume(done["execution_id"])
    with pytest.raises(cloacina.ContextError):
        sync_executor.submit(wf, {"bad": {1, 2}})
    with pytest.raises(cloacina.ConfigurationError):
        sync_executor.schedule(wf, "not a cron")
    with pytest.raises(cloacina.CloacinaError, match="already initialized"):
        sync_executor.initialize("sqlite://:memory:")


def test_constructor_checks_max_concurrency():
    assert cloacina.SyncExecutor(3).max_concurrency == 3
    assert cloacina.SyncExecutor().max_concurrency == 8
    with pytest.raises(ValueError):
        cloacina.SyncExecutor(0)
    with pytest.raises(TypeError):
        cloacina.SyncExecutor(True)


def test_failed_initialize_leaves_it_ready_for_another(database_url, ids):
    executor = cloacina.SyncExecutor()
    threads_before = len(loop_threads())
    with pytest.raises(cloacina.ConfigurationError):
        executor.initialize("mysql://nowhere/db")
    assert len(loop_threads()) == threads_before  # its thread was stopped
    executor.initialize(database_url)
    try:
        @cloacina.task(ids("t"))
        def t(ctx):
            return {"ok": True}

        assert executor.execute(cloacina.Workflow(ids.wf(), [t]))["status"] == "Completed"
    finally:
        executor.shutdown()


# --- lifecycle -------------------------------------------------------------------------------


def all_calls(wf: Any) -> Dict[str, Callable[[cloacina.SyncExecutor], Any]]:
    """One call of every blocking method except initialize and shutdown."""
    some_id = str(uuid.uuid4())
    return {
        "submit": lambda ex: ex.submit(wf),
        "wait": lambda ex: ex.wait(some_id),
        "execute": lambda ex: ex.execute(wf),
        "cancel": lambda ex: ex.cancel(some_id),
        "resume": lambda ex: ex.resume(some_id),
        "get_execution": lambda ex: ex.get_execution(some_id),
        "list_executions": lambda ex: ex.list_executions(),
        "schedule": lambda ex: ex.schedule(wf, "@daily"),
        "list_schedules": lambda ex: ex.list_schedules(),
        "pause_schedule": lambda ex: ex.pause_schedule("x"),
        "resume_schedule": lambda ex: ex.resume_schedule("x"),
        "unschedule": lambda ex: ex.unschedule("x"),
    }


@pytest.fixture
def trivial_workflow(ids):
    @cloacina.task(ids("noop"))
    def noop(ctx):
        return None

    return cloacina.Workflow(ids.wf(), [noop])


def test_methods_before_initialize_and_after_shutdown_raise_not_initialized(database_url, trivial_workflow):
    executor = cloacina.SyncExecutor()
    for method, call in all_calls(trivial_workflow).items():
        with pytest.raises(cloacina.NotInitializedError, match="not initialized"):
            call(executor)
    executor.initialize(database_url)
    assert executor.execute(trivial_workflow)["status"] == "Completed"
    executor.shutdown()
    assert "shut down" in repr(executor)
    for method, call in all_calls(trivial_workflow).items():
        with pytest.raises(cloacina.NotInitializedError, match="shut down"):
            call(executor)
    executor.shutdown()  # again: nothing to do
    with pytest.raises(cloacina.NotInitializedError, match="shut down"):
        executor.initialize(database_url)


def test_context_manager_shuts_down(database_url, trivial_workflow):
    with cloacina.SyncExecutor() as executor:
        executor.initialize(database_url)
        mine = set(loop_threads())
        assert len(mine) == 1
        assert executor.execute(trivial_workflow)["status"] == "Completed"
    assert not any(t.is_alive() for t in mine)  # its loop thread was stopped and joined
    with pytest.raises(cloacina.NotInitializedError):
        executor.list_executions()

    with pytest.raises(ZeroDivisionError):
        with cloacina.SyncExecutor() as failing:
            failing.initialize(database_url)
            1 / 0
    with pytest.raises(cloacina.NotInitializedError):
        failing.list_executions()


def test_shutdown_lets_a_running_task_finish(sync_executor, blocking_task):
    execution_id = sync_executor.submit(blocking_task["workflow"])
    assert blocking_task["started"].wait(DEADLINE)
    waiter_outcome: List[Any] = []

    def waiter() -> None:
        try:
            waiter_outcome.append(sync_executor.wait(execution_id))
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion below
            waiter_outcome.append(exc)

    waiting = threading.Thread(target=waiter)
    waiting.start()
    stopper = threading.Thread(target=sync_executor.shutdown)
    stopper.start()
    blocking_task["release"].set()
    stopper.join(DEADLINE)
    waiting.join(DEADLINE)
    assert not stopper.is_alive() and not waiting.is_alive()
    # The waiter either saw the result or was told the executor went away; it never hangs.
    [outcome] = waiter_outcome
    assert isinstance(outcome, (dict, cloacina.NotInitializedError)), outcome


@pytest.mark.timeout(60)
def test_calls_inside_a_running_loop_raise_instead_of_blocking(sync_executor, database_url, trivial_workflow):
    calls = dict(all_calls(trivial_workflow))
    calls["shutdown"] = lambda ex: ex.shutdown()
    calls["initialize"] = lambda ex: cloacina.SyncExecutor().initialize(database_url)

    async def inside_a_loop(call: Callable[[cloacina.SyncExecutor], Any]) -> None:
        call(sync_executor)

    for method, call in calls.items():
        with pytest.raises(RuntimeError, match="UnifiedExecutor") as refused:
            asyncio.run(inside_a_loop(call))
        assert type(refused.value) is RuntimeError, method
        assert f"SyncExecutor.{method}()" in str(refused.value)
    # Nothing was started or stopped by the refused calls.
    assert sync_executor.list_executions() == []
    assert sync_executor.execute(trivial_workflow)["status"] == "Completed"


@pytest.mark.timeout(60)
def test_an_async_task_calling_the_sync_executor_fails_instead_of_deadlocking(sync_executor, ids):
    @cloacina.task(ids("nested"))
    async def nested(ctx):
        sync_executor.list_executions()  # on the executor's own loop: refused
        return None

    result = sync_executor.execute(cloacina.Workflow(ids.wf(), [nested]))
    assert result["status"] == "Failed"
    assert result["task_results"][0]["error"].startswith("RuntimeError: SyncExecutor.list_executions()")


# --- in a child interpreter: Ctrl-C and interpreter exit -----------------------------------------


def run_script(script: str, env: Dict[str, str], *args: str) -> Dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=dict(env, CLOACINA_BACKEND=BACKEND),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


INTERRUPTED = """
import json, os, signal, sys, threading
import cloacina

started, release = threading.Event(), threading.Event()

@cloacina.task("interrupted.block")
def block(ctx):
    started.set()
    release.wait(60)
    return None

def press_ctrl_c_once_started():
    # Sends SIGINT (what Ctrl-C sends) once the task runs and the main thread blocks on it.
    started.wait(60)
    main = threading.main_thread().ident
    for _ in range(60_000):
        frame = sys._current_frames().get(main)
        while frame is not None and frame.f_code.co_name != "_result":
            frame = frame.f_back
        if frame is not None:
            break
        threading.Event().wait(0.001)
    os.kill(os.getpid(), signal.SIGINT)

wf = cloacina.Workflow("interrupted", [block])
out = {}
with cloacina.SyncExecutor() as executor:
    executor.initialize(sys.argv[1])

    # Ctrl-C in execute(): the execution is cancelled before the interrupt propagates.
    threading.Thread(target=press_ctrl_c_once_started, daemon=True).start()
    try:
        executor.execute(wf)
        out["execute"] = "returned"
    except KeyboardInterrupt:
        [execution] = executor.list_executions()
        out["execute"] = execution["status"]
    release.set()

    # Ctrl-C in wait(): it stops waiting, the execution goes on.
    started.clear(); release.clear()
    execution_id = executor.submit(wf)
    threading.Thread(target=press_ctrl_c_once_started, daemon=True).start()
    try:
        executor.wait(execution_id)
        out["wait"] = "returned"
    except KeyboardInterrupt:
        out["wait"] = executor.get_execution(execution_id)["status"]
    release.set()
    out["after_wait"] = executor.wait(execution_id, timeout=60)["status"]
print(json.dumps(out))
"""


@pytest.mark.timeout(120)
def test_ctrl_c_in_execute_cancels_the_execution(subprocess_env, database_url):
    out = run_script(INTERRUPTED, subprocess_env, database_url)
    assert out == {"execute": "Cancelled", "wait": "Running", "after_wait": "Completed"}


FORGOTTEN = """
import json, sys, threading, time
import cloacina

started = threading.Event()

@cloacina.task("forgotten.slow")
def slow(ctx):
    started.set()
    time.sleep(0.3)
    return {"slow": "done"}

executor = cloacina.SyncExecutor()
executor.initialize(sys.argv[1])
assert executor.execute(cloacina.Workflow("quick", [slow]))["status"] == "Completed"
started.clear()
execution_id = executor.submit(cloacina.Workflow("forgotten", [slow]))
assert started.wait(60)
print(json.dumps({"execution_id": execution_id}))
# No shutdown: the interpreter's exit shuts the executor down, letting the running task finish.
"""


@pytest.mark.timeout(120)
def test_a_forgotten_executor_lets_the_interpreter_exit(subprocess_env, database_url):
    out = run_script(FORGOTTEN, subprocess_env, database_url)
    with cloacina.SyncExecutor() as reader:
        reader.initialize(database_url, worker=False)
        execution = reader.get_execution(out["execution_id"])
    assert execution is not None
    assert execution["status"] == "Completed", execution
    assert execution["final_context"] == {"slow": "done"}

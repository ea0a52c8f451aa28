"""Fault injection with real faults: a full disk, another process holding SQLite's write lock, the
database file deleted, PostgreSQL stopped and left down, values the database refuses, an event loop
closing under a task. After each, a fresh process reads the execution back and finds it ended with
task states that agree with its status, or finishes it as a worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, Tuple

import pytest

from backend import IS_SQLITE, by_task, cl
from procs import DEADLINE, FINAL_STATUSES, Proc, Procs, procs, summary, until  # noqa: F401  (fixture)

CHILD = str(Path(__file__).resolve().parent / "fault_child.py")


def assert_consistent(record: Dict[str, Any]) -> None:
    """An ended execution whose tasks' states agree with its status."""
    assert record["status"] in FINAL_STATUSES, summary(record)
    states = {t["status"] for t in record["task_results"]}
    assert not states & {"Pending", "Running"}, summary(record)
    if record["status"] == "Completed":
        assert states <= {"Completed", "Skipped"}, summary(record)
    elif record["status"] == "Failed":
        assert "Failed" in states, summary(record)
    else:
        assert "Cancelled" in states or record["error"], summary(record)


@pytest.fixture
def prefix() -> str:
    return f"fault{uuid.uuid4().hex[:8]}"


@pytest.fixture
def control(tmp_path: Path) -> Path:
    path = tmp_path / "control"
    path.mkdir()
    return path


@contextlib.asynccontextmanager
async def chain_executor(url: str, prefix: str, control: Path) -> AsyncIterator[Tuple[Any, Any]]:
    """An executor on `url` and the child's ``chain`` workflow, defined in this process too."""
    from fault_child import define

    workflow = define(prefix, str(control))["chain"]
    executor = cl.UnifiedExecutor()
    await executor.initialize(url)
    try:
        yield executor, workflow
    finally:
        await asyncio.wait_for(executor.shutdown(), DEADLINE)


def start_child(procs: Procs, url: str, prefix: str, *args: str) -> Proc:
    return procs.start([CHILD, url, prefix, *args], name=args[0])


async def first_line(proc: Proc) -> str:
    await until(lambda: proc.stdout().endswith("\n"), what=f"{proc.name} prints its first line", watch=[proc])
    return proc.stdout().splitlines()[0]


async def read_back(procs: Procs, url: str, prefix: str, control: Path, execution_id: str) -> Dict[str, Any]:
    """The execution as a fresh worker process sees it once it ended (it finishes it if it can)."""
    reader = start_child(procs, url, prefix, "read", execution_id, str(control))
    code = await until_exit(reader)
    assert code == 0, reader.describe()
    record = json.loads(reader.stdout().strip().splitlines()[-1])
    assert_consistent(record)
    return record


async def until_exit(proc: Proc, timeout: float = 90) -> int:
    await until(lambda: not proc.alive(), what=f"{proc.name} exits", timeout=timeout)
    return proc.returncode


async def task_running(url: str, execution_id: str, task_id: str) -> None:
    reader = cl.UnifiedExecutor()
    await reader.initialize(url, worker=False)
    try:
        async def running() -> bool:
            record = await reader.get_execution(execution_id)
            return record is not None and by_task(record)[task_id]["status"] == "Running"
        await until(running, what=f"{task_id} runs")
    finally:
        await reader.shutdown()


# --- SQLite: a full disk -----------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs; skipped where mounting is not permitted (mounting needs root)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the disk-full test: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """Fills `disk` but for `leave` bytes; returns the filler file to delete."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as out:
        out.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return filler


@pytest.mark.sqlite_only
async def test_disk_full_then_freed_the_same_worker_finishes(tiny_disk, prefix, control):
    async with chain_executor(f"sqlite:///{tiny_disk / 'f.db'}", prefix, control) as (executor, chain):
        filler = fill(tiny_disk, leave=200_000)
        (control / "release").touch()
        execution_id = await executor.submit(chain)
        with pytest.raises(cl.DatabaseError, match="cannot store its progress.*full"):
            await executor.wait(execution_id, timeout=DEADLINE)
        filler.unlink()
        record = await executor.wait(execution_id, timeout=DEADLINE)
        assert record["status"] == "Completed", summary(record)
        assert record["final_context"]["after"] == 600_000
        assert_consistent(record)


@pytest.mark.sqlite_only
async def test_disk_full_worker_killed_a_fresh_worker_finishes(tiny_disk, procs, prefix, control):
    url = f"sqlite:///{tiny_disk / 'f.db'}"
    # Room for a fresh database's migrations and the submit (about 150 KB, more while the WAL
    # holds them), not for the 600 KB output.
    filler = fill(tiny_disk, leave=500_000)
    (control / "release").touch()
    child = start_child(procs, url, prefix, "stay", "chain", str(control))
    execution_id = await first_line(child)
    await until(lambda: "raised DatabaseError" in child.stdout(), what="the child's wait reports the full disk",
                watch=[child])
    child.kill()
    filler.unlink()
    record = await read_back(procs, url, prefix, control, execution_id)
    assert record["status"] == "Completed", summary(record)
    assert record["final_context"]["after"] == 600_000


# --- SQLite: another process holds the write lock past the busy timeout ------------------------

HOLD_LOCK = """
import sqlite3, sys, time, pathlib
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
release = pathlib.Path(sys.argv[2])
deadline = time.monotonic() + 60
while not release.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
conn.execute("COMMIT")
"""


@pytest.mark.sqlite_only
async def test_write_lock_held_by_another_process_for_longer_than_the_busy_timeout(
        sqlite_file, procs, prefix, control, tmp_path):
    url = f"sqlite:///{sqlite_file}"
    async with chain_executor(url, prefix, control) as (executor, chain):
        execution_id = await executor.submit(chain)
        await task_running(url, execution_id, f"{prefix}.hold")
        unlock = tmp_path / "unlock"
        holder = procs.start(["-c", HOLD_LOCK, str(sqlite_file), str(unlock)], name="lock holder")
        await until(lambda: "locked" in holder.stdout(), what="the other process holds the lock", watch=[holder])
        (control / "release").touch()
        # The fault lasts 12 s, past SQLite's 10 s busy timeout: the held task's commit fails once
        # and is retried; nothing is asserted about timing.
        await asyncio.sleep(12)
        unlock.touch()
        record = None
        while record is None:
            try:
                record = await executor.wait(execution_id, timeout=DEADLINE)
            except cl.DatabaseError:
                continue  # the commit failed while locked; this worker retries it
        assert record["status"] == "Completed", summary(record)
        assert_consistent(record)
    again = await read_back(procs, url, prefix, control, execution_id)
    assert again == record


# --- SQLite: the database file deleted under a run ---------------------------------------------

@pytest.mark.sqlite_only
async def test_database_file_deleted_mid_run_is_reported_not_completed(sqlite_file, prefix, control):
    url = f"sqlite:///{sqlite_file}"
    async with chain_executor(url, prefix, control) as (executor, chain):
        execution_id = await executor.submit(chain)
        await task_running(url, execution_id, f"{prefix}.hold")
        for path in sqlite_file.parent.glob(sqlite_file.name + "*"):
            path.unlink()
        (control / "release").touch()
        with pytest.raises(cl.DatabaseError, match="deleted or replaced") as info:
            await executor.wait(execution_id, timeout=DEADLINE)
        assert str(sqlite_file) in str(info.value)
        with pytest.raises(cl.DatabaseError, match="deleted or replaced"):
            await executor.list_executions()


@pytest.mark.sqlite_only
async def test_no_empty_database_file_appears_where_one_was_deleted(sqlite_file):
    executor = cl.UnifiedExecutor()
    await executor.initialize(f"sqlite:///{sqlite_file}")
    try:
        for path in sqlite_file.parent.glob(sqlite_file.name + "*"):
            path.unlink()
        # No helper thread (signal poller, checkpointer) may reconnect by creating an empty file
        # in its place. A negative check: waiting out many poll intervals cannot fail wrongly.
        await asyncio.sleep(2.0)  # 80 of the 25 ms poll intervals
        assert not sqlite_file.exists(), "an empty database file was created where the deleted one was"
    finally:
        await executor.shutdown()


# --- PostgreSQL: the server stopped and left down ----------------------------------------------

@pytest.mark.postgres_only
async def test_server_stopped_and_left_down_then_a_fresh_worker_finishes(
        pg_server, database_url, procs, prefix, control):
    child = start_child(procs, database_url, prefix, "run", "chain", str(control))
    execution_id = await first_line(child)
    await task_running(database_url, execution_id, f"{prefix}.hold")
    await asyncio.to_thread(pg_server.stop, "fast")
    try:
        (control / "release").touch()
        await until(lambda: "raised DatabaseError" in child.stdout(), what="the child's wait fails",
                    watch=[child], timeout=60)
        # shutdown(cancel=True) cannot reach the server either; it still returns, bounded.
        await until(lambda: "shutdown done" in child.stdout(), what="the child's shutdown returns",
                    watch=[child], timeout=60)
        assert await until_exit(child) == 0, child.describe()
    finally:
        await asyncio.to_thread(pg_server.start)
    record = await read_back(procs, database_url, prefix, control, execution_id)
    assert record["status"] in ("Completed", "Cancelled"), summary(record)


# --- values the database refuses ---------------------------------------------------------------

def nul_workflow(ids: Any) -> Any:
    @cl.task(ids("start"))
    def start(ctx):
        return {"start": 1}

    @cl.task(ids("raises"), dependencies=[start])
    def raises(ctx):
        raise ValueError("a\x00b")

    @cl.task(ids("skips"), dependencies=[start])
    def skips(ctx):
        raise cl.SkipTask("a\x00")

    @cl.task(ids("cleanup"), dependencies=[raises, skips], trigger_rule="all_done")
    def cleanup(ctx):
        return {"cleaned": True}

    return cl.Workflow(ids.wf(), [cleanup])


async def test_nul_in_error_texts_is_stored_escaped_and_the_run_goes_on(executor, ids, procs, database_url):
    result = await executor.execute(nul_workflow(ids))
    tasks = by_task(result)
    assert result["status"] == "Failed", summary(result)
    assert tasks[ids("raises")]["error"] == "ValueError: a\\x00b"
    assert tasks[ids("skips")]["status"] == "Skipped"
    assert tasks[ids("skips")]["reason"] == "a\\x00"
    assert tasks[ids("cleanup")]["status"] == "Completed"
    assert result["final_context"]["cleaned"] is True
    assert "a\\x00b" in result["error"]
    assert await executor.get_execution(result["execution_id"]) == result


def big_output_workflow(ids: Any, size: int) -> Any:
    @cl.task(ids("big"))
    def big(ctx):
        return {"big": "y" * size}

    @cl.task(ids("cleanup"), dependencies=[big], trigger_rule="all_done")
    def cleanup(ctx):
        return {"cleaned": True}

    return cl.Workflow(ids.wf(), [cleanup])


async def test_an_output_larger_than_a_database_value_fails_the_task_and_the_run_goes_on(executor, ids):
    result = await executor.execute(big_output_workflow(ids, 10**9))
    tasks = by_task(result)
    assert tasks[ids("big")]["status"] == "Failed", summary(result)
    assert "1000000010 bytes of JSON" in tasks[ids("big")]["error"]
    assert tasks[ids("cleanup")]["status"] == "Completed"
    assert result["status"] == "Failed"
    assert await executor.get_execution(result["execution_id"]) == result


@pytest.mark.sqlite_only
async def test_a_final_context_the_database_refuses_fails_the_execution(executor, ids, procs, database_url):
    # Each output fits in a value, but with the input the final context does not: SQLite refuses
    # the commit that would end the execution, and that can never succeed, so it ends Failed.
    result = await executor.execute(big_output_workflow(ids, 10**9 - 40))
    assert result["status"] == "Failed", summary(result)
    assert "could not store the execution's results" in result["error"]
    assert "too big" in result["error"]
    assert_consistent(result)


# --- an event loop closing under an async task -------------------------------------------------

async def test_a_loop_closing_under_an_async_task_cancels_it(database_url, procs, prefix, control):
    child = start_child(procs, database_url, prefix, "loop", "loop", str(control))
    assert await until_exit(child) == 0, child.describe()
    execution_id = child.stdout().split()[0]
    assert "stored Cancelled" in child.stdout(), child.describe()
    reader = cl.UnifiedExecutor()
    await reader.initialize(database_url, worker=False)
    try:
        record = await reader.get_execution(execution_id)
    finally:
        await reader.shutdown()
    tasks = by_task(record)
    assert tasks[f"{prefix}.hold_async"]["status"] == "Cancelled", summary(record)
    assert "stopped from outside the engine" in tasks[f"{prefix}.hold_async"]["reason"]
    assert tasks[f"{prefix}.after_async"]["status"] == "Skipped"
    assert record["status"] == "Cancelled"
    assert "hold_async" in record["error"]
    assert_consistent(record)

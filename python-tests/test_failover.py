"""Failover against workers that are paused, frozen or namespaced rather than killed.

- A paused worker whose claim was given back, and which then claims the same task again, must
  not let its stale attempt's result count: the task's history is ``Lost`` then ``Completed``.
- A worker frozen inside its commit transaction (PostgreSQL) must not stop any other worker's
  heartbeat or cancellations; the server frees its locks within the idle-in-transaction limit.
- Workers that share a host name but not a PID namespace must not take each other for dead.

Workers are ``failover_worker.py`` processes; every process is stopped by pid when the test ends.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

from backend import by_task, parse_ts
from failover_worker import define
from procs import (Proc, Procs, client, control, effects, finished, has_event, procs, read_events,  # noqa: F401
                   ready, select, summary, until)

FAILOVER_SCRIPT = Path(__file__).resolve().parent / "failover_worker.py"
LEASE = 1.5
# The idle-in-transaction limit an executor with LEASE sets (max(lease, 10 s)).
IDLE_IN_TRANSACTION_LIMIT = 10.0


def start(procs: Procs, url: str, prefix: str, effects: Path, control: Path, *, name: str,
          tasks: str, wrapper: Sequence[str] = ()) -> Proc:
    ready_path = procs.workdir / f"{name}.ready"
    argv = [str(FAILOVER_SCRIPT), "--url", url, "--prefix", prefix, "--out", str(effects),
            "--control", str(control), "--ready", str(ready_path), "--tasks", tasks, "--lease", str(LEASE)]
    return procs.start(argv, name=name, ready_path=ready_path, wrapper=wrapper)


def statuses(record: Dict[str, Any], task_id: str) -> List[str]:
    return [h["status"] for h in by_task(record)[task_id]["history"]]


# --- 1. a stale attempt of the same worker ----------------------------------------------------

# When attempt 1 (the stale one) and attempt 2 are let finish: which release files, in turn.
ORDERS = {
    # Attempt 1 ends the moment its worker resumes, racing the worker's new claim of the task.
    "stale_ends_on_resume": (),
    # Both end together.
    "together": ((1, 2),),
    # Attempt 1 ends after attempt 2 and the execution completed.
    "stale_ends_last": ((2,), (1,)),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("order", list(ORDERS))
async def test_a_paused_worker_that_claims_its_task_again_discards_the_stale_attempt(
        order, database_url, client, procs, ids, effects, control):
    slow = ids("slow")
    a = start(procs, database_url, ids.prefix, effects, control, name="a", tasks="slow,after")
    b = start(procs, database_url, ids.prefix, effects, control, name="b", tasks="nap")  # lacks slow
    await ready(a, b)
    workflow = define(ids.prefix, str(effects), str(control))["pair"]
    execution = await client.submit(workflow, {"run": "r"})
    await until(has_event(effects, task=slow, kind="started1"), what="attempt 1 starts on A", watch=[a, b])

    async def given_back() -> bool:
        record = await client.get_execution(execution)
        return "Lost" in statuses(record, slow)

    os.kill(a.pid, signal.SIGSTOP)
    try:
        await until(given_back, what="B gives back the claim of paused A", watch=[b])
        if order == "stale_ends_on_resume":
            (control / "release_1").touch()
    finally:
        os.kill(a.pid, signal.SIGCONT)
    await until(has_event(effects, task=slow, kind="started2"), what="A claims the task again", watch=[a, b])
    for step in ORDERS[order]:
        for attempt in step:
            (control / f"release_{attempt}").touch()
        for attempt in step:
            await until(has_event(effects, task=slow, kind=f"finished{attempt}"),
                        what=f"attempt {attempt} finishes", watch=[a])
    (control / "release_1").touch()
    (control / "release_2").touch()

    record = await finished(client, execution, procs=procs)
    assert record["status"] == "Completed", summary(record)
    assert statuses(record, slow) == ["Lost", "Completed"], summary(record)
    assert by_task(record)[ids("after")]["status"] == "Completed", summary(record)
    assert record["final_context"]["slow"] == 2 and record["final_context"]["after"] == 2, record
    await until(has_event(effects, task=slow, kind="finished1"), what="the stale attempt ends", watch=[a])
    await until(lambda: "attempt 1 result discarded" in a.stderr(), what="A logs the discarded attempt",
                watch=[a])
    assert "WARNING" in a.stderr() and "duplicate key" not in a.stderr(), a.describe()


# --- 2. a worker frozen inside its commit (PostgreSQL) ----------------------------------------

class RowLock:
    """A psql session holding a row lock (``SELECT ... FOR UPDATE`` in an open transaction)."""

    APP = "cloacina-test-row-lock"

    def __init__(self, url: str, select_for_update: str) -> None:
        import pg_admin

        assert pg_admin.PSQL, "psql not found"
        separator = "&" if "?" in url else "?"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.proc = subprocess.Popen([pg_admin.PSQL, "-X", "-q", "-d", f"{url}{separator}application_name={self.APP}"],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=env, text=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"BEGIN;\n{select_for_update};\n")
        self.proc.stdin.flush()

    def release(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write("ROLLBACK;\n\\q\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def backends(database: str, where: str, columns: str = "pid") -> List[str]:
    import pg_admin

    return pg_admin.psql_rows(f"SELECT {columns} FROM pg_stat_activity WHERE datname = '{database}' AND {where}")


@pytest.mark.postgres_only
@pytest.mark.timeout(150)
async def test_a_worker_frozen_inside_its_commit_stalls_no_other_worker(
        database_url, postgres_database, client, procs, ids, effects, control):
    slow, long = ids("slow"), ids("long")
    workflows = define(ids.prefix, str(effects), str(control))
    (control / "release_2").touch()  # the rerun of `slow` (by B) ends at once
    a = start(procs, database_url, ids.prefix, effects, control, name="a", tasks="slow,after")
    await ready(a)
    first = await client.submit(workflows["pair"], {"run": "frozen"})
    await until(has_event(effects, task=slow, kind="started1", pid=a.pid), what="A runs slow", watch=[a])
    b = start(procs, database_url, ids.prefix, effects, control, name="b", tasks="slow,after,long")
    await ready(b)
    second = await client.submit(workflows["long"], {"run": "other"})
    await until(has_event(effects, task=long, kind="started", pid=b.pid), what="B runs long", watch=[b])

    lock = RowLock(database_url, f"SELECT 1 FROM task_executions WHERE execution_id = '{first}' "
                                 f"AND task_id = '{slow}' FOR UPDATE")
    try:
        await until(lambda: backends(postgres_database, f"application_name = '{RowLock.APP}' "
                                                        "AND state = 'idle in transaction'"),
                    what="the test holds the row lock")
        (control / "release_1").touch()  # A's commit now waits for the test's row lock
        # Only a wait on the test's own session counts: a notifier queued behind another commit
        # also waits on a heavyweight lock, and stopping A then would stop it outside its commit.
        await until(lambda: backends(postgres_database,
                                     "wait_event_type = 'Lock' AND EXISTS (SELECT 1 FROM pg_stat_activity h "
                                     f"WHERE h.application_name = '{RowLock.APP}' "
                                     "AND h.pid = ANY(pg_blocking_pids(pg_stat_activity.pid)))"),
                    what="A's commit waits on the test's row lock", watch=[a])
        os.kill(a.pid, signal.SIGSTOP)
    finally:
        lock.release()
    try:
        try:
            await until(lambda: backends(postgres_database, "state = 'idle in transaction'"),
                        what="A's session is frozen inside its transaction")
        except AssertionError as failure:
            raise AssertionError(f"{failure}\nsessions:\n" + "\n".join(backends(
                postgres_database, "true", "pid, application_name, state, wait_event_type, wait_event, query"))) from None
        frozen_at = time.monotonic()
        frozen_pids = backends(postgres_database, "state = 'idle in transaction'")

        # B's heartbeat stays fresh for three leases, while B's reaping of A finds A's row locked.
        async def b_beats() -> bool:
            workers = {w["pid"]: w for w in await client.list_workers()}
            age = time.time() - parse_ts(workers[b.pid]["heartbeat_at"]).timestamp()
            assert age < LEASE, f"B's heartbeat is {age:.1f} s old (lease {LEASE} s): {workers[b.pid]}"
            return time.monotonic() - frozen_at > 3 * LEASE

        await until(b_beats, what="three leases pass with B's heartbeat fresh", watch=[b])

        # Then a cancellation reaches B's task while A still holds its execution's row.
        assert await client.cancel(second)
        await until(has_event(effects, task=long, kind="cancelled", pid=b.pid),
                    what="B's task hears of the cancellation", watch=[b])
        assert set(frozen_pids) & set(backends(postgres_database, "state = 'idle in transaction'")), \
            "A's frozen session ended before the cancellation arrived: the test proves nothing"

        # The server ends A's frozen session within the idle-in-transaction limit.
        await until(lambda: not set(frozen_pids) & set(backends(postgres_database, "true")),
                    what="the server ends A's frozen session", timeout=IDLE_IN_TRANSACTION_LIMIT + 30)
        print(f"\nA's frozen session ended {time.monotonic() - frozen_at:.1f} s after it froze "
              f"(limit {IDLE_IN_TRANSACTION_LIMIT} s)")

        # Then B gives A's claim back and runs the task again.
        record = await finished(client, first, procs=procs, timeout=60)
        assert record["status"] == "Completed", summary(record)
        assert statuses(record, slow) == ["Lost", "Completed"], summary(record)
        assert (await client.get_execution(second))["status"] == "Cancelled"
    finally:
        os.kill(a.pid, signal.SIGCONT)
        a.kill()


# --- 3. one hostname, two PID namespaces -----------------------------------------------------

def namespaced(script: str) -> List[str]:
    """A wrapper running the worker in new UTS and PID namespaces with the host name ``cloacina-twin``."""
    return ["unshare", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", script, "sh"]


def unshare_refusal() -> Optional[str]:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(namespaced("hostname cloacina-twin"), capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"unshare --uts --pid was refused here: {probe.stderr.strip()}"
    return None


@pytest.mark.timeout(150)
async def test_workers_with_one_hostname_in_two_pid_namespaces_do_not_reap_each_other(
        database_url, client, procs, ids, effects, control):
    refusal = unshare_refusal()
    if refusal:
        pytest.skip(refusal)
    # In its namespace A's python is pid 1 (its threads take the next ids); B's comes after 400
    # short-lived processes, a pid that names nothing in A's namespace.
    b = start(procs, database_url, ids.prefix, effects, control, name="b", tasks="nap",
              wrapper=namespaced('hostname cloacina-twin && i=0 && while [ $i -lt 400 ]; do /bin/true; '
                                 'i=$((i + 1)); done && "$@"'))
    await ready(b)
    workflow = define(ids.prefix, str(effects), str(control))["nap"]

    async def run(i: int) -> str:
        execution = await client.submit(workflow, {"run": f"r{i}", "nap": 8})
        await until(has_event(effects, run=f"r{i}", kind="started"), what=f"r{i} starts", watch=procs.alive())
        return execution

    executions = [await run(0), await run(1)]  # on B
    a = start(procs, database_url, ids.prefix, effects, control, name="a", tasks="nap",
              wrapper=namespaced('hostname cloacina-twin && exec "$@"'))
    await ready(a)
    workers = await client.list_workers()
    assert [w["hostname"] for w in workers] == ["cloacina-twin"] * 2, workers
    executions += [await run(2), await run(3)]
    records = await asyncio.gather(*(finished(client, e, procs=procs, timeout=90) for e in executions))
    events = read_events(effects)
    for i, record in enumerate(records):
        assert record["status"] == "Completed", summary(record)
        assert statuses(record, ids("nap")) == ["Completed"], summary(record)
        assert len(select(events, run=f"r{i}", kind="started")) == 1, events

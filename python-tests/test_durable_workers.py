"""Several worker processes share one database; in the chaos test workers keep being killed.

The test process only submits (``worker=False``); the workers are ``durable_worker.py`` processes.
Every task appends ``started`` and ``finished`` lines to the effects file, so the tests check that
each task ran to completion exactly once, and which process ran it.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

import pytest

from durable_worker import define, expected_context
from procs import (Proc, Procs, client, control, effects, finished, procs, read_events,  # noqa: F401
                   ready, select, stopped, summary)


def history(task_result: Dict[str, Any]) -> List[str]:
    return [h["status"] for h in task_result["history"]]


def errors_in(record: Dict[str, Any]) -> Iterable[str]:
    """Every error text an execution carries (its own, each task's, each attempt's)."""
    for text in (record.get("error"), record.get("reason")):
        if text:
            yield text
    for tr in record["task_results"]:
        for text in (tr.get("error"), tr.get("traceback"), tr.get("reason")):
            if text:
                yield text
        for attempt in tr["history"]:
            if attempt.get("error"):
                yield attempt["error"]


async def run_shared_load(database_url: str, client: Any, procs: Procs, prefix: str, effects: Path,
                          control: Path, *, workers: int, executions: int, width: int,
                          sleep: Tuple[float, float]) -> Tuple[List[Proc], Dict[str, Dict[str, Any]]]:
    """Starts the workers, submits ``executions`` fan-outs (root -> width middles -> join), waits for all."""
    t = define(prefix, str(effects), str(control), width=width, sleep=sleep)
    wf = t.wf("fan")
    assert len(wf.task_ids) == width + 2
    started = [procs.start_worker(database_url, prefix, effects, control, name=f"w{i}", width=width, sleep=sleep)
               for i in range(workers)]
    await ready(*started)

    began = time.monotonic()
    execution_ids = [await client.submit(wf, {"run": f"r{i}"}) for i in range(executions)]
    records = await asyncio.gather(*(finished(client, e, timeout=90, procs=procs) for e in execution_ids))
    elapsed = time.monotonic() - began

    events = read_events(effects)
    per_worker = collections.Counter(e.pid for e in events if e.kind == "finished")
    print(f"\n{executions} executions x {width + 2} tasks on {workers} workers: {elapsed:.2f} s; "
          f"tasks per worker {dict(per_worker)}")

    results = {}
    for i, (execution_id, record) in enumerate(zip(execution_ids, records)):
        run = f"r{i}"
        assert record["status"] == "Completed", summary(record)
        assert record["final_context"] == expected_context("fan", run, width=width)
        for tr in record["task_results"]:
            assert history(tr) == ["Completed"], (run, tr)
            assert len(select(events, run=run, task=tr["task_id"], kind="started")) == 1, (run, tr["task_id"])
            assert len(select(events, run=run, task=tr["task_id"], kind="finished")) == 1, (run, tr["task_id"])
        results[execution_id] = record
    assert len(events) == 2 * executions * (width + 2), "a task ran that no execution accounts for"
    assert set(per_worker) == {w.pid for w in started}, f"not every worker ran tasks: {dict(per_worker)}"
    return started, results


@pytest.mark.postgres_only
@pytest.mark.timeout(150)
async def test_four_workers_share_fifty_executions(database_url, client, procs, ids, effects, control):
    workers, _ = await run_shared_load(database_url, client, procs, ids.prefix, effects, control, workers=4,
                                       executions=50, width=18, sleep=(0.01, 0.05))
    for worker in workers:
        assert await stopped(worker) == 0, worker.describe()


@pytest.mark.sqlite_only
@pytest.mark.timeout(150)
async def test_two_workers_share_one_sqlite_file(database_url, client, procs, ids, effects, control):
    workers, results = await run_shared_load(database_url, client, procs, ids.prefix, effects, control,
                                             workers=2, executions=20, width=8, sleep=(0.01, 0.03))
    for worker in workers:
        assert await stopped(worker) == 0, worker.describe()
    for worker in workers:
        assert "database is locked" not in worker.output().lower(), worker.describe()
    for record in results.values():
        for text in errors_in(record):
            assert "database is locked" not in text.lower(), summary(record)


@pytest.mark.postgres_only
@pytest.mark.timeout(150)
async def test_chaos_workers_killed_while_executions_run(database_url, client, procs, ids, effects, control):
    """4 workers; every ~2 s one is SIGKILLed and replaced, while 30 executions are submitted and run."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    lease = 2.0
    sleep = (0.1, 0.3)
    chaos_seconds = 20.0
    t = define(ids.prefix, str(effects), str(control), width=3, sleep=sleep)
    shapes = ["chain5", "fan"]
    assert all(len(t.wf(shape).task_ids) == 5 for shape in shapes)

    names = iter(range(1000))

    def start_worker() -> Proc:
        return procs.start_worker(database_url, ids.prefix, effects, control, name=f"w{next(names)}",
                                  lease_timeout=lease, sleep=sleep)

    current = [start_worker() for _ in range(4)]
    await ready(*current)
    killed: List[Proc] = []
    submitted: List[Tuple[str, str, str]] = []  # execution id, shape, run
    began = time.monotonic()

    async def submit_all() -> None:
        for i in range(30):
            shape = shapes[i % 2]
            submitted.append((await client.submit(t.wf(shape), {"run": f"r{i}"}), shape, f"r{i}"))
            await asyncio.sleep(0.6)

    def busy(worker: Proc) -> bool:
        """The worker is in the middle of a task (a started line without its finished line)."""
        mine = select(read_events(effects), pid=worker.pid)
        return bool({(e.run, e.task) for e in mine if e.kind == "started"}
                    - {(e.run, e.task) for e in mine if e.kind == "finished"})

    async def chaos() -> None:
        while time.monotonic() - began < chaos_seconds:
            await asyncio.sleep(rng.uniform(1.5, 2.5))
            # A random worker, preferably one running a task (up to 0.5 s to find one), so kills interrupt work.
            look_until = time.monotonic() + 0.5
            while True:
                candidates = [w for w in current if w.alive() and w.ready_info() is not None] or \
                             [w for w in current if w.alive()]
                working = [w for w in candidates if busy(w)]
                if working or time.monotonic() > look_until:
                    break
                await asyncio.sleep(0.02)
            victim = rng.choice(working or candidates)
            victim.kill()
            killed.append(victim)
            current.remove(victim)
            current.append(start_worker())

    await asyncio.gather(submit_all(), chaos())
    chaos_done = time.monotonic()
    records = await asyncio.gather(*(finished(client, e, timeout=60, procs=procs) for e, _, _ in submitted))
    settled = time.monotonic() - chaos_done

    events = read_events(effects)
    killed_at = {p.pid: p.killed_at for p in killed}
    lost_attempts = 0
    excused: List[str] = []
    for (execution_id, shape, run), record in zip(submitted, records):
        assert record["status"] == "Completed", summary(record)
        assert record["final_context"] == expected_context(shape, run), summary(record)
        for tr in record["task_results"]:
            task = tr["task_id"]
            where = f"{run} {task}: {history(tr)} {select(events, run=run, task=task)}"
            statuses = history(tr)
            assert statuses and statuses[-1] == "Completed", where
            assert all(s == "Lost" for s in statuses[:-1]), where
            assert [h["attempt"] for h in tr["history"]] == list(range(1, len(statuses) + 1)), where
            for attempt in tr["history"][:-1]:
                assert "lost" in (attempt["error"] or "").lower(), where
            lost_attempts += len(statuses) - 1

            starts = select(events, run=run, task=task, kind="started")
            finishes = sorted(select(events, run=run, task=task, kind="finished"), key=lambda e: e.ts)
            assert starts, where
            assert finishes, where
            assert len(starts) <= len(statuses), f"a run of the task has no attempt in its history: {where}"
            # Processes that were never killed ran each task to completion at most once.
            survivors = [e for e in finishes if e.pid not in killed_at]
            assert len(survivors) <= 1, f"ran to completion twice: {where}"
            # Exactly one finished line, except when a process was SIGKILLed right after writing it,
            # before the engine could commit that attempt (which must then be recorded Lost).
            for extra in finishes[:-1]:
                when = killed_at.get(extra.pid)
                assert when is not None and 0 <= when - extra.ts < 1.0, f"ran to completion twice: {where}"
                excused.append(where)
            assert len(finishes) - 1 <= len(statuses) - 1, where

    worker_pids = {p.pid for p in procs.all}
    assert {e.pid for e in events} <= worker_pids, "the submit-only test process ran a task"
    assert os.getpid() not in {e.pid for e in events}
    print(f"\nCHAOS seed={seed}: {len(killed)} workers killed in {chaos_seconds:.0f} s, {lost_attempts} lost "
          f"attempts re-run, {len(excused)} completions interrupted before their commit, all 30 executions "
          f"Completed {settled:.2f} s after the chaos ended")
    for where in excused:
        print(f"  interrupted right after finishing: {where}")
    assert len(killed) >= 5
    assert lost_attempts >= 1, "no kill interrupted a task: the chaos tested nothing"

    alive = [w for w in current if w.alive()]
    await ready(*alive)
    for worker in alive:
        assert await stopped(worker) == 0, worker.describe()

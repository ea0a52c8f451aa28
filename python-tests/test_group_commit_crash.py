"""Worker processes die (SIGKILL) while group commits of their executions' ended tasks are in flight.

Group commit (cloacina/src/database/group_commit.rs) puts the ended-task batches of all of a
process's executions that wait during a commit into one transaction. 200 executions of the 5-task
chain s0 -> ... -> s4 are submitted; worker A1 runs them all at once (tasks that return at once,
max_concurrency 8, so batches of many executions share transactions) and is SIGKILLed once 50 tasks
have returned: commits are in flight, some tasks have returned without their commit having landed.
Right after the kill the test reads which tasks the database has Completed. Worker A2 takes over and
is killed the same way (two kills: each one lands in the middle of a commit most of the time, not
always); then worker B finishes everything.

Nothing is lost: every execution Completes with the right context, every task Completed. Nothing
Completed runs twice: no task Completed at a kill runs in a later process, and its history stays the
one read at the kill; every task ran at most once in each process (at-least-once: a task whose commit
did not land runs again in the next process, its earlier attempt recorded Lost).
Run pytest with -s to see what the kills interrupted.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Set, Tuple

from backend import by_task
from durable_worker import define, expected_context
from procs import (Proc, client, control, effects, finished, procs, read_events, ready,  # noqa: F401
                   select, stopped, summary, until)

EXECUTIONS = 200
SHAPE = "chain5"
KILLS = 2          # workers killed one after the other before the last one finishes the work
KILL_AFTER = 50    # a worker is killed once this many tasks have returned in it

Key = Tuple[str, str]  # (run, task id)


@dataclass
class Kill:
    victim: Proc
    completed: Dict[Key, Dict[str, Any]]  # the task results the database had Completed right after it
    started: Set[Key]                      # tasks the victim started
    returned: Set[Key]                     # tasks that returned in the victim

    def in_flight(self) -> Set[Key]:
        """Returned in the victim, not Completed at the kill: their commit was in flight (or not begun)."""
        return self.returned - set(self.completed)


def history(task_result: Dict[str, Any]) -> List[str]:
    return [h["status"] for h in task_result["history"]]


async def test_workers_killed_with_group_commits_in_flight(database_url, client, procs, ids, effects, control):
    t = define(ids.prefix, str(effects), str(control))
    tasks = t.wf(SHAPE).task_ids
    total = EXECUTIONS * len(tasks)
    runs = [f"r{i}" for i in range(EXECUTIONS)]

    # Everything is submitted before the first worker starts, so it has all the executions at once.
    execution_ids = list(await asyncio.gather(*(client.submit(t.wf(SHAPE), {"run": run}) for run in runs)))

    kills: List[Kill] = []
    for k in range(KILLS):
        victim = procs.start_worker(database_url, ids.prefix, effects, control, name=f"A{k + 1}")
        await ready(victim)
        # The tasks do nothing but write their lines: the worker spends its time claiming and
        # committing, so a commit (of a group of executions' batches) is almost always in flight.
        # On SQLite it runs ~1,000 tasks/s: polling every 50 ms overshoots by up to ~250 tasks; the
        # 1,000 tasks leave a wide margin for two kills.
        await until(lambda v=victim: len(select(read_events(effects), kind="finished", pid=v.pid)) >= KILL_AFTER,
                    what=f"{KILL_AFTER} tasks returned in {victim.name}", watch=[victim])
        victim.kill()

        # What the database has Completed once the victim is dead.
        at_kill = await asyncio.gather(*(client.get_execution(e) for e in execution_ids))
        completed = {(run, tr["task_id"]): tr for run, record in zip(runs, at_kill)
                     for tr in record["task_results"] if tr["status"] == "Completed"}
        events = read_events(effects)
        kill = Kill(victim, completed,
                    started={(e.run, e.task) for e in select(events, kind="started", pid=victim.pid)},
                    returned={(e.run, e.task) for e in select(events, kind="finished", pid=victim.pid)})
        kills.append(kill)
        # The kill interrupted the work: some but not all tasks were Completed.
        assert 0 < len(completed) < total, [summary(r) for r in at_kill]
        assert set(completed) <= {(e.run, e.task) for e in select(events, kind="finished")}, \
            "Completed in the database without having run to its end"
        if k > 0:  # no Completed task goes back
            assert set(kills[k - 1].completed) <= set(completed)

    b = procs.start_worker(database_url, ids.prefix, effects, control, name="B")
    last_kill = time.monotonic()
    records = await asyncio.gather(*(finished(client, e, timeout=45, what="execution after the kills", procs=procs)
                                     for e in execution_ids))
    settled = time.monotonic() - last_kill

    events = read_events(effects)
    order = [kill.victim.pid for kill in kills] + [b.pid]  # the processes, in the order they ran
    assert {e.pid for e in events} <= set(order), "a task ran in a process the test did not start"
    assert os.getpid() not in {e.pid for e in events}
    rerun: Set[Key] = set()
    for run, record in zip(runs, records):
        # Nothing lost.
        assert record["status"] == "Completed", summary(record)
        assert record["error"] is None, summary(record)
        assert record["final_context"] == expected_context(SHAPE, run), summary(record)
        results = by_task(record)
        assert set(results) == set(tasks), summary(record)
        for task, tr in results.items():
            key = (run, task)
            statuses = history(tr)
            where = f"{run} {task}: {statuses} {select(events, run=run, task=task)}"
            assert tr["status"] == "Completed", where
            assert statuses and statuses[-1] == "Completed", where
            assert all(s == "Lost" for s in statuses[:-1]), where
            assert select(events, run=run, task=task, kind="finished"), f"never ran to its end: {where}"
            ran_in = [e.pid for e in select(events, run=run, task=task, kind="started")]
            assert len(ran_in) == len(set(ran_in)), f"ran twice in one process: {where}"
            assert len(ran_in) <= len(statuses), f"a run of the task has no attempt in its history: {where}"
            for k, kill in enumerate(kills):
                if key in kill.completed:
                    # Nothing Completed runs again; its record is the one committed before the kill.
                    later = set(order[k + 1:])
                    assert not later & set(ran_in), f"Completed at the kill of {kill.victim.name}, ran again: {where}"
                    assert statuses == history(kill.completed[key]), where
                    assert tr["attempts"] == kill.completed[key]["attempts"], where
            if len(ran_in) > 1:
                rerun.add(key)
                # Its attempts in the killed processes are on record as Lost.
                for attempt in tr["history"][:-1]:
                    assert "lost" in (attempt["error"] or "").lower(), where

    print()
    for kill in kills:
        print(f"GROUP COMMIT KILL {kill.victim.name}: {len(kill.completed)}/{total} tasks Completed at the kill, "
              f"{len(kill.in_flight())} returned without their commit landing, "
              f"{len(kill.started - kill.returned)} running")
    print(f"GROUP COMMIT KILL: {len(rerun)} tasks ran again after a kill; all {EXECUTIONS} executions "
          f"Completed {settled:.2f} s after the last kill")
    assert await stopped(b) == 0, b.describe()

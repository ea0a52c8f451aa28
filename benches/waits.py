"""Durable waits: how late timers wake, and how fast an event reaches the next task.

Usage: python benches/waits.py --url URL [--wakeups 1,1000,10000] [--events 20] [--max-concurrency 8]

URL is a SQLite file URL (``sqlite:////tmp/waits.db``; the file is replaced) or a PostgreSQL URL
(use an empty database). One executor in this process is the database's only worker.

- *Timer lateness*, for each count N of ``--wakeups``: N executions of ``sleep(until="{wake_at}")``
  then one task, all with the same ``wake_at``, submitted ahead of it (``--lead`` seconds plus a
  margin per execution for the submissions). Per execution: the sleep's ``completed_at`` minus
  ``wake_at`` (the timer) and the clock read by the next task when it starts minus ``wake_at``
  (that one includes running N tasks through ``--max-concurrency`` slots). Each sleep must
  complete, and its next task run, once.
- *Event delivery*: ``--events`` times, one execution of ``wait_for_event`` then one task; once
  the wait is ``Waiting``, ``send_event``; the latency is the clock read by the next task when it
  starts minus the time just before ``send_event`` was called.

Times are this machine's clock (the records' and the tasks'): run the database on the same
machine. Prints one table; exits 1 if a sleep did not complete exactly once or an event did not
complete its wait.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

import cloacina
from cloacina._records import parse_timestamp
from report import fresh_sqlite, median_max, ms, table  # next to this file

NAP = cloacina.sleep("waits.nap", until="{wake_at}")


@cloacina.task(task_id="waits.woke", dependencies=[NAP])
def woke(ctx: Dict[str, Any]) -> Dict[str, Any]:
    return {"woke_at": time.time()}


SIGNAL = cloacina.wait_for_event("waits.signal", key="bench:{run}:{n}", timeout=120)


@cloacina.task(task_id="waits.after", dependencies=[SIGNAL])
def after(ctx: Dict[str, Any]) -> Dict[str, Any]:
    return {"after_at": time.time()}


EVENT = cloacina.Workflow("waits.event", tasks=[after])
SUBMIT_BATCH = 200  # submissions in flight at once
PAGE = 10_000       # list_executions' largest page


async def all_executions(executor: cloacina.UnifiedExecutor, workflow: str) -> List[Dict[str, Any]]:
    records: List[Dict[str, Any]] = []
    while True:
        page = await executor.list_executions(workflow=workflow, limit=PAGE, offset=len(records))
        records += page
        if len(page) < PAGE:
            return records


async def still_running(executor: cloacina.UnifiedExecutor, workflow: str) -> bool:
    for status in ("Pending", "Running"):
        if await executor.list_executions(workflow=workflow, status=status, limit=1):
            return True
    return False


async def timers(executor: cloacina.UnifiedExecutor, count: int, lead: float, per_submit: float) -> Dict[str, Any]:
    """``count`` sleeps waking at one instant; returns the row's numbers."""
    workflow = cloacina.Workflow(f"waits.timer.{count}.{uuid.uuid4().hex[:6]}", tasks=[woke])
    started = time.monotonic()
    wake_at = datetime.now(timezone.utc) + timedelta(seconds=lead + count * per_submit)
    context = {"wake_at": wake_at.isoformat()}
    for first in range(0, count, SUBMIT_BATCH):
        batch = range(first, min(count, first + SUBMIT_BATCH))
        await asyncio.gather(*(executor.submit(workflow, context) for _ in batch))
    submitted = time.monotonic() - started
    overran = datetime.now(timezone.utc) > wake_at
    # Read nothing while the timers fire: sleep through the wake-up, then poll.
    await asyncio.sleep(max(0.0, (wake_at - datetime.now(timezone.utc)).total_seconds()) + 0.5)
    deadline = time.monotonic() + 120 + count / 50
    while await still_running(executor, workflow.name):
        if time.monotonic() > deadline:
            raise SystemExit(f"{count} wake-ups: executions still running after the deadline")
        await asyncio.sleep(0.2)
    records = await all_executions(executor, workflow.name)
    timer_late: List[float] = []
    next_late: List[float] = []
    failures = 0
    for record in records:
        tasks = {t["task_id"]: t for t in record["task_results"]}
        nap = tasks["waits.nap"]
        completed = parse_timestamp(nap["completed_at"])
        if record["status"] != "Completed" or nap["status"] != "Completed" or completed is None:
            failures += 1
            continue
        if tasks["waits.woke"]["attempts"] != 1:  # the sleep woke its dependent more than once
            failures += 1
        timer_late.append((completed - wake_at).total_seconds())
        next_late.append(record["final_context"]["woke_at"] - wake_at.timestamp())
    failures += count - len(records)
    return {"count": count, "submitted": submitted, "overran": overran, "timer": timer_late,
            "next": next_late, "failures": failures}


async def wait_until_waiting(executor: cloacina.UnifiedExecutor, execution_id: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        record = await executor.get_execution(execution_id)
        if record is not None and any(t["task_id"] == "waits.signal" and t["status"] == "Waiting"
                                      for t in record["task_results"]):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"execution {execution_id} never waited for its event")
        await asyncio.sleep(0.005)


async def events(executor: cloacina.UnifiedExecutor, rounds: int) -> Dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    latencies: List[float] = []
    sends: List[float] = []
    failures = 0
    for n in range(rounds):
        execution_id = await executor.submit(EVENT, {"run": run, "n": n})
        await wait_until_waiting(executor, execution_id)
        sent_at = time.time()
        completed = await executor.send_event(f"bench:{run}:{n}", {"n": n})
        sends.append(time.time() - sent_at)
        result = await executor.wait(execution_id, timeout=60)
        if completed != 1 or result["status"] != "Completed" or result["final_context"]["waits.signal"] != {"n": n}:
            failures += 1
            continue
        latencies.append(result["final_context"]["after_at"] - sent_at)
    return {"latency": latencies, "send": sends, "failures": failures}


async def measure(url: str, wakeups: List[int], rounds: int, max_concurrency: int, lead: float,
                  per_submit: float) -> int:
    fresh_sqlite(url)
    executor = cloacina.UnifiedExecutor(max_concurrency)
    await executor.initialize(url)
    try:
        timer_rows = []
        for count in wakeups:
            timer_rows.append(await timers(executor, count, lead, per_submit))
            print(f"  done: {count} wake-ups", file=sys.stderr, flush=True)
        delivery: Optional[Dict[str, Any]] = await events(executor, rounds) if rounds else None
    finally:
        await executor.shutdown()

    print(f"Durable waits on {cloacina.backend} ({cloacina.backend_version}), one worker, "
          f"max_concurrency {max_concurrency}")
    print()
    headers = ["wake-ups", "submitted in s", "timer late ms median", "max", "next task started ms median", "max",
               "not once"]
    rows = []
    for r in timer_rows:
        note = " (submission overran the wake time)" if r["overran"] else ""
        rows.append([str(r["count"]), f"{r['submitted']:.1f}{note}", *median_max(r["timer"]),
                     *median_max(r["next"]), str(r["failures"])])
    print(table(headers, rows))
    failures = sum(r["failures"] for r in timer_rows)
    if delivery is not None:
        print()
        print(table(["events", "send -> next task started ms median", "max", "send_event call ms median", "max",
                     "failed"],
                    [[str(rounds), *median_max(delivery["latency"]), *median_max(delivery["send"]),
                      str(delivery["failures"])]]))
        failures += delivery["failures"]
    return 1 if failures else 0


def counts(text: str) -> List[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts such as 1,1000,10000, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected counts of at least 1, got {text!r}")
    return values


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--wakeups", type=counts, default=[1, 1000, 10000], metavar="N,N,...",
                   help="how many sleeps wake at one instant, one measurement per count (default 1,1000,10000)")
    p.add_argument("--events", type=int, default=20, metavar="N", help="event rounds (default 20; 0: none)")
    p.add_argument("--max-concurrency", type=int, default=cloacina.DEFAULT_MAX_CONCURRENCY, metavar="N")
    p.add_argument("--lead", type=float, default=2.0, metavar="S",
                   help="seconds from the first submission to the wake time, before the margin (default 2)")
    p.add_argument("--per-submit", type=float, default=0.002, metavar="S",
                   help="margin added per execution for the submissions (default 0.002)")
    args = p.parse_args()
    return asyncio.run(measure(args.url, args.wakeups, args.events, args.max_concurrency, args.lead,
                               args.per_submit))


if __name__ == "__main__":
    sys.exit(main())

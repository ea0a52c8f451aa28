"""How late scheduled fires run: worker processes fire an every-second schedule for a while.

Usage: python benches/schedule_lateness.py --url URL [--workers 3] [--seconds 20]

URL is a SQLite file URL (``sqlite:////tmp/lateness.db``; the file is replaced) or a PostgreSQL
URL. The parent schedules through a submit-only executor (``worker=False``); ``--workers`` worker
processes (this script with ``--worker``) watch the schedule and run the one-task workflow. After
``--seconds`` the schedule is removed and, per fire, the script prints percentiles of:

- *recorded*: the execution's ``started_at`` (when a worker stored it) minus its fire time;
- *task start*: when its task began running minus its fire time.

It also checks that every fire was made once and none was skipped. Every child process is
killed (by pid) and reaped whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List

import cloacina


@cloacina.task(task_id="lateness.tick")
def tick(ctx: Dict[str, Any]) -> Dict[str, Any]:
    return {"ok": True}


WORKFLOW = cloacina.Workflow("lateness", tasks=[tick])


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def work(url: str, ready: str) -> None:
    """A worker process: runs until SIGTERM."""
    executor = cloacina.UnifiedExecutor()
    await executor.initialize(url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    Path(ready).write_text(str(os.getpid()))
    await stop.wait()
    await executor.shutdown()


def percentiles(values: List[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (f"median {statistics.median(ordered) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   "
            f"max {ordered[-1] * 1000:7.1f} ms")


async def measure(url: str, workers: int, seconds: float) -> int:
    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal", "-shm"):
            Path(url[len("sqlite:///"):] + suffix).unlink(missing_ok=True)
    client = cloacina.UnifiedExecutor()
    await client.initialize(url, worker=False)
    ready_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"lateness-{os.getpid()}"
    ready_dir.mkdir(exist_ok=True)
    children: List[subprocess.Popen] = []
    try:
        for i in range(workers):
            ready = ready_dir / f"w{i}"
            ready.unlink(missing_ok=True)
            children.append(subprocess.Popen([sys.executable, __file__, "--worker", "--url", url,
                                              "--ready", str(ready)]))
        deadline = time.monotonic() + 60
        while not all((ready_dir / f"w{i}").exists() for i in range(workers)):
            if time.monotonic() > deadline or any(c.poll() is not None for c in children):
                raise SystemExit("a worker did not start")
            await asyncio.sleep(0.05)
        await client.schedule(WORKFLOW, "* * * * * *", name="lateness")
        await asyncio.sleep(seconds)
        await client.unschedule("lateness")
        deadline = time.monotonic() + 60
        while True:
            runs = await client.list_executions(workflow="lateness", limit=10_000)
            if all(r["status"] == "Completed" for r in runs) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        await client.shutdown()
    fires = sorted(parse(r["input_context"]["fire_time"]).timestamp() for r in runs)
    stamps = [int(f) for f in fires]
    gaps = len(range(stamps[0], stamps[-1] + 1)) - len(set(stamps))
    duplicates = len(stamps) - len(set(stamps))
    recorded = [(parse(r["started_at"]) - parse(r["input_context"]["fire_time"])).total_seconds() for r in runs]
    started = [(parse(r["task_results"][0]["started_at"]) - parse(r["input_context"]["fire_time"])).total_seconds()
               for r in runs if r["task_results"][0]["started_at"]]
    backend = cloacina.backend
    print(f"{backend}, {workers} worker processes, {len(runs)} fires over {seconds:.0f} s "
          f"(duplicates {duplicates}, skipped {gaps}, not completed "
          f"{sum(r['status'] != 'Completed' for r in runs)})")
    print(f"  recorded    {percentiles(recorded)}")
    print(f"  task start  {percentiles(started)}")
    return 0 if duplicates == 0 and gaps == 0 else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ready", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        asyncio.run(work(args.url, args.ready))
        return 0
    return asyncio.run(measure(args.url, args.workers, args.seconds))


if __name__ == "__main__":
    sys.exit(main())

"""Cloacina durability demo: a worker process is killed mid-task and a new one finishes the run.

    download ── transform (slow) ── publish

This script submits the workflow from a submit-only executor, starts a worker process, kills it
with SIGKILL while `transform` runs, starts another worker, and waits for the result: `download`
is not run again, `transform` shows a "Lost" attempt followed by a Completed one.

    python examples/durable.py                      # uses sqlite:///durable.db
    python examples/durable.py postgresql://...     # any database URL

Exits 0 when the execution completed, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloacina

MARKERS = Path(os.environ.get("DURABLE_DEMO_DIR", ".")).resolve()


@cloacina.task()
def download(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"rows": list(range(10))}


@cloacina.task(dependencies=[download])
async def transform(ctx: dict[str, Any]) -> dict[str, Any]:
    (MARKERS / f"transform-{os.getpid()}.started").touch()
    await asyncio.sleep(1.0)
    return {"total": sum(ctx["rows"])}


@cloacina.task(dependencies=[transform])
def publish(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"published": f"total={ctx['total']}"}


WORKFLOW = cloacina.Workflow("durable_demo", [publish])


async def work(url: str) -> None:
    """Run as a worker until killed or SIGTERM."""
    executor = cloacina.UnifiedExecutor()
    await executor.initialize(url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await executor.shutdown()


def start_worker(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--worker", url])


def wait_for(path_glob: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not list(MARKERS.glob(path_glob)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing matched {path_glob} within {seconds} s")
        time.sleep(0.02)


async def main(url: str) -> int:
    for stale in MARKERS.glob("transform-*.started"):
        stale.unlink()
    client = cloacina.UnifiedExecutor()
    await client.initialize(url, worker=False)  # submits and waits; never runs tasks
    execution_id = await client.submit(WORKFLOW)
    print(f"submitted {execution_id}")

    first = start_worker(url)
    workers = [first]
    try:
        await asyncio.to_thread(wait_for, f"transform-{first.pid}.started")
        first.kill()  # SIGKILL: no clean-up, exactly like a crash
        first.wait()
        print(f"killed worker {first.pid} while 'transform' ran")
        workers.append(start_worker(url))
        result = await client.wait(execution_id, timeout=60)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
            worker.wait()
        await client.shutdown()

    print(f"status    {result['status']}  {(result['final_context'] or {}).get('published')}")
    for task_result in result["task_results"]:
        attempts = ", ".join(f"{a['attempt']}:{a['status']}" for a in task_result["history"])
        print(f"  {task_result['task_id']:<10} {task_result['status']:<10} attempts {attempts}")
    return 0 if result["status"] == "Completed" else 1


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        asyncio.run(work(sys.argv[2]))
        sys.exit(0)
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///durable.db"
    sys.exit(asyncio.run(main(target)))

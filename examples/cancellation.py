"""Cloacina cancellation: stop a running execution from the code that submitted it.

    prepare ── crunch (async, would take 30 s) ── publish

The script submits the workflow, waits until `crunch` is running, then calls
`executor.cancel(execution_id)`. The running `async` task sees `CancelledError` (its `finally`
blocks run, so it can clean up), no new task starts, and the execution ends Cancelled: `crunch`
and the never-started `publish` are Cancelled with a reason, `prepare` keeps its Completed result.
`cancel()` works from any process sharing the database; `execute(..., timeout=)` and cancelling
the asyncio task that awaits `execute` cancel the same way.

    python examples/cancellation.py                  # uses sqlite:///cancellation.db
    python examples/cancellation.py postgresql://... # any database URL

Exits 0 when the execution ended Cancelled and the task saw CancelledError, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import cloacina

# Async tasks run on the event loop that called initialize(), so they can share these events
# with main(). They are module-level only to keep the example short.
crunch_started = asyncio.Event()
crunch_saw_cancel = asyncio.Event()


@cloacina.task(task_id="cancellation.prepare")
def prepare(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"batches": 30}


@cloacina.task(task_id="cancellation.crunch", dependencies=[prepare])
async def crunch(ctx: dict[str, Any]) -> dict[str, Any]:
    crunch_started.set()
    try:
        for _ in range(ctx["batches"]):
            await asyncio.sleep(1)  # one slow batch
    except asyncio.CancelledError:
        crunch_saw_cancel.set()  # clean up here: release locks, delete temporary files, ...
        raise  # then always let the cancellation through
    return {"crunched": ctx["batches"]}


@cloacina.task(task_id="cancellation.publish", dependencies=[crunch])
def publish(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"published": True}


workflow = cloacina.Workflow("cancellation", [publish])


async def main(url: str) -> int:
    executor = cloacina.UnifiedExecutor()
    await executor.initialize(url)
    try:
        execution_id = await executor.submit(workflow)
        await asyncio.wait_for(crunch_started.wait(), timeout=10)
        print(f"submitted {execution_id}; 'cancellation.crunch' is running")

        print(f"cancel() returned {await executor.cancel(execution_id)}")
        result = await executor.wait(execution_id, timeout=10)
        # The task's CancelledError handler ran (give it a moment if the record was faster).
        await asyncio.wait_for(crunch_saw_cancel.wait(), timeout=5)
    except (TimeoutError, asyncio.TimeoutError) as exc:  # two classes on Python 3.10, one since
        print(f"gave up waiting: {exc!r}")
        return 1
    finally:
        await executor.shutdown(cancel=True)  # if anything went wrong, cancel rather than wait 30 s

    print(f"task saw CancelledError: {'yes' if crunch_saw_cancel.is_set() else 'no'}")
    print(f"status    {result['status']}  ({result['error']})")
    for r in result["task_results"]:
        print(f"  {r['task_id']:<22} {r['status']:<10} {r['reason'] or ''}".rstrip())
    statuses = [r["status"] for r in result["task_results"]]
    ok = result["status"] == "Cancelled" and statuses == ["Completed", "Cancelled", "Cancelled"]
    return 0 if ok else 1


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///cancellation.db"
    sys.exit(asyncio.run(main(target)))

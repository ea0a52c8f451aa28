"""Cloacina timeouts: a per-attempt task timeout that is retried, and an execution deadline.

1. `call_api` has `timeout=0.3` and `retries=2`. Its first attempt hangs: at 0.3 s the engine
   cancels the coroutine (it sees CancelledError), records the attempt as Failed with a
   TimeoutError, and retries. The second attempt answers in time and the task Completes.
2. `execute(..., timeout=0.5)` puts a deadline on a whole execution: when it passes, the engine
   cancels the execution and its running task, and the result's status is Cancelled.

    python examples/timeouts.py                  # uses sqlite:///timeouts.db
    python examples/timeouts.py postgresql://... # any database URL

Exits 0 when both happen as described, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import cloacina

# What the attempts of call_api saw, in this process.
api_attempts: list[str] = []


@cloacina.task(task_id="timeouts.call_api", timeout=0.3, retries=2, retry_delay=0.1,
               retry_on=(TimeoutError,))
async def call_api(ctx: dict[str, Any]) -> dict[str, Any]:
    """The first call hangs (a stuck connection); the retry answers after 50 ms."""
    first = not api_attempts
    api_attempts.append("started")
    try:
        await asyncio.sleep(30 if first else 0.05)
    except asyncio.CancelledError:
        api_attempts[-1] = "cancelled by the timeout"
        raise  # always let cancellation through
    api_attempts[-1] = "answered"
    return {"response": "200 OK"}


@cloacina.task(task_id="timeouts.nightly_rebuild")
async def nightly_rebuild(ctx: dict[str, Any]) -> dict[str, Any]:
    """Far slower than the execution's deadline allows."""
    await asyncio.sleep(30)
    return {"rebuilt": True}


async def main(url: str) -> int:
    executor = cloacina.UnifiedExecutor()
    await executor.initialize(url)
    try:
        # 1. Task timeout + retry. (timeout=20 on execute only bounds the example's run time.)
        api = await executor.execute(cloacina.Workflow("timeouts_api", [call_api]), timeout=20)
        # 2. Execution deadline.
        rebuild = await executor.execute(cloacina.Workflow("timeouts_deadline", [nightly_rebuild]),
                                         timeout=0.5)
    finally:
        await executor.shutdown()

    called = api["task_results"][0]
    print(f"task timeout: {called['task_id']} {called['status']} after {called['attempts']} attempts")
    for attempt, seen in zip(called["history"], api_attempts):
        print(f"  attempt {attempt['attempt']}  {attempt['status']:<9}  {attempt['error'] or '-'}  [{seen}]")

    rebuilt = rebuild["task_results"][0]
    print(f"execution timeout: {rebuild['status']} | {rebuild['error']}")
    print(f"  {rebuilt['task_id']} {rebuilt['status']} | {rebuilt['reason']}")

    ok = (api["status"] == "Completed" and called["attempts"] == 2
          and called["history"][0]["status"] == "Failed"
          and rebuild["status"] == "Cancelled" and rebuilt["status"] == "Cancelled")
    return 0 if ok else 1


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///timeouts.db"
    sys.exit(asyncio.run(main(target)))

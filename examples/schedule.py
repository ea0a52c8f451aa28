"""Cloacina schedules: a workflow fired every second by cron, exactly once per fire.

Run it with a backend installed (`pip install cloacina cloacina-sqlite`):

    python examples/schedule.py                  # uses sqlite:///schedule.db
    python examples/schedule.py /tmp/runs.db     # any SQLite URL or file path, or postgresql://...

The executor is also a worker, so it fires the schedule itself; on a real deployment every
worker process (see examples/durable.py) may fire it, and each fire still runs once.
Exits 0 once three fires have completed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import cloacina


@cloacina.task()
def heartbeat(ctx: dict[str, Any]) -> dict[str, Any]:
    """Each fire's input context holds the schedule's context plus its fire time."""
    return {"message": f"{ctx['service']} checked at {ctx['fire_time']}"}


workflow = cloacina.Workflow("heartbeat", tasks=[heartbeat])


async def main(url: str) -> int:
    executor = cloacina.UnifiedExecutor()
    await executor.initialize(url)
    try:
        # Every second (6 fields: seconds first). Scheduling the same name again only updates it.
        name = await executor.schedule(workflow, "* * * * * *", context={"service": "api"},
                                       catchup="latest")
        [stored] = [s for s in await executor.list_schedules() if s["name"] == name]
        print(f"schedule  {name!r}  cron {stored['cron']!r}  next fire {stored['next_fire_time']}")
        done: list[Any] = []
        for _ in range(200):  # at most 20 s
            runs = await executor.list_executions(workflow="heartbeat", status="Completed", limit=100)
            done = [r for r in runs if r["started_at"] >= stored["created_at"]]
            if len(done) >= 3:
                break
            await asyncio.sleep(0.1)
        await executor.unschedule(name)
        for run in sorted(done, key=lambda r: r["input_context"]["fire_time"])[:3]:
            print(f"fired     {run['final_context']['message']}")
        return 0 if len(done) >= 3 else 1
    finally:
        await executor.shutdown()


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///schedule.db"
    sys.exit(asyncio.run(main(target)))

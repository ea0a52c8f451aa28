"""Cloacina fan-out: one task feeds N async tasks that run at the same time, then a join.

    plan ──┬── fetch_0 ──┬── join
           ├── fetch_1 ──┤
           ├──   ...   ──┤
           └── fetch_4 ──┘

`plan` splits the work into shards; each `fetch_<i>` is an `async def` task that reads its shard
and "downloads" it for 1 s (an `asyncio.sleep` standing in for network I/O). They share one event
loop and start as soon as `plan` is done, so the five of them take about 1 s in all, not 5 s.
`join` starts once all of them Completed and sees every fetch's output in its context.

    python examples/fan_out.py                  # uses sqlite:///fan_out.db
    python examples/fan_out.py postgresql://... # any database URL

Exits 0 when the execution completed and all fetches overlapped in time, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Awaitable, Callable

import cloacina

SHARDS = 5
DOWNLOAD_SECONDS = 1.0


@cloacina.task(task_id="fan_out.plan")
def plan(ctx: dict[str, Any]) -> dict[str, Any]:
    urls = [f"https://example.com/export?page={page}" for page in range(ctx["pages"])]
    return {"shards": [urls[i::SHARDS] for i in range(SHARDS)]}


def make_fetch(index: int) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """One fan-out branch. The DAG is fixed when the workflow is built, so branches are made in
    a loop, each with its own task id and its own output key."""

    async def fetch(ctx: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()  # one clock for the whole process: comparable across tasks
        await asyncio.sleep(DOWNLOAD_SECONDS)
        rows = [len(url) for url in ctx["shards"][index]]
        return {f"fetched_{index}": {"rows": rows, "started": started, "ended": time.monotonic()}}

    return fetch


fetches = [cloacina.task(task_id=f"fan_out.fetch_{i}", dependencies=[plan])(make_fetch(i))
           for i in range(SHARDS)]


@cloacina.task(task_id="fan_out.join", dependencies=fetches)
def join(ctx: dict[str, Any]) -> dict[str, Any]:
    rows = [row for i in range(SHARDS) for row in ctx[f"fetched_{i}"]["rows"]]
    return {"total_rows": len(rows)}


workflow = cloacina.Workflow("fan_out", [join])


async def main(url: str) -> int:
    executor = cloacina.UnifiedExecutor(max_concurrency=8)  # room for all five at once
    await executor.initialize(url)
    try:
        # timeout= only bounds the example's run time.
        result = await executor.execute(workflow, {"pages": 23}, timeout=20)
    finally:
        await executor.shutdown()

    final = result["final_context"] or {}
    spans = [(final[f"fetched_{i}"]["started"], final[f"fetched_{i}"]["ended"])
             for i in range(SHARDS) if f"fetched_{i}" in final]
    print(f"status    {result['status']}  total_rows={final.get('total_rows')}")
    if len(spans) != SHARDS:
        return 1
    origin = min(start for start, _ in spans)
    for i, (start, end) in enumerate(spans):
        print(f"  fan_out.fetch_{i}  ran {start - origin:5.2f} s to {end - origin:5.2f} s")
    # They overlapped if the last one started before the first one ended.
    overlapped = max(start for start, _ in spans) < min(end for _, end in spans)
    wall = max(end for _, end in spans) - origin
    print(f"fetches overlapped: {'yes' if overlapped else 'no'} "
          f"({SHARDS} x {DOWNLOAD_SECONDS:.0f} s of waiting took {wall:.2f} s)")
    return 0 if result["status"] == "Completed" and overlapped else 1


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///fan_out.db"
    sys.exit(asyncio.run(main(target)))

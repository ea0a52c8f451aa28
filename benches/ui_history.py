"""Times the dashboard API (``cloacina.ui``) against a database holding many executions.

Fills a fresh SQLite file with N executions through the public API (a ``worker=False``
executor submitting in concurrent batches: they are recorded and stay Pending, nothing runs),
then serves the API on a free loopback port and times, over ``--repeat`` requests each:
the first page of ``/api/executions``, a page filtered by workflow, one filtered by status, a
deep page (offset N/2), and ``/api/executions/<id>``. Prints median and max milliseconds.

Usage: python ui_history.py [--executions 100000] [--db PATH] [--repeat 10] [--batch 500]
(an existing --db file is reused as it is, to time again without refilling).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import List, Tuple

import cloacina
from cloacina.ui import make_server

WORKFLOWS = 4  # executions go round-robin to this many workflows


@cloacina.task(task_id="ui_bench.extract")
def extract(context: dict) -> dict:
    return {"rows": 3}


@cloacina.task(task_id="ui_bench.load", dependencies=["ui_bench.extract"])
def load(context: dict) -> dict:
    return {"loaded": True}


async def fill(url: str, count: int, batch: int) -> List[str]:
    """Submits ``count`` executions in concurrent batches; returns their ids."""
    workflows = [cloacina.Workflow(f"ui_bench.wf{i}", tasks=["ui_bench.load"]) for i in range(WORKFLOWS)]
    executor = cloacina.UnifiedExecutor()
    await executor.initialize(url, worker=False)
    ids: List[str] = []
    started = time.monotonic()
    try:
        for first in range(0, count, batch):
            n = min(batch, count - first)
            ids += await asyncio.gather(*(executor.submit(workflows[(first + i) % WORKFLOWS], {"n": first + i})
                                          for i in range(n)))
            if (first // batch) % 20 == 0:
                rate = len(ids) / (time.monotonic() - started)
                print(f"  {len(ids):>7} submitted ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    finally:
        await executor.shutdown()
    return ids


def timed_get(url: str) -> Tuple[float, int]:
    """Milliseconds for one GET and the size of its body."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
        assert response.status == 200, response.status
    return (time.perf_counter() - started) * 1000, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--db", default="/tmp/cloacina-ui-bench.db")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    if cloacina.backend != "sqlite":
        sys.exit("run with the SQLite backend (CLOACINA_BACKEND=sqlite)")

    url = f"sqlite:///{args.db}"
    if not Path(args.db).exists():
        print(f"filling {args.db} with {args.executions:,} executions ...", file=sys.stderr)
        started = time.monotonic()
        asyncio.run(fill(url, args.executions, args.batch))
        print(f"filled in {time.monotonic() - started:.1f} s", file=sys.stderr)

    server = make_server(url, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = server.url
        with urllib.request.urlopen(base + "executions?limit=1", timeout=60) as response:
            some_id = json.load(response)["executions"][0]["execution_id"]
        total = args.executions
        cases = [
            ("executions, first page (50)", "executions"),
            ("executions?workflow=ui_bench.wf1", "executions?workflow=ui_bench.wf1"),
            ("executions?status=Pending", "executions?status=Pending"),
            ("executions?status=Failed (no match)", "executions?status=Failed"),
            (f"executions?offset={total // 2}", f"executions?offset={total // 2}"),
            ("executions/<id>", f"executions/{some_id}"),
            ("workflows/ui_bench.wf2 (100)", "workflows/ui_bench.wf2"),
        ]
        print(f"{'request':<40} {'median ms':>10} {'max ms':>10} {'bytes':>8}   ({args.repeat} requests each, "
              f"{total:,} executions, backend {cloacina.backend})")
        for label, path in cases:
            timed_get(base + path)  # warm-up
            samples = [timed_get(base + path) for _ in range(args.repeat)]
            times = [ms for ms, _ in samples]
            print(f"{label:<40} {statistics.median(times):>10.1f} {max(times):>10.1f} {samples[0][1]:>8}")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


if __name__ == "__main__":
    main()

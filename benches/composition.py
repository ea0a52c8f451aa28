"""Composition: what a sub-workflow and a hook cost.

Usage: python benches/composition.py --url URL [--executions 100] [--children 200] [--max-concurrency 8]

URL is a SQLite file URL (``sqlite:////tmp/composition.db``; the file is replaced) or a PostgreSQL
URL (use an empty database). One executor in this process is the database's only worker.

- *Sub-workflow task*: ``--executions`` executions, one after another, of a workflow whose only
  task is a sub-workflow of a 1-task child, alternating with as many of the child workflow run
  directly: ms per execution of each; the difference is what one child costs.
- *Mapped children*: one execution mapping the 1-task child over ``--children`` elements, and
  one mapping a 1-task ``@task`` over as many: children/s against instances/s.
- *Hook*: ``--executions`` executions of a 1-task workflow with ``on_success``, alternating with
  the same workflow without it: ms per execution of each.

Prints one table; exits 1 if an execution did not complete as expected.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

import cloacina
from report import fresh_sqlite, table  # next to this file


@cloacina.task(task_id="composition.leaf")
def leaf(ctx: Dict[str, Any]) -> Dict[str, Any]:
    return {"leaf": ctx.get("item", 0)}


@cloacina.task(task_id="composition.each", map_over="items")
def each(ctx: Dict[str, Any]) -> Dict[str, Any]:
    return {"leaf": ctx["item"]}


@cloacina.task(task_id="composition.publish")
def publish(ctx: Dict[str, Any]) -> None:
    return None


LEAF = cloacina.Workflow("composition.leaf", [leaf])
CALLER = cloacina.Workflow("composition.caller", [cloacina.subworkflow(LEAF, task_id="composition.call")])
CHILDREN = cloacina.Workflow("composition.children",
                             [cloacina.subworkflow(LEAF, task_id="composition.children", map_over="items")])
INSTANCES = cloacina.Workflow("composition.instances", [each])
HOOKED = cloacina.Workflow("composition.hooked", [leaf], on_success=publish)

Run = Callable[[], Awaitable[Dict[str, Any]]]


def completed(result: Dict[str, Any]) -> Dict[str, Any]:
    """``result``, or exits naming the execution that did not complete."""
    if result["status"] != "Completed":
        raise SystemExit(f"execution {result['execution_id']} of {result['workflow_name']} ended "
                         f"{result['status']}: {result['error']}")
    return result


async def alternating(count: int, first: Run, second: Run) -> List[List[float]]:
    """Runs ``first`` and ``second`` ``count`` times each, alternating; the seconds each run took."""
    seconds: List[List[float]] = [[], []]
    for _ in range(count):
        for walls, run in zip(seconds, (first, second)):
            started = time.perf_counter()
            completed(await run())
            walls.append(time.perf_counter() - started)
    return seconds


async def per_second(run: Run, items: int) -> float:
    """Items per second of one execution of ``run``."""
    started = time.perf_counter()
    completed(await run())
    return items / (time.perf_counter() - started)


async def measure(url: str, executions: int, children: int, max_concurrency: int) -> List[List[str]]:
    fresh_sqlite(url)
    executor = cloacina.UnifiedExecutor(max_concurrency)
    await executor.initialize(url)

    def execute(workflow: cloacina.Workflow, context: Optional[Dict[str, Any]] = None) -> Run:
        return lambda: executor.execute(workflow, context or {})

    try:
        for workflow in (LEAF, CALLER, HOOKED):  # warm-up
            completed(await executor.execute(workflow, {}))
        direct, called = await alternating(executions, execute(LEAF), execute(CALLER))
        plain, hooked = await alternating(executions, execute(LEAF), execute(HOOKED))
        items = {"items": list(range(children))}
        instances = await per_second(execute(INSTANCES, items), children)
        mapped = await per_second(execute(CHILDREN, items), children)
    finally:
        await executor.shutdown()

    def row(what: str, without: List[float], with_it: List[float]) -> List[str]:
        before, after = statistics.median(without) * 1000, statistics.median(with_it) * 1000
        return [what, f"{before:.2f}", f"{after:.2f}", f"+{after - before:.2f}"]

    return [
        row(f"sub-workflow task, ms per execution ({executions})", direct, called),
        row(f"on_success hook, ms per execution ({executions})", plain, hooked),
        [f"map over {children}: instances/s vs children/s", f"{instances:,.0f}", f"{mapped:,.0f}", ""],
    ]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--executions", type=int, default=100)
    parser.add_argument("--children", type=int, default=200)
    parser.add_argument("--max-concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(args.url, args.executions, args.children, args.max_concurrency))
    print(f"Composition on {cloacina.backend} ({cloacina.backend_version}), one worker, "
          f"max_concurrency {args.max_concurrency}; medians")
    print()
    print(table(["", "without", "with", "cost"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

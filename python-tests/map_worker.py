"""A Cloacina worker process for the map tests (also imported by them for ``define``).

Run as a program it registers the map workflow's tasks under ``--prefix`` (the ids must be the
same in every process of a test), initializes an executor on ``--url`` with ``--max-concurrency``,
writes ``--ready`` (JSON: pid) and works until SIGTERM or SIGINT, when it awaits ``shutdown()``
and exits 0.

The workflow ``<prefix>.workflow.map``: ``src`` -> ``m`` (mapped over ``items``) -> ``join``; the
workflow ``<prefix>.workflow.limited``: ``src`` -> ``limited`` (``m`` with ``map_limit=--map-limit``).

- ``src`` returns ``{"items": [0, 1, ..., n - 1]}`` for ``n`` from the input context.
- Instance ``i`` of ``m`` appends ``<run> <i> <pid> start <unix time>`` to ``--out``, sleeps
  ``--sleep`` seconds, appends the same line with ``end`` and returns ``3 * item + 1``. Lines are
  written with one ``os.write`` on an ``O_APPEND`` descriptor (``durable_worker.record``), so
  lines of several processes never interleave and a line survives a SIGKILL right after it;
  ``procs.read_events`` reads them back (the event's ``task`` is the map index).
- ``join`` returns ``{"total": sum(m), "seen": len(m)}``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Awaitable, Callable, Dict, Sequence

from backend import cl
from durable_worker import init_options, record, serve, worker_parser

Context = Dict[str, Any]


def value_of(item: int) -> int:
    """What instance ``item`` returns."""
    return 3 * item + 1


def define(prefix: str, out: str, *, sleep: float = 0.0, map_limit: int = 3) -> Dict[str, Any]:
    """Registers ``src``, ``m``, ``join`` and ``limited`` under ``prefix``; returns the workflows by name."""
    out = str(out)

    @cl.task(f"{prefix}.src")
    def src(ctx: Context) -> Context:
        return {"items": list(range(int(ctx["n"])))}

    def instance() -> Callable[[Context], Awaitable[Any]]:
        # A new function per task: the registry knows a function by the id it was registered under.
        async def body(ctx: Context) -> Any:
            run = str(ctx.get("run", "-"))
            index = cl.current_task()["map_index"]
            record(out, run, str(index), "start")
            if sleep:
                await asyncio.sleep(sleep)
            record(out, run, str(index), "end")
            return value_of(ctx["item"])
        return body

    m = cl.task(f"{prefix}.m", dependencies=[src], map_over="items")(instance())
    limited = cl.task(f"{prefix}.limited", dependencies=[src], map_over="items", map_limit=map_limit)(instance())

    @cl.task(f"{prefix}.join", dependencies=[m])
    def join(ctx: Context) -> Context:
        values = ctx[f"{prefix}.m"]
        return {"total": sum(values), "seen": len(values)}

    return {"map": cl.Workflow(f"{prefix}.workflow.map", [join]),
            "limited": cl.Workflow(f"{prefix}.workflow.limited", [limited])}


async def main(args: argparse.Namespace) -> int:
    define(args.prefix, args.out, sleep=args.sleep, map_limit=args.map_limit)
    executor = cl.UnifiedExecutor(max_concurrency=args.max_concurrency)
    return await serve(executor, args.url, init_options(args), args.ready)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = worker_parser(__doc__)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds each instance sleeps")
    p.add_argument("--map-limit", type=int, default=3, help="map_limit of the limited task")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))

"""A Cloacina worker process for the flow-control tests (also imported by them for ``define``).

Run as a program it registers the task ``<prefix>.work`` (limits ``["<prefix>.key:{key}"]``), and
works until SIGTERM or SIGINT (see ``durable_worker.serve``). Each attempt appends
``<key> <execution id> <pid> start <unix time>`` to ``--out``, sleeps a random 0 to ``--sleep``
seconds (seeded by ``--seed`` and the execution id; exactly ``--sleep`` with ``--exact``), then
appends the same line with ``end``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from typing import Any, Dict, Sequence

from backend import cl
from durable_worker import init_options, record, serve, worker_parser


def define(prefix: str, out: str, *, sleep: float = 0.03, seed: int = 0, exact: bool = False) -> Any:
    """Registers ``<prefix>.work``; returns its one-task workflow."""

    @cl.task(f"{prefix}.work", limits=[f"{prefix}.key:{{key}}"])
    async def work(ctx: Dict[str, Any]) -> Dict[str, Any]:
        me = cl.current_task()
        key = str(ctx["key"])
        record(out, key, me["execution_id"], "start")
        await asyncio.sleep(sleep if exact else random.Random(f"{seed}{me['execution_id']}").uniform(0, sleep))
        record(out, key, me["execution_id"], "end")
        return {"done": True}

    return cl.Workflow(f"{prefix}.limited", [work])


async def main(args: argparse.Namespace) -> int:
    define(args.prefix, args.out, sleep=args.sleep, seed=args.seed, exact=args.exact)
    executor = cl.UnifiedExecutor(max_concurrency=args.max_concurrency)
    return await serve(executor, args.url, init_options(args), args.ready)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = worker_parser(__doc__)
    p.add_argument("--sleep", type=float, default=0.03, help="most seconds an attempt sleeps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exact", action="store_true", help="sleep exactly --sleep seconds")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))

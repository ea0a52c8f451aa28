"""A worker process for the failover tests (also imported by them for ``define``).

Run as a program it registers the tasks named by ``--tasks`` (so a test can start a worker that
lacks one), initializes an executor on ``--url`` with ``--lease``, logs WARNINGs to stderr,
writes ``--ready`` and works until SIGTERM or SIGINT.

Tasks (ids ``<prefix>.<name>``; every run appends ``<run> <task_id> <pid> <kind> <time>`` lines
to ``--out`` as in ``durable_worker.record``, ``kind`` carrying the attempt: ``started1``):

- ``slow``: waits until ``<control>/release_<attempt>`` exists, then returns ``{"slow": attempt}``.
- ``after`` (depends on ``slow``): returns ``{"after": ctx["slow"]}``.
- ``long``: an async task that waits until cancelled (it records ``cancelled``).
- ``nap``: a task that sleeps ``ctx["nap"]`` seconds.

Workflows: ``<prefix>.workflow.pair`` (slow -> after), ``.long`` and ``.nap``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, Sequence

from backend import cl
from durable_worker import record, write_json

NAMES = ("slow", "after", "long", "nap")


def define(prefix: str, out: str, control: str, names: Sequence[str] = NAMES) -> Dict[str, Any]:
    """Registers the tasks in ``names``; returns the workflows whose tasks are all registered."""
    control_dir = Path(control)
    tasks: Dict[str, Any] = {}

    def run_of(ctx: Dict[str, Any]) -> str:
        return str(ctx.get("run", "-"))

    if "slow" in names:
        @cl.task(f"{prefix}.slow")
        def slow(ctx: Dict[str, Any]) -> Dict[str, Any]:
            attempt = cl.current_task()["attempt"]
            record(out, run_of(ctx), f"{prefix}.slow", f"started{attempt}")
            while not (control_dir / f"release_{attempt}").exists():
                time.sleep(0.02)
            record(out, run_of(ctx), f"{prefix}.slow", f"finished{attempt}")
            return {"slow": attempt}

        tasks["slow"] = slow

    if "after" in names:
        @cl.task(f"{prefix}.after", dependencies=[f"{prefix}.slow"])
        def after(ctx: Dict[str, Any]) -> Dict[str, Any]:
            record(out, run_of(ctx), f"{prefix}.after", "finished")
            return {"after": ctx["slow"]}

        tasks["after"] = after

    if "long" in names:
        @cl.task(f"{prefix}.long")
        async def long(ctx: Dict[str, Any]) -> Dict[str, Any]:
            record(out, run_of(ctx), f"{prefix}.long", "started")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                record(out, run_of(ctx), f"{prefix}.long", "cancelled")
                raise
            return {}

        tasks["long"] = long

    if "nap" in names:
        @cl.task(f"{prefix}.nap")
        def nap(ctx: Dict[str, Any]) -> Dict[str, Any]:
            record(out, run_of(ctx), f"{prefix}.nap", "started")
            time.sleep(float(ctx["nap"]))
            record(out, run_of(ctx), f"{prefix}.nap", "finished")
            return {"napped": ctx["nap"]}

        tasks["nap"] = nap

    workflows = {}
    if "slow" in tasks and "after" in tasks:
        workflows["pair"] = cl.Workflow(f"{prefix}.workflow.pair", [tasks["after"]])
    for name in ("long", "nap"):
        if name in tasks:
            workflows[name] = cl.Workflow(f"{prefix}.workflow.{name}", [tasks[name]])
    return workflows


async def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    define(args.prefix, args.out, args.control, args.tasks.split(","))
    executor = cl.UnifiedExecutor(max_concurrency=4)
    await executor.initialize(args.url, lease_timeout=args.lease)
    write_json(args.ready, {"pid": os.getpid()})
    print(f"ready pid={os.getpid()}", flush=True)
    await stop.wait()
    await executor.shutdown()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--tasks", default=",".join(NAMES), help="comma-separated task names to register")
    parser.add_argument("--lease", type=float, default=2.0)
    raise SystemExit(asyncio.run(main(parser.parse_args())))

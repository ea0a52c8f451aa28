"""A Cloacina worker process for the hook tests (also imported by them for ``define``).

Run as a program it registers the tasks and workflows of :func:`define` under ``--prefix``,
initializes an executor on ``--url``, writes ``--ready`` and works until SIGTERM or SIGINT (see
``durable_worker.serve``). With ``--hold-hooks`` its hooks never finish in this process: each
writes its ``started`` line and then waits (at most ``HOLD_LIMIT`` s) for the test to kill the
process, so a test knows the hook was claimed here before the kill. With ``--die-after-failing
SECONDS`` the last attempt of ``doomed`` arms a timer that kills this process with SIGKILL that
long after the attempt raised: before its failure is committed, before its hook is claimed, or
while the hook runs, depending on the delay and the machine.

Tasks append ``<run> <task_id> <pid> <kind> <unix time>`` lines to ``--out`` (see
``durable_worker.record``); ``<run>`` is the ``run`` key of the execution's input. A hook that
finishes also writes what it saw as ``ctx["execution"]`` to ``<control>/<hook>_<run>_<pid>.json``.

Workflows (``<prefix>.workflow.<name>``), task ids ``<prefix>.<name>``:

- ``fail``: doomed (``retries=1``; every attempt writes ``started`` then ``failed`` and raises
  ``RuntimeError("doomed attempt <n>")``); ``on_failure=alert``, ``on_success=publish``.
- ``ok``:   root -> leaf0..leaf3 (their ends land together, in several workers);
  ``on_success=publish``, ``on_failure=alert``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from backend import cl
from durable_worker import init_options, record, serve, worker_parser

Context = Dict[str, Any]

HOLD_LIMIT = 120.0  # seconds a held hook waits to be killed at most (a test never takes that long)
LEAVES = 4


def seen_path(control: Path, hook: str, run: str, pid: int) -> Path:
    """Where the hook ``hook`` (its short name) of run ``run`` wrote what it saw, in process ``pid``."""
    return control / f"{hook}_{run}_{pid}.json"


def define(prefix: str, out: str, control: str, *, hold_hooks: bool = False,
           die_after_failing: Optional[float] = None) -> Dict[str, Any]:
    """Registers the tasks under ``prefix``; returns the workflows by name."""
    out = str(out)
    control_dir = Path(control)

    def tid(name: str) -> str:
        return f"{prefix}.{name}"

    def run_of(ctx: Context) -> str:
        return str(ctx.get("run", "-"))

    def hook(name: str) -> Any:
        async def body(ctx: Context) -> Context:
            run = run_of(ctx)
            record(out, run, tid(name), "started")
            if hold_hooks:  # the test kills this process meanwhile
                await asyncio.sleep(HOLD_LIMIT)
                raise RuntimeError(f"{name} was held {HOLD_LIMIT} s and never killed")
            path = seen_path(control_dir, name, run, os.getpid())
            path.write_text(json.dumps(ctx["execution"]))
            record(out, run, tid(name), "finished")
            return {name: os.getpid()}

        body.__name__ = body.__qualname__ = name
        return cl.task(tid(name))(body)

    alert = hook("alert")
    publish = hook("publish")

    @cl.task(tid("doomed"), retries=1, retry_delay=0.05)
    def doomed(ctx: Context) -> Context:
        run = run_of(ctx)
        attempt = cl.current_task()["attempt"]
        record(out, run, tid("doomed"), "started")
        record(out, run, tid("doomed"), "failed")
        if die_after_failing is not None and attempt == 2:
            threading.Timer(die_after_failing, os.kill, (os.getpid(), signal.SIGKILL)).start()
        raise RuntimeError(f"doomed attempt {attempt}")

    @cl.task(tid("root"))
    def root(ctx: Context) -> Context:
        record(out, run_of(ctx), tid("root"), "finished")
        return {"root": True}

    leaves = []
    for i in range(LEAVES):
        def leaf(ctx: Context, i: int = i) -> Context:
            time.sleep(0.02)
            record(out, run_of(ctx), tid(f"leaf{i}"), "finished")
            return {f"leaf{i}": i}

        leaf.__name__ = leaf.__qualname__ = f"leaf{i}"
        leaves.append(cl.task(tid(f"leaf{i}"), dependencies=[root])(leaf))

    return {
        "fail": cl.Workflow(f"{prefix}.workflow.fail", [doomed], on_failure=alert, on_success=publish),
        "ok": cl.Workflow(f"{prefix}.workflow.ok", leaves, on_success=publish, on_failure=alert),
    }


async def main(args: argparse.Namespace) -> int:
    define(args.prefix, args.out, args.control, hold_hooks=args.hold_hooks,
           die_after_failing=args.die_after_failing)
    executor = cl.UnifiedExecutor(max_concurrency=args.max_concurrency)
    return await serve(executor, args.url, {"worker": True, **init_options(args)}, args.ready)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = worker_parser(__doc__)
    p.add_argument("--control", required=True, help="directory the hooks write what they saw to")
    p.add_argument("--hold-hooks", action="store_true", help="hooks never finish in this process")
    p.add_argument("--die-after-failing", type=float, default=None, metavar="SECONDS",
                   help="SIGKILL this process that long after doomed's last attempt raised")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))

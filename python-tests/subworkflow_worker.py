"""A Cloacina worker process for the sub-workflow tests (also imported by them for ``define``).

Run as a program it registers the tasks and workflows of :func:`define` under ``--prefix`` (the ids
must be the same in every process of a test: a worker finds a task, and a sub-workflow node its
child workflow, by id), initializes an executor on ``--url``, writes ``--ready`` and works until
SIGTERM or SIGINT (see ``durable_worker.serve``).

Tasks append ``<tag> <task_id> <pid> <kind> <unix time>`` lines to ``--out`` (see
``durable_worker.record``). The tag is ``<run>:<item>`` in a mapped child (``item`` from its
input context) and ``<run>:-`` elsewhere, ``<run>`` being the ``run`` key of the top execution's
input, which every child inherits. What a task does is chosen by the input context, so that every
process behaves alike:

- ``fail_once``: ``step`` raises on its first attempt for each tag (a marker file
  ``<control>/failed_<tag>`` remembers it), and not again.
- ``hold``: ``step`` (async) then waits until ``<control>/release`` exists; cancelled meanwhile it
  writes a ``cancelled`` line.
- ``nap``: ``step`` then sleeps that many seconds.

Workflows (``<prefix>.workflow.<name>``), task ids ``<prefix>.<name>``:

- ``child``:  step -> tail; outputs ``{"step": <tag>}``, ``{"tail": <tag>}``.
- ``parent``: sub (the child; ``retries=1``) and fan (the child mapped over ``items``,
  ``retries=1``) -> after (``{"after": {"sub": <sub's tail>, "fan": [<each fan child's tail>]}}``).
- ``mid``:    leaves (the child mapped over ``items``) -> mid_after; gate (sync: with ``hold``,
  waits for ``<control>/release``) -> late (the child).
- ``top``:    mid (the mid workflow) -> top_after. Three levels: top, mid, and the children.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any, Dict, Sequence

from backend import cl
from durable_worker import init_options, record, serve, worker_parser

Context = Dict[str, Any]

HOLD_LIMIT = 120.0  # seconds a held task waits for its release file at most (a test never takes that long)


def tag_of(ctx: Context) -> str:
    """The run marker of a task's lines: ``<run>:<item>`` in a mapped child, else ``<run>:-``."""
    item = ctx.get("item", "-")
    return f"{ctx.get('run', '-')}:{item}"


def define(prefix: str, out: str, control: str) -> Dict[str, Any]:
    """Registers the tasks under ``prefix``; returns the workflows by name."""
    out = str(out)
    control_dir = Path(control)
    release = control_dir / "release"

    def tid(name: str) -> str:
        return f"{prefix}.{name}"

    def wf(name: str) -> str:
        return f"{prefix}.workflow.{name}"

    @cl.task(tid("step"))
    async def step(ctx: Context) -> Context:
        tag = tag_of(ctx)
        record(out, tag, tid("step"), "started")
        if ctx.get("fail_once"):
            marker = control_dir / f"failed_{tag}"
            if not marker.exists():
                marker.touch()
                record(out, tag, tid("step"), "failed")
                raise RuntimeError(f"step {tag} fails once")
        if ctx.get("hold"):
            deadline = time.monotonic() + HOLD_LIMIT
            try:
                while not release.exists():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"step {tag} was never released")
                    await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                record(out, tag, tid("step"), "cancelled")
                raise
        if ctx.get("nap"):
            await asyncio.sleep(float(ctx["nap"]))
        record(out, tag, tid("step"), "finished")
        return {"step": tag}

    @cl.task(tid("tail"), dependencies=[step])
    def tail(ctx: Context) -> Context:
        record(out, tag_of(ctx), tid("tail"), "started")
        return {"tail": ctx["step"]}

    child = cl.Workflow(wf("child"), [tail])

    sub = cl.subworkflow(child, task_id=tid("sub"), retries=1)
    fan = cl.subworkflow(child, task_id=tid("fan"), map_over="items", retries=1)

    @cl.task(tid("after"), dependencies=[sub, fan])
    def after(ctx: Context) -> Context:
        record(out, tag_of(ctx), tid("after"), "started")
        return {"after": {"sub": ctx[tid("sub")]["tail"], "fan": [c["tail"] for c in ctx[tid("fan")]]}}

    parent = cl.Workflow(wf("parent"), [after])

    leaves = cl.subworkflow(child, task_id=tid("leaves"), map_over="items")

    @cl.task(tid("mid_after"), dependencies=[leaves])
    def mid_after(ctx: Context) -> Context:
        record(out, tag_of(ctx), tid("mid_after"), "started")
        return {"mid_after": True}

    @cl.task(tid("gate"))
    def gate(ctx: Context) -> Context:
        record(out, tag_of(ctx), tid("gate"), "started")
        deadline = time.monotonic() + HOLD_LIMIT
        while ctx.get("hold") and not release.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("gate was never released")
            time.sleep(0.05)
        record(out, tag_of(ctx), tid("gate"), "finished")
        return {"gate": True}

    late = cl.subworkflow(child, task_id=tid("late"), dependencies=[gate])
    mid = cl.Workflow(wf("mid"), [mid_after, late])

    mid_node = cl.subworkflow(mid, task_id=tid("mid"))

    @cl.task(tid("top_after"), dependencies=[mid_node])
    def top_after(ctx: Context) -> Context:
        record(out, tag_of(ctx), tid("top_after"), "started")
        return {"top_after": True}

    top = cl.Workflow(wf("top"), [top_after])
    return {"child": child, "parent": parent, "mid": mid, "top": top}


async def main(args: argparse.Namespace) -> int:
    define(args.prefix, args.out, args.control)
    executor = cl.UnifiedExecutor(max_concurrency=args.max_concurrency)
    return await serve(executor, args.url, init_options(args), args.ready)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = worker_parser(__doc__)
    p.add_argument("--control", required=True, help="directory of the release and failed_<tag> files")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))

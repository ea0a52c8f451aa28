"""A Cloacina worker process for the durable-execution tests (also imported by them for ``define``).

Run as a program it registers the test tasks under ``--prefix`` (task ids must be identical in every
process of a test: workers find a task's function by its id), initializes an executor on ``--url``,
writes ``--ready`` (JSON: pid, hostname, worker) and then works until SIGTERM or SIGINT, when it
awaits ``shutdown()`` and exits 0. Optionally it first submits executions itself (``--submit``).

Every task appends lines ``<run> <task_id> <pid> <kind> <unix time>`` to ``--out`` through one
``os.write`` on an ``O_APPEND`` descriptor, so lines of several processes never interleave and a
line survives a SIGKILL right after it. ``<run>`` is the ``run`` key of the execution's input
context. Kinds: ``started`` (first thing the task does), ``finished`` (last thing before it
returns), ``failed`` (it raises on purpose), ``cancelled`` (an async task saw CancelledError).

Task shapes (ids ``<prefix>.<name>``, workflows ``<prefix>.workflow.<shape>``):

- ``chain``:  a -> b -> c        (a and c are sync, b is async); outputs a=1, b=a+1, c=b+1
- ``chain5``: s0 -> s1 -> s2 -> s3 -> s4 (alternating async/sync); outputs s0=0, s<i>=s<i-1>+1
- ``fan``:    root -> m0..m<width-1> -> join (middles alternate async/sync); m<i>=root+i, join=sum(m)

Behaviour switches, by task name: ``--hang NAME`` makes that task wait, after its ``started`` line,
until the file ``<control>/release_<NAME>`` exists (so a test can kill the process in the middle of
it); ``--fail NAME`` makes it raise ``RuntimeError`` unless ``<control>/ok_<NAME>`` exists;
``--sleep LO HI`` makes every task sleep a random time in [LO, HI] seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Collection, Dict, List, Optional, Sequence, Tuple

from backend import cl

Context = Dict[str, Any]


def record(out: str, run: str, task_id: str, kind: str) -> None:
    """Appends one side-effect line atomically (one write on an O_APPEND descriptor)."""
    line = f"{run} {task_id} {os.getpid()} {kind} {time.time():.6f}\n".encode()
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass
class TaskSet:
    prefix: str
    workflows: Dict[str, Any] = field(default_factory=dict)

    def tid(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def wf(self, shape: str) -> Any:
        return self.workflows[shape]

    def task_names(self, shape: str) -> List[str]:
        return [t[len(self.prefix) + 1:] for t in self.workflows[shape].task_ids]


def define(prefix: str, out: str, control: str, *, width: int = 3, sleep: Tuple[float, float] = (0.0, 0.0),
           hang: Collection[str] = (), fail: Collection[str] = ()) -> TaskSet:
    """Registers the tasks of every shape under ``prefix`` and builds their workflows."""
    out = str(out)
    control_dir = Path(control)
    tasks = TaskSet(prefix)

    def delay() -> float:
        return random.uniform(sleep[0], sleep[1]) if sleep[1] > 0 else 0.0

    def make(name: str, deps: Sequence[Any], compute: Callable[[Context], Context], is_async: bool) -> Any:
        tid = tasks.tid(name)
        release = control_dir / f"release_{name}"
        ok = control_dir / f"ok_{name}"

        def begin(ctx: Context) -> str:
            run = str(ctx.get("run", "-"))
            record(out, run, tid, "started")
            if name in fail and not ok.exists():
                record(out, run, tid, "failed")
                raise RuntimeError(f"{name} is not ready yet")
            return run

        if is_async:
            async def body(ctx: Context) -> Context:
                run = begin(ctx)
                try:
                    if name in hang:
                        while not release.exists():
                            await asyncio.sleep(0.05)
                    seconds = delay()
                    if seconds:
                        await asyncio.sleep(seconds)
                except asyncio.CancelledError:
                    record(out, run, tid, "cancelled")
                    raise
                result = compute(ctx)
                record(out, run, tid, "finished")
                return result
        else:
            def body(ctx: Context) -> Context:  # type: ignore[misc]
                run = begin(ctx)
                if name in hang:
                    while not release.exists():
                        time.sleep(0.05)
                seconds = delay()
                if seconds:
                    time.sleep(seconds)
                result = compute(ctx)
                record(out, run, tid, "finished")
                return result

        body.__name__ = body.__qualname__ = f"task_{name}"
        return cl.task(tid, dependencies=list(deps))(body)

    # chain: a -> b -> c
    a = make("a", [], lambda ctx: {"a": 1}, False)
    b = make("b", [a], lambda ctx: {"b": ctx["a"] + 1}, True)
    c = make("c", [b], lambda ctx: {"c": ctx["b"] + 1}, False)
    tasks.workflows["chain"] = cl.Workflow(f"{prefix}.workflow.chain", [c])

    # chain5: s0 -> ... -> s4
    previous: Optional[Any] = None
    for i in range(5):
        key, before = f"s{i}", f"s{i - 1}"
        compute = (lambda ctx: {"s0": 0}) if i == 0 else (lambda ctx, k=key, p=before: {k: ctx[p] + 1})
        previous = make(key, [previous] if previous is not None else [], compute, i % 2 == 0)
    tasks.workflows["chain5"] = cl.Workflow(f"{prefix}.workflow.chain5", [previous])

    # fan: root -> m0..m<width-1> -> join
    root = make("root", [], lambda ctx: {"root": 1}, True)
    middles = [make(f"m{i}", [root], lambda ctx, i=i: {f"m{i}": ctx["root"] + i}, i % 2 == 0)
               for i in range(width)]
    join = make("join", middles, lambda ctx: {"join": sum(ctx[f"m{i}"] for i in range(width))}, False)
    tasks.workflows["fan"] = cl.Workflow(f"{prefix}.workflow.fan", [join])
    return tasks


def expected_context(shape: str, run: str, width: int = 3) -> Context:
    """The final context of a Completed execution of ``shape`` with input ``{"run": run}``."""
    if shape == "chain":
        return {"run": run, "a": 1, "b": 2, "c": 3}
    if shape == "chain5":
        return {"run": run, **{f"s{i}": i for i in range(5)}}
    if shape == "fan":
        return {"run": run, "root": 1, **{f"m{i}": 1 + i for i in range(width)},
                "join": sum(1 + i for i in range(width))}
    raise ValueError(shape)


def write_json(path: str, value: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


async def serve(executor: Any, url: str, init: Dict[str, Any], ready_path: str,
                then: Optional[Callable[[], Awaitable[bool]]] = None) -> int:
    """A worker process's life: initializes ``executor`` on ``url`` with ``init``, writes
    ``ready_path`` (JSON: pid, hostname, worker), awaits ``then`` if given and, unless it returns
    False, works until SIGTERM or SIGINT; then awaits ``shutdown()``, prints ``bye``, returns 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await executor.initialize(url, **init)
    try:
        write_json(ready_path, {"pid": os.getpid(), "hostname": socket.gethostname(),
                                "worker": init.get("worker", True)})
        print(f"ready pid={os.getpid()} host={socket.gethostname()}", flush=True)
        if then is None or await then():
            await stop.wait()
    finally:
        await executor.shutdown()
    print("bye", flush=True)
    return 0


async def main(args: argparse.Namespace) -> int:
    tasks = define(args.prefix, args.out, args.control, width=args.width, sleep=tuple(args.sleep),
                   hang=set(args.hang), fail=set(args.fail))
    executor = cl.UnifiedExecutor(max_concurrency=args.max_concurrency)
    init: Dict[str, Any] = {"worker": not args.no_worker, **init_options(args)}
    if args.pool_size is not None:
        init["pool_size"] = args.pool_size

    async def submit() -> bool:
        if args.submit:
            if args.go:
                deadline = time.monotonic() + 60
                while not os.path.exists(args.go):
                    if time.monotonic() > deadline:
                        raise SystemExit("the go file never appeared")
                    await asyncio.sleep(0.002)
            workflow = tasks.wf(args.submit)
            submissions = [
                executor.submit(workflow, {"run": f"{args.run_prefix}{i}"},
                                idempotency_key=f"{args.key}{i}" if args.key is not None else None)
                for i in range(args.count)
            ]
            ids = list(await asyncio.gather(*submissions))
            write_json(args.ids_out, ids)
            print(f"submitted {ids}", flush=True)
        return not args.exit_after_submit

    return await serve(executor, args.url, init, args.ready, submit)


def worker_parser(description: Optional[str]) -> argparse.ArgumentParser:
    """The options every test worker program takes: where it works and how it reports."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="database URL")
    p.add_argument("--prefix", required=True, help="task id prefix (the test's ids.prefix)")
    p.add_argument("--out", required=True, help="side-effect file")
    p.add_argument("--ready", required=True, help="file written once initialized")
    p.add_argument("--lease-timeout", type=float, default=None)
    p.add_argument("--max-concurrency", type=int, default=8)
    return p


def init_options(args: argparse.Namespace) -> Dict[str, Any]:
    """``initialize`` keyword arguments from the common options (the lease timeout when given)."""
    return {} if args.lease_timeout is None else {"lease_timeout": args.lease_timeout}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = worker_parser(__doc__)
    p.add_argument("--control", required=True, help="directory of release_<task> / ok_<task> files")
    p.add_argument("--pool-size", type=int, default=None)
    p.add_argument("--no-worker", action="store_true", help="initialize with worker=False")
    p.add_argument("--width", type=int, default=3, help="middle tasks of the fan shape")
    p.add_argument("--sleep", type=float, nargs=2, default=[0.0, 0.0], metavar=("LO", "HI"))
    p.add_argument("--hang", action="append", default=[], metavar="TASK")
    p.add_argument("--fail", action="append", default=[], metavar="TASK")
    p.add_argument("--submit", choices=["chain", "chain5", "fan"], help="submit executions of this shape")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--run-prefix", default="r", help="run marker i of submission i is <run-prefix><i>")
    p.add_argument("--key", default=None, help="idempotency key i is <key><i>")
    p.add_argument("--go", default=None, help="wait for this file before submitting")
    p.add_argument("--ids-out", default=None, help="JSON list of the submitted execution ids")
    p.add_argument("--exit-after-submit", action="store_true")
    args = p.parse_args(argv)
    if args.submit and not args.ids_out:
        p.error("--submit needs --ids-out")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))

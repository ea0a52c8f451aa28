"""A Cloacina process for the durable-wait tests (also imported by them for ``define``).

Run as a program it registers the tasks of :func:`define` under ``--prefix`` and initializes an
executor on ``--url``, writes ``--ready`` and then either works until SIGTERM or SIGINT (see
``durable_worker.serve``) or, with ``--send`` or ``--follow-gates``, sends events from a
submit-only executor (``worker=False``) and exits 0:

- ``--send KEY`` (repeatable): sends each key once, in order, with ``--payload`` (JSON).
- ``--follow-gates N``: reads ``--out`` as it grows and, each time a ``gate`` task has written its
  ``finished`` line, sends the event its execution's wait is about to wait for (payload
  ``{"n": n}``), after a random 0 to ``SEND_DELAY`` s (seeded by ``--seed``). The gate itself
  lingers a random 0 to ``GATE_LINGER`` s after that line, so the send lands about when the wait
  starts, on either side of it (on both backends). Stops after N sends.

Either way it writes ``--sent-out`` (JSON: one ``{"key", "count", "at"}`` per send, ``count``
being what ``send_event`` returned and ``at`` the unix time it returned).

Tasks append ``<run> <task_id> <pid> <kind> <unix time>`` lines to ``--out`` (see
``durable_worker.record``); ``<run>`` is the ``run`` key of the execution's input context.
Workflows (``<prefix>.workflow.<name>``), task ids ``<prefix>.<name>``:

- ``nap``:      first -> nap (sleeps ``STORED_WAIT`` s) -> after_nap
- ``deadline``: first -> deadline (waits ``STORED_WAIT`` s for the event ``<prefix>.never``, then
  completes with None) -> after_deadline
- ``snooze``:   dozer (its first attempt snoozes ``STORED_WAIT`` s)
- ``retry``:    flaky (``retries=1, retry_delay=STORED_WAIT``; its first attempt fails)
- ``wake``:     wake (sleeps until the context's ``at``) -> woke
- ``event``:    gate (lingers 0 to ``GATE_LINGER`` s) -> wait (event ``<prefix>.ev:{n}``,
  ``EVENT_TIMEOUT`` s, then fails) -> got (``got`` outputs ``{"got": <payload>}``)

The first four each wait ``STORED_WAIT`` s once, in the four ways a wait is stored.

Every process of a test must define the same tasks (a worker finds a task by its id), so the
durations are constants here, not options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any, Dict, List, Sequence

from backend import cl
from durable_worker import init_options, record, serve, worker_parser, write_json

STORED_WAIT = 3.0     # seconds the nap, deadline, snooze and retry workflows wait
EVENT_TIMEOUT = 30.0  # seconds the event workflow's wait waits before it fails
GATE_LINGER = 0.015   # most seconds the event workflow's gate waits after its finished line
SEND_DELAY = 0.03     # most seconds --follow-gates waits after a gate's finished line before it sends

Context = Dict[str, Any]


def event_key(prefix: str, n: Any) -> str:
    """The key the event workflow's wait waits for in the execution whose ``n`` is ``n``."""
    return f"{prefix}.ev:{n}"


def define(prefix: str, out: str) -> Dict[str, Any]:
    """Registers the tasks under ``prefix``; returns the workflows by name."""
    out = str(out)

    def tid(name: str) -> str:
        return f"{prefix}.{name}"

    def run_of(ctx: Context) -> str:
        return str(ctx.get("run", "-"))

    @cl.task(tid("first"))
    def first(ctx: Context) -> Context:
        record(out, run_of(ctx), tid("first"), "started")
        return {"first": True}

    nap = cl.sleep(tid("nap"), STORED_WAIT, dependencies=[first])

    @cl.task(tid("after_nap"), dependencies=[nap])
    def after_nap(ctx: Context) -> Context:
        record(out, run_of(ctx), tid("after_nap"), "started")
        return {"after_nap": True}

    deadline = cl.wait_for_event(tid("deadline"), key=tid("never"), timeout=STORED_WAIT, on_timeout="continue",
                                 dependencies=[first])

    @cl.task(tid("after_deadline"), dependencies=[deadline])
    def after_deadline(ctx: Context) -> Context:
        record(out, run_of(ctx), tid("after_deadline"), "started")
        return {"after_deadline": ctx[tid("deadline")]}

    @cl.task(tid("dozer"))
    def dozer(ctx: Context) -> Context:
        record(out, run_of(ctx), tid("dozer"), "started")
        if cl.current_task()["snoozes"] == 0:
            raise cl.Snooze(STORED_WAIT)
        return {"dozer": cl.current_task()["snoozes"]}

    wake = cl.sleep(tid("wake"), until="{at}")

    @cl.task(tid("woke"), dependencies=[wake])
    def woke(ctx: Context) -> Context:
        record(out, run_of(ctx), tid("woke"), "started")
        return {"woke": True}

    @cl.task(tid("gate"))
    async def gate(ctx: Context) -> Context:
        record(out, run_of(ctx), tid("gate"), "finished")
        await asyncio.sleep(random.Random(run_of(ctx)).uniform(0, GATE_LINGER))
        return {"gate": True}

    wait = cl.wait_for_event(tid("wait"), key=event_key(prefix, "{n}"), timeout=EVENT_TIMEOUT, dependencies=[gate])

    @cl.task(tid("got"), dependencies=[wait])
    def got(ctx: Context) -> Context:
        record(out, run_of(ctx), tid("got"), "started")
        return {"got": ctx[tid("wait")]}

    @cl.task(tid("flaky"), retries=1, retry_delay=STORED_WAIT)
    def flaky(ctx: Context) -> Context:
        record(out, run_of(ctx), tid("flaky"), "started")
        attempt = cl.current_task()["attempt"]
        if attempt == 1:
            record(out, run_of(ctx), tid("flaky"), "failed")
            raise ConnectionError("the first attempt fails")
        record(out, run_of(ctx), tid("flaky"), "finished")
        return {"flaky": attempt}

    return {
        "nap": cl.Workflow(f"{prefix}.workflow.nap", [after_nap]),
        "deadline": cl.Workflow(f"{prefix}.workflow.deadline", [after_deadline]),
        "snooze": cl.Workflow(f"{prefix}.workflow.snooze", [dozer]),
        "wake": cl.Workflow(f"{prefix}.workflow.wake", [woke]),
        "event": cl.Workflow(f"{prefix}.workflow.event", [got]),
        "retry": cl.Workflow(f"{prefix}.workflow.retry", [flaky]),
    }


async def send_keys(executor: Any, keys: Sequence[str], payload: Any) -> List[Dict[str, Any]]:
    sent = []
    for key in keys:
        count = await executor.send_event(key, payload)
        sent.append({"key": key, "count": count, "at": time.time()})
    return sent


async def follow_gates(executor: Any, prefix: str, out: str, count: int, seed: int) -> List[Dict[str, Any]]:
    """Sends ``event_key(prefix, n)`` as soon as the gate of the execution with run ``r<n>`` finished."""
    rng = random.Random(seed)
    gate = f"{prefix}.gate"
    sent: List[Dict[str, Any]] = []
    pending: List["asyncio.Task[None]"] = []
    seen = 0
    offset = 0
    deadline = time.monotonic() + 120

    async def send(n: str, delay: float) -> None:
        await asyncio.sleep(delay)
        key = event_key(prefix, n)
        result = await executor.send_event(key, {"n": int(n)})
        sent.append({"key": key, "count": result, "at": time.time()})

    while seen < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {seen} of {count} gates finished within 120 s")
        try:
            with open(out, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        complete = chunk[:chunk.rfind(b"\n") + 1]
        offset += len(complete)
        for line in complete.decode().splitlines():
            run, task_id, _pid, kind, _ts = line.split(" ")
            if task_id == gate and kind == "finished":
                seen += 1
                pending.append(asyncio.ensure_future(send(run[1:], rng.uniform(0, SEND_DELAY))))
        await asyncio.sleep(0.001)
    await asyncio.gather(*pending)
    return sent


async def main(args: argparse.Namespace) -> int:
    define(args.prefix, args.out)
    sending = bool(args.send or args.follow_gates)
    executor = cl.UnifiedExecutor(max_concurrency=args.max_concurrency)
    init: Dict[str, Any] = {"worker": not sending, **init_options(args)}

    async def send() -> bool:
        if not sending:
            return True
        if args.send:
            sent = await send_keys(executor, args.send, json.loads(args.payload))
        else:
            sent = await follow_gates(executor, args.prefix, args.out, args.follow_gates, args.seed)
        write_json(args.sent_out, sent)
        print(f"sent {[(s['key'], s['count']) for s in sent]}", flush=True)
        return False

    return await serve(executor, args.url, init, args.ready, send)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = worker_parser(__doc__)
    p.add_argument("--send", action="append", default=[], metavar="KEY", help="send this event, then exit")
    p.add_argument("--payload", default="null", help="the JSON payload of --send")
    p.add_argument("--follow-gates", type=int, default=0, metavar="N",
                   help="send each finished gate's event, N in all, then exit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sent-out", default=None, help="JSON list of what was sent")
    args = p.parse_args(argv)
    if (args.send or args.follow_gates) and not args.sent_out:
        p.error("--send and --follow-gates need --sent-out")
    if args.send and args.follow_gates:
        p.error("--send and --follow-gates exclude each other")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))

"""A child process for the fault-injection tests (test_faults.py): it owns an executor while a real
fault happens to its database, or reads an execution back afterwards, in a fresh process.

    fault_child.py URL PREFIX run WORKFLOW CONTROL   submit WORKFLOW, print its id, wait for it;
                                                     print "raised <Type>: <message>" if wait raises,
                                                     then "shutdown done" once shutdown(cancel=True)
                                                     returned; exit 0
    fault_child.py URL PREFIX stay WORKFLOW CONTROL  the same, but once wait raised it stays, its
                                                     executor still open, until killed
    fault_child.py URL PREFIX loop WORKFLOW CONTROL  submit WORKFLOW, print its id once its task
                                                     ``hold_async`` runs, and return from asyncio.run
                                                     without shutting down (the loop closes under
                                                     it); then print "stored <status>" once the
                                                     execution has ended in the database
    fault_child.py URL PREFIX read ID CONTROL        work until execution ID ends; print its record
                                                     as one JSON line; exit 0

Tasks (ids ``<PREFIX>.<name>``, the same in every process): workflow ``chain`` is ``start`` ->
``hold`` -> ``fat`` -> ``after``, where ``hold`` waits until the file ``CONTROL/release`` exists
and ``fat`` returns 600 kB of text; workflow ``loop`` is ``start`` -> ``hold_async`` (an async task
that sleeps for minutes) -> ``after_async``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict

from backend import cl

RELEASE_DEADLINE = 120.0  # a held task gives up after this long, so no child outlives its test


def define(prefix: str, control: str) -> Dict[str, Any]:
    release = Path(control) / "release"

    @cl.task(f"{prefix}.start")
    def start(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"start": 1}

    @cl.task(f"{prefix}.hold", dependencies=[start])
    def hold(ctx: Dict[str, Any]) -> Dict[str, Any]:
        deadline = time.monotonic() + RELEASE_DEADLINE
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"held": True}

    @cl.task(f"{prefix}.fat", dependencies=[hold])
    def fat(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"fat": "z" * 600_000}

    @cl.task(f"{prefix}.after", dependencies=[fat])
    def after(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"after": len(ctx["fat"])}

    @cl.task(f"{prefix}.hold_async", dependencies=[start])
    async def hold_async(ctx: Dict[str, Any]) -> Dict[str, Any]:
        await asyncio.sleep(RELEASE_DEADLINE)
        return {"held": True}

    @cl.task(f"{prefix}.after_async", dependencies=[hold_async])
    def after_async(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"after": True}

    return {
        "chain": cl.Workflow(f"{prefix}.chain", [after]),
        "loop": cl.Workflow(f"{prefix}.loop", [after_async]),
    }


async def run(url: str, workflow: Any, *, stay: bool) -> None:
    executor = cl.UnifiedExecutor()
    await executor.initialize(url, lease_timeout=2.0)
    execution_id = await executor.submit(workflow)
    print(execution_id, flush=True)
    try:
        result = await executor.wait(execution_id)
        print("ended", result["status"], flush=True)
    except cl.CloacinaError as error:
        print(f"raised {type(error).__name__}: {error}", flush=True)
    if stay:
        await asyncio.sleep(RELEASE_DEADLINE)  # the test kills this process meanwhile
    await executor.shutdown(cancel=True)
    print("shutdown done", flush=True)


async def loop_closes(url: str, prefix: str, workflow: Any) -> None:
    executor = cl.UnifiedExecutor()
    await executor.initialize(url)
    execution_id = await executor.submit(workflow)
    while True:
        record = await executor.get_execution(execution_id)
        if any(t["task_id"] == f"{prefix}.hold_async" and t["status"] == "Running" for t in record["task_results"]):
            break
        await asyncio.sleep(0.02)
    print(execution_id, flush=True)


async def until_stored(url: str, prefix: str) -> None:
    reader = cl.UnifiedExecutor()
    await reader.initialize(url, worker=False)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record = (await reader.list_executions(workflow=f"{prefix}.loop"))[0]
            if record["status"] not in ("Pending", "Running"):
                print("stored", record["status"], flush=True)
                return
            await asyncio.sleep(0.02)
    finally:
        await reader.shutdown()


async def read(url: str, execution_id: str) -> None:
    executor = cl.UnifiedExecutor()
    await executor.initialize(url, lease_timeout=2.0)
    try:
        record = await executor.wait(execution_id, timeout=60)
        print(json.dumps(record), flush=True)
    finally:
        await executor.shutdown()


def main(argv: list) -> None:
    url, prefix, mode = argv[:3]
    workflows = define(prefix, argv[4])
    if mode == "read":
        asyncio.run(read(url, argv[3]))
        return
    if mode in ("run", "stay"):
        asyncio.run(run(url, workflows[argv[3]], stay=mode == "stay"))
    elif mode == "loop":
        asyncio.run(loop_closes(url, prefix, workflows[argv[3]]))
        # The process lives on after that loop closed (as a script running asyncio.run twice
        # does); the engine stores the task's end meanwhile.
        asyncio.run(until_stored(url, prefix))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

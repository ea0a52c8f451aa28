"""Cloacina trigger rules and skipping: which tasks run once something upstream fails or skips.

Run 1, a failure:

    extract ── transform (raises) ──┬── load     (all_success: Skipped)
       │                            ├── alert    (one_failed: runs)
       └────────────────────────────┴── cleanup  (all_done, after extract, transform and load: runs)

Run 2, a skip from inside a task:

    check_inbox (raises SkipTask) ──┬── ingest   (all_success: Skipped)
                                    └── report   (none_failed: runs)

A run with a Failed task ends Failed even though cleanup ran; a run whose tasks all Completed or
were Skipped ends Completed.

    python examples/trigger_rules.py                  # uses sqlite:///trigger_rules.db
    python examples/trigger_rules.py postgresql://... # any database URL

Exits 0 when every task ends as drawn above, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Mapping

import cloacina

# ---- run 1: a failing task, a skipped dependent, an alert and a cleanup ---------------------


@cloacina.task(task_id="trigger_rules.extract")
def extract(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"scratch": "/tmp/extract-42"}


@cloacina.task(task_id="trigger_rules.transform", dependencies=[extract])
def transform(ctx: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("bad row 3")


@cloacina.task(task_id="trigger_rules.load", dependencies=[transform])
def load(ctx: dict[str, Any]) -> dict[str, Any]:
    """Default rule all_success: never runs after a failed transform."""
    return {"loaded": True}


@cloacina.task(task_id="trigger_rules.alert", dependencies=[transform], trigger_rule="one_failed")
def alert(ctx: dict[str, Any]) -> dict[str, Any]:
    """Runs only when transform failed (Skipped when it succeeds)."""
    return {"alerted": "on-call paged"}


@cloacina.task(task_id="trigger_rules.cleanup", dependencies=[extract, transform, load],
               trigger_rule="all_done")
def cleanup(ctx: dict[str, Any]) -> dict[str, Any]:
    """Runs once all upstream tasks ended, whatever their status; sees what extract made."""
    return {"removed": ctx["scratch"]}


# ---- run 2: a task skips itself --------------------------------------------------------------


@cloacina.task(task_id="trigger_rules.check_inbox")
def check_inbox(ctx: dict[str, Any]) -> dict[str, Any]:
    if not ctx["files"]:
        raise cloacina.SkipTask("no new files")  # Skipped, not Failed, and never retried
    return {"count": len(ctx["files"])}


@cloacina.task(task_id="trigger_rules.ingest", dependencies=[check_inbox])
def ingest(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"ingested": ctx["count"]}


@cloacina.task(task_id="trigger_rules.report", dependencies=[check_inbox], trigger_rule="none_failed")
def report(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"report": f"{ctx.get('count', 0)} file(s) ingested"}


def print_run(title: str, result: Mapping[str, Any]) -> dict[str, str]:
    print(f"{title}: {result['status']}" + (f" ({result['error']})" if result["error"] else ""))
    for r in result["task_results"]:
        detail = r["error"] or r["reason"] or ""
        print(f"  {r['task_id']:<26} {r['status']:<10} {detail}".rstrip())
    return {r["task_id"]: r["status"] for r in result["task_results"]}


async def main(url: str) -> int:
    executor = cloacina.UnifiedExecutor()
    await executor.initialize(url)
    try:
        # timeout= only bounds the example's run time.
        failing = await executor.execute(cloacina.Workflow("trigger_rules_failure", [cleanup, alert]),
                                         timeout=20)
        skipping = await executor.execute(cloacina.Workflow("trigger_rules_skip", [ingest, report]),
                                          {"files": []}, timeout=20)
    finally:
        await executor.shutdown()

    first = print_run("run 1", failing)
    print(f"  final context: {failing['final_context']}")
    second = print_run("run 2", skipping)

    ok = (failing["status"] == "Failed" and skipping["status"] == "Completed"
          and first == {"trigger_rules.extract": "Completed", "trigger_rules.transform": "Failed",
                        "trigger_rules.load": "Skipped", "trigger_rules.alert": "Completed",
                        "trigger_rules.cleanup": "Completed"}
          and second == {"trigger_rules.check_inbox": "Skipped", "trigger_rules.ingest": "Skipped",
                         "trigger_rules.report": "Completed"})
    return 0 if ok else 1


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///trigger_rules.db"
    sys.exit(asyncio.run(main(target)))

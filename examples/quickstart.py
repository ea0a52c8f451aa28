"""Cloacina quickstart: a small ETL-style workflow with two parallel branches.

    extract ──┬── clean_orders (sync)  ───┬── report
              └── fetch_rates (async) ────┘

Run it with a backend installed (`pip install cloacina cloacina-sqlite`):

    python examples/quickstart.py                  # uses sqlite:///quickstart.db
    python examples/quickstart.py /tmp/runs.db     # any SQLite URL or file path

Exits 0 when the execution completed, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from typing import Any, Mapping

import cloacina


@cloacina.task()
def extract(ctx: dict[str, Any]) -> dict[str, Any]:
    """Pretend to read raw orders from somewhere."""
    return {
        "orders": [
            {"id": 1, "amount": 120.0, "currency": "EUR"},
            {"id": 2, "amount": -5.0, "currency": "USD"},
            {"id": 3, "amount": 80.5, "currency": "USD"},
        ]
    }


@cloacina.task(dependencies=[extract])
def clean_orders(ctx: dict[str, Any]) -> dict[str, Any]:
    """Sync task: runs on a worker thread."""
    valid = [o for o in ctx["orders"] if o["amount"] > 0]
    return {"valid_orders": valid, "rejected": len(ctx["orders"]) - len(valid)}


@cloacina.task(dependencies=[extract])
async def fetch_rates(ctx: dict[str, Any]) -> dict[str, Any]:
    """Async task: runs on the caller's event loop, in parallel with clean_orders."""
    await asyncio.sleep(0.1)  # stands in for an HTTP call
    currencies = sorted({o["currency"] for o in ctx["orders"]})
    rates = {"EUR": 1.0, "USD": 0.92}
    return {"rates_to_eur": {c: rates[c] for c in currencies}}


@cloacina.task(dependencies=[clean_orders, fetch_rates])
def report(ctx: dict[str, Any]) -> dict[str, Any]:
    total = sum(o["amount"] * ctx["rates_to_eur"][o["currency"]] for o in ctx["valid_orders"])
    return {"total_eur": round(total, 2), "order_count": len(ctx["valid_orders"])}


# Module level, so the command line can run it too: `python -m cloacina run quickstart:workflow`.
workflow = cloacina.Workflow("quickstart", [report])


def _duration(task_result: Mapping[str, Any]) -> str:
    if not task_result["started_at"] or not task_result["completed_at"]:
        return "-"
    started = datetime.fromisoformat(task_result["started_at"].replace("Z", "+00:00"))
    completed = datetime.fromisoformat(task_result["completed_at"].replace("Z", "+00:00"))
    return f"{(completed - started).total_seconds() * 1000:.0f} ms"


def print_summary(result: Mapping[str, Any]) -> None:
    print(f"workflow  {result['workflow_name']} (version {result['workflow_version']})")
    print(f"execution {result['execution_id']}")
    print(f"status    {result['status']}" + (f"  error: {result['error']}" if result["error"] else ""))
    print("tasks:")
    for tr in result["task_results"]:
        line = f"  {tr['task_id']:<14} {tr['status']:<10} {_duration(tr):>8}"
        if tr["error"]:
            line += f"  {tr['error']}"
        print(line)
    print("final context:")
    print(json.dumps(result["final_context"], indent=2, sort_keys=True))


async def main(database: str) -> int:
    executor = cloacina.UnifiedExecutor(max_concurrency=4)
    await executor.initialize(database)
    try:
        result = await executor.execute(workflow, {"requested_by": "quickstart"})
    finally:
        await executor.shutdown()
    print(f"backend   {cloacina.backend} {cloacina.backend_version}")
    print_summary(result)
    return 0 if result["status"] == "Completed" else 1


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///quickstart.db"
    sys.exit(asyncio.run(main(target)))

"""Cloacina nightly ETL: a fan-out, a retried task and a skipped branch in one workflow.

    extract_orders ──┬── transform_eu ───┬── load_warehouse ── publish_report
    fetch_rates* ────┼── transform_us ───┤    (none_failed)
                     └── transform_apac ─┤
    check_refunds ────── apply_refunds ──┘
      (skips itself)     (Skipped with it)

`fetch_rates` fails on its first attempt (the rates API "times out") and is retried 0.3 s later;
the three `transform_<region>` tasks are `async def` and run at the same time once the orders and
the rates are in; `check_refunds` finds no refunds and raises `SkipTask`, so `apply_refunds` is
Skipped too; `load_warehouse` uses the `none_failed` trigger rule, so it runs anyway. The
execution ends Completed. The tasks sleep a little so the dashboard's timeline has bars to show:
the picture in docs/dashboard.md is this workflow (`angreal task screenshots` re-makes it).

    python examples/nightly_etl.py                  # uses sqlite:///nightly_etl.db
    python examples/nightly_etl.py postgresql://... # any database URL

Exits 0 when every task ends as drawn above, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Awaitable, Callable, Mapping

import cloacina

REGIONS = ("eu", "us", "apac")
ORDERS = [
    {"id": 101, "region": "eu", "amount": 120.0, "currency": "EUR"},
    {"id": 102, "region": "us", "amount": 80.5, "currency": "USD"},
    {"id": 103, "region": "apac", "amount": 9800.0, "currency": "JPY"},
    {"id": 104, "region": "eu", "amount": 42.0, "currency": "GBP"},
    {"id": 105, "region": "us", "amount": 310.0, "currency": "USD"},
    {"id": 106, "region": "apac", "amount": 55.0, "currency": "SGD"},
]


@cloacina.task()
def extract_orders(ctx: dict[str, Any]) -> dict[str, Any]:
    """Sync task (a worker thread): stands in for a query against the shop's database."""
    time.sleep(0.3)
    return {"orders": ORDERS}


@cloacina.task(retries=2, retry_delay=0.3, retry_on=(ConnectionError,))
async def fetch_rates(ctx: dict[str, Any]) -> dict[str, Any]:
    """Async task whose first attempt fails; the engine records it and tries again."""
    await asyncio.sleep(0.15)
    if cloacina.current_task()["attempt"] == 1:
        raise ConnectionError("rates API timed out")
    return {"rates_to_eur": {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "JPY": 0.0062, "SGD": 0.69}}


@cloacina.task()
def check_refunds(ctx: dict[str, Any]) -> dict[str, Any]:
    refunds: list[dict[str, Any]] = ctx.get("refunds", [])
    if not refunds:
        raise cloacina.SkipTask("no refunds to apply tonight")
    return {"refunds": refunds}


@cloacina.task(dependencies=[check_refunds])
def apply_refunds(ctx: dict[str, Any]) -> dict[str, Any]:
    """Default rule all_success: Skipped when check_refunds is."""
    return {"refunded": sum(r["amount"] for r in ctx["refunds"])}


def make_transform(region: str, seconds: float) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """One fan-out branch per region, each with its own task id and output key."""

    async def transform(ctx: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(seconds)  # stands in for a call to the region's service
        rates = ctx["rates_to_eur"]
        mine = [o for o in ctx["orders"] if o["region"] == region]
        revenue = sum(o["amount"] * rates[o["currency"]] for o in mine)
        return {f"revenue_{region}": round(revenue, 2)}

    return transform


transforms = [cloacina.task(task_id=f"transform_{region}", dependencies=[extract_orders, fetch_rates])(
                  make_transform(region, seconds))
              for region, seconds in zip(REGIONS, (0.5, 0.7, 0.4))]


@cloacina.task(dependencies=[*transforms, apply_refunds], trigger_rule="none_failed")
def load_warehouse(ctx: dict[str, Any]) -> dict[str, Any]:
    """Runs if nothing upstream Failed: the skipped refunds branch does not hold it back."""
    time.sleep(0.3)
    total = sum(ctx[f"revenue_{region}"] for region in REGIONS) - ctx.get("refunded", 0.0)
    return {"revenue_eur": round(total, 2), "rows_loaded": len(ctx["orders"])}


@cloacina.task(dependencies=[load_warehouse])
async def publish_report(ctx: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.2)
    return {"report": f"{ctx['rows_loaded']} orders, {ctx['revenue_eur']:.2f} EUR"}


# Module level, so the command line can run it too: `cloacina run nightly_etl:workflow`.
workflow = cloacina.Workflow("nightly_etl", [publish_report])

EXPECTED = {
    "extract_orders": ("Completed", 1), "fetch_rates": ("Completed", 2), "check_refunds": ("Skipped", 1),
    "apply_refunds": ("Skipped", 0), "transform_eu": ("Completed", 1), "transform_us": ("Completed", 1),
    "transform_apac": ("Completed", 1), "load_warehouse": ("Completed", 1), "publish_report": ("Completed", 1),
}


def print_result(result: Mapping[str, Any]) -> None:
    print(f"execution {result['execution_id']} of {result['workflow_name']}")
    print(f"status    {result['status']}" + (f"  error: {result['error']}" if result["error"] else ""))
    for r in result["task_results"]:
        attempts = ", ".join(f"{h['attempt']}:{h['status']}" for h in r["history"]) or "never started"
        retried = [f"attempt {h['attempt']}: {h['error']}" for h in r["history"] if h["error"]]
        detail = r["error"] or r["reason"] or "; ".join(retried)
        print(f"  {r['task_id']:<15} {r['status']:<10} attempts {attempts:<22} {detail}".rstrip())
    print(f"report    {result['final_context'].get('report')}")


async def main(database: str) -> int:
    executor = cloacina.UnifiedExecutor(max_concurrency=4)
    await executor.initialize(database)
    try:
        # timeout= only bounds the example's run time.
        result = await executor.execute(workflow, {"refunds": []}, timeout=20)
    finally:
        await executor.shutdown()
    print_result(result)
    ended = {r["task_id"]: (r["status"], r["attempts"]) for r in result["task_results"]}
    return 0 if result["status"] == "Completed" and ended == EXPECTED else 1


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///nightly_etl.db"
    sys.exit(asyncio.run(main(target)))

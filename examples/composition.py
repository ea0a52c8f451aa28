"""Cloacina composition: a workflow reused as a step of another, once per item, and hooks.

    enrich (a workflow of its own):  price ── label

    batch:  list_orders ── enrich_each (the enrich workflow, once per order) ── summarize
            on_success=publish, on_failure=alert

`subworkflow(enrich, map_over="orders")` runs `enrich` as one child execution per order; each
child's final context comes back in the orders' order. The batch's hooks run once its outcome is
decided: `publish` after it Completed, `alert` after it Failed (or was cancelled), seeing the
final context and `ctx["execution"]` (its id, status, error and failed tasks). The script runs
the batch twice: with good orders (publish runs, alert is skipped), then with an order whose
quantity is negative (its child fails, so the step and the batch fail, and alert runs). Each
child execution names its parent and the step's instance (`enrich_each[1]`).

    python examples/composition.py                  # uses sqlite:///composition.db
    python examples/composition.py postgresql://... # any database URL

Exits 0 when the first batch completed and published and the second failed and alerted, 1
otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import cloacina


@cloacina.task(task_id="composition.price")
def price(ctx: dict[str, Any]) -> dict[str, Any]:
    order = ctx["order"]
    if order["quantity"] < 0:
        raise ValueError(f"order {order['id']} has a negative quantity")
    return {"price": round(order["quantity"] * order["unit_price"] * 1.2, 2)}


@cloacina.task(task_id="composition.label", dependencies=[price])
def label(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"label": f"{ctx['order']['id']}: {ctx['price']:.2f}"}


enrich = cloacina.Workflow("composition.enrich", [label])


@cloacina.task(task_id="composition.list_orders")
def list_orders(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"orders": [{"id": f"A-{100 + i}", "quantity": q, "unit_price": 4.5 + i}
                       for i, q in enumerate(ctx["quantities"])]}


enrich_each = cloacina.subworkflow(enrich, task_id="composition.enrich_each", dependencies=[list_orders],
                                   map_over="orders", map_item="order")


@cloacina.task(task_id="composition.summarize", dependencies=[enrich_each])
def summarize(ctx: dict[str, Any]) -> dict[str, Any]:
    children = ctx["composition.enrich_each"]
    return {"labels": [child["label"] for child in children],
            "total": round(sum(child["price"] for child in children), 2)}


@cloacina.task(task_id="composition.publish")
def publish(ctx: dict[str, Any]) -> dict[str, Any]:
    """Stands in for publishing the batch's report."""
    return {"published": f"{len(ctx['labels'])} orders, total {ctx['total']}"}


@cloacina.task(task_id="composition.alert", retries=2, retry_delay=0.1)
def alert(ctx: dict[str, Any]) -> dict[str, Any]:
    """Stands in for paging someone: what failed, and why."""
    run = ctx["execution"]
    return {"alerted": f"{run['workflow_name']} {run['status']}: {', '.join(run['failed_tasks'])}"}


batch = cloacina.Workflow("composition.batch", [summarize], on_success=publish, on_failure=alert)


def statuses(result: cloacina.ExecutionResult) -> dict[str, str]:
    return {t["task_id"]: t["status"] for t in result["task_results"]}


async def main(url: str) -> int:
    executor = cloacina.UnifiedExecutor()
    await executor.initialize(url)
    try:
        # timeout= bounds each run, so the example can never hang.
        good = await executor.execute(batch, {"quantities": [2, 1, 3]}, timeout=20)
        bad = await executor.execute(batch, {"quantities": [2, -1, 3]}, timeout=20)
        children = [e for e in await executor.list_executions(workflow=enrich.name, limit=100)
                    if e["parent_execution_id"] == bad["execution_id"]]
    finally:
        await executor.shutdown()

    good_context, bad_context = good["final_context"] or {}, bad["final_context"] or {}
    print(f"task ids  {', '.join(batch.task_ids)}")
    print(f"status    {good['status']}  {good_context['published']}")
    print(f"labels    {good_context['labels']}")
    print(f"hooks     publish {statuses(good)['composition.publish']}, alert {statuses(good)['composition.alert']}")
    print(f"status    {bad['status']}  {bad_context['alerted']}")
    print(f"error     {bad['error']}")
    print(f"hooks     publish {statuses(bad)['composition.publish']}, alert {statuses(bad)['composition.alert']}")
    for child in sorted(children, key=lambda e: str(e["parent_task_id"])):
        print(f"  child {child['parent_task_id']}  {child['status']}")

    ok = (good["status"] == "Completed" and statuses(good)["composition.publish"] == "Completed"
          and statuses(good)["composition.alert"] == "Skipped"
          and bad["status"] == "Failed" and statuses(bad)["composition.alert"] == "Completed"
          and statuses(bad)["composition.publish"] == "Skipped" and len(children) == 3)
    return 0 if ok else 1


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///composition.db"
    sys.exit(asyncio.run(main(target)))

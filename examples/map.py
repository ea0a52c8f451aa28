"""Cloacina map: one task run once per item of a list that is only known at run time, then a join.

    list_orders ── price_order[0], price_order[1], ... price_order[n-1] ── total

`list_orders` returns the day's orders; how many there are is only known when it has run.
`price_order` has `map_over="orders"`, so the engine runs it once per order: each run (an
"instance") sees its order as `ctx["order"]` and its position as `current_task()["map_index"]`.
At most `map_limit=4` instances run at once, and an instance that fails is retried alone
(`retries=2`): here the one for order 7 fails its first attempt. `total` sees `ctx["prices"]`,
the instances' return values in the orders' order (`collect_as="prices"`); an instance may
return any JSON value, here a dict.

    python examples/map.py                  # uses sqlite:///map.db
    python examples/map.py postgresql://... # any database URL

Exits 0 when the execution completed with a price for every order, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import cloacina

ORDERS = 20
FLAKY_ORDER = 7
running = 0       # instances running now in this process, and the most ever seen at once
most_at_once = 0


@cloacina.task(task_id="map.list_orders")
def list_orders(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"orders": [{"id": f"A-{100 + i}", "quantity": 1 + i % 3, "unit_price": 4.5 + i}
                       for i in range(ctx["orders_today"])]}


@cloacina.task(task_id="map.price_order", dependencies=[list_orders], map_over="orders", map_item="order",
               map_limit=4, collect_as="prices", retries=2, retry_delay=0.1)
async def price_order(ctx: dict[str, Any]) -> dict[str, Any]:
    global running, most_at_once
    me = cloacina.current_task()
    if me["map_index"] == FLAKY_ORDER and me["attempt"] == 1:
        raise ConnectionError("tax service busy")
    running += 1
    most_at_once = max(most_at_once, running)
    try:
        await asyncio.sleep(0.05)  # stands in for a call to a pricing service
        order = ctx["order"]
        return {"id": order["id"], "price": round(order["quantity"] * order["unit_price"] * 1.2, 2)}
    finally:
        running -= 1


@cloacina.task(task_id="map.total", dependencies=[price_order])
def total(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"total": round(sum(priced["price"] for priced in ctx["prices"]), 2)}


workflow = cloacina.Workflow("map", [total])


async def main(url: str) -> int:
    executor = cloacina.UnifiedExecutor(max_concurrency=8)
    await executor.initialize(url)
    try:
        started = time.monotonic()
        # timeout= only bounds the example's run time.
        result = await executor.execute(workflow, {"orders_today": ORDERS}, timeout=20)
        seconds = time.monotonic() - started
        node = next(t for t in result["task_results"] if t["task_id"] == "map.price_order")
        # One page of the instances, in map_index order: never all of them at once.
        page = await executor.list_task_instances(result["execution_id"], "map.price_order",
                                                  offset=FLAKY_ORDER - 1, limit=3)
    finally:
        await executor.shutdown()

    final = result["final_context"] or {}
    counts = node["map"]
    print(f"status    {result['status']}  total={final.get('total')}  ({seconds:.2f} s)")
    if counts is not None:
        print(f"map.price_order  {node['status']}  {counts['completed']}/{counts['count']} instances completed")
    for instance in page:
        print(f"  instance {instance['map_index']}  {instance['status']}  attempts {instance['attempts']}")
    prices = final.get("prices") or []
    print(f"prices    {len(prices)}, the first {prices[0] if prices else None}")
    print(f"most instances running at once: {most_at_once} (map_limit=4)")
    complete = result["status"] == "Completed" and len(prices) == ORDERS and None not in prices
    return 0 if complete and most_at_once <= 4 else 1


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///map.db"
    sys.exit(asyncio.run(main(target)))

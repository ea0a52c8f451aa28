"""Benchmark scenarios S1-S4, defined once for every backend and task kind.

S1  chain ``t0 -> t1 -> ... -> t{n-1}``; each task sets ``v = v + 1`` (t0 sets 0); check ``v == n - 1``.
S2  ``root`` sets ``seed=1``; ``f0..f{n-1}`` depend on root and set ``f{i} = i * seed``; ``join``
    depends on all and sets ``total``; check ``total == sum(range(n))``.
S2L S2 with every parallel task holding the limit key ``bench`` (``concurrency=8``): the cost of a
    limit on the claim path.
S3  ``p0`` sets a 20,000-row payload (1.1 MB of JSON; ``rows`` scales it); ``p1..p9`` check the
    rows, add ``k{i}`` and write it back.
M   ``root`` returns ``n`` items; ``m`` is mapped over them (``map_over``), its instances return
    their item; ``join`` sums the collected list; check the sum and the node's counts.
S4  a fresh process imports, initializes, runs a 1-task workflow and exits (see ``s4_child.py``).
"""

from __future__ import annotations

import itertools
import sys
import time
from types import ModuleType
from typing import Any, Callable, Dict, List, Sequence, Tuple

Context = Dict[str, Any]
_serial = itertools.count()


def _register(cl: ModuleType, name: str, body: Callable[[Context], Any], is_async: bool, deps: List[str],
              **options: Any) -> str:
    if is_async:

        async def run(ctx: Context) -> Any:
            return body(ctx)

    else:

        def run(ctx: Context) -> Any:
            return body(ctx)

    cl.task(name, dependencies=deps, **options)(run)
    return name


def chain(cl: ModuleType, n: int, is_async: bool) -> Tuple[Any, Callable[[Dict[str, Any]], None]]:
    """S1: a chain of ``n`` tasks incrementing ``v``."""
    prefix = f"s1_{next(_serial)}_"
    ids: List[str] = []
    for i in range(n):
        if i == 0:
            body: Callable[[Context], Any] = lambda ctx: {"v": 0}
        else:
            body = lambda ctx: {"v": ctx["v"] + 1}
        ids.append(_register(cl, f"{prefix}t{i}", body, is_async, ids[-1:]))
    workflow = cl.Workflow(f"{prefix}chain", ids)

    def check(result: Dict[str, Any]) -> None:
        assert result["status"] == "Completed", result["error"]
        assert result["final_context"]["v"] == n - 1, result["final_context"]["v"]

    return workflow, check


def fan(cl: ModuleType, n: int, is_async: bool, limits: Sequence[str] = ()) -> Tuple[Any, Callable[[Dict[str, Any]], None]]:
    """S2: ``root`` -> ``n`` parallel tasks (holding ``limits``) -> ``join``."""
    prefix = f"s2_{next(_serial)}_"
    root = _register(cl, f"{prefix}root", lambda ctx: {"seed": 1}, is_async, [])
    branches = []
    for i in range(n):
        branches.append(
            _register(cl, f"{prefix}f{i}", (lambda i: lambda ctx: {f"f{i}": i * ctx["seed"]})(i), is_async, [root],
                      **({"limits": list(limits)} if limits else {}))
        )
    join = _register(
        cl, f"{prefix}join", lambda ctx: {"total": sum(ctx[f"f{i}"] for i in range(n))}, is_async, branches
    )
    workflow = cl.Workflow(f"{prefix}fan", [join])

    def check(result: Dict[str, Any]) -> None:
        assert result["status"] == "Completed", result["error"]
        assert result["final_context"]["total"] == sum(range(n)), result["final_context"]["total"]

    return workflow, check


#: Wall-clock instants of the current map run: the root's end and the first instance's start.
map_marks: Dict[str, float] = {}


def mapped(cl: ModuleType, n: int, is_async: bool) -> Tuple[Any, Callable[[Dict[str, Any]], None]]:
    """M: ``root`` returns ``n`` items -> ``m`` mapped over them (``n`` instances made at run time)
    -> ``join``; each instance returns its item. ``map_marks`` gets the root's end and the first
    instance's start, so a run can tell how long expanding the map took."""
    prefix = f"m_{next(_serial)}_"

    def root_body(ctx: Context) -> Context:
        map_marks.clear()
        items = list(range(n))
        map_marks["root_end"] = time.time()
        return {"items": items}

    def instance_body(ctx: Context) -> Any:
        map_marks.setdefault("first_instance", time.time())
        return ctx["item"]

    root = _register(cl, f"{prefix}root", root_body, is_async, [])
    node = _register(cl, f"{prefix}m", instance_body, is_async, [root], map_over="items")
    join = _register(cl, f"{prefix}join", lambda ctx: {"total": sum(ctx[node])}, is_async, [node])
    workflow = cl.Workflow(f"{prefix}map", [join])

    def check(result: Dict[str, Any]) -> None:
        assert result["status"] == "Completed", result["error"]
        assert result["final_context"]["total"] == sum(range(n)), result["final_context"]["total"]
        counts = next(t["map"] for t in result["task_results"] if t["task_id"] == node)
        assert counts["count"] == counts["completed"] == n, counts

    return workflow, check


ROWS = 20_000


def rows_of(count: int) -> List[Dict[str, Any]]:
    """The S3 payload's rows."""
    return [{"id": i, "name": f"item-{i}", "value": i * 0.5} for i in range(count)]


def deep_size(value: Any) -> int:
    """Bytes a JSON-like Python value holds, counting every object once."""
    seen: set = set()
    stack = [value]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def payload(cl: ModuleType, is_async: bool, rows: int = ROWS) -> Tuple[Any, Callable[[Dict[str, Any]], None]]:
    """S3: a 10-task chain carrying a JSON value of ``rows`` rows (1.1 MB for 20,000)."""
    prefix = f"s3_{next(_serial)}_"
    ids = [_register(cl, f"{prefix}p0", lambda ctx: {"payload": {"rows": rows_of(rows)}}, is_async, [])]

    def step(i: int) -> Callable[[Context], Any]:
        def body(ctx: Context) -> Any:
            data = ctx["payload"]
            assert len(data["rows"]) == rows
            data[f"k{i}"] = i
            return {"payload": data}

        return body

    for i in range(1, 10):
        ids.append(_register(cl, f"{prefix}p{i}", step(i), is_async, ids[-1:]))
    workflow = cl.Workflow(f"{prefix}payload", ids)

    def check(result: Dict[str, Any]) -> None:
        assert result["status"] == "Completed", result["error"]
        data = result["final_context"]["payload"]
        assert len(data["rows"]) == rows and all(f"k{i}" in data for i in range(1, 10))

    return workflow, check

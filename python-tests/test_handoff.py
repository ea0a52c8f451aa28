"""A task's returned objects go to the next task of the same process without a copy, yet no task,
retry or record ever sees another task's in-place changes."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from backend import cl

pytestmark = pytest.mark.parametrize("is_async", [False, True], ids=["def", "async"])


def define(ids, name: str, body, is_async: bool, dependencies=(), **options):
    """Registers ``body`` as a sync or async task."""
    if is_async:

        async def run(ctx):
            return body(ctx)

    else:

        def run(ctx):
            return body(ctx)

    return cl.task(ids(name), dependencies=list(dependencies), **options)(run)


async def test_the_single_dependent_receives_the_returned_object_itself(executor, ids, is_async):
    returned: Dict[str, Any] = {}
    seen: List[bool] = []

    def make(ctx):
        returned["rows"] = [{"id": 1}]
        return {"rows": returned["rows"]}

    def read(ctx):
        seen.append(ctx["rows"] is returned["rows"])
        return {"n": len(ctx["rows"])}

    source = define(ids, "make", make, is_async)
    reader = define(ids, "read", read, is_async, [source])
    result = await executor.execute(cl.Workflow(ids.wf(), [reader]))
    assert result["status"] == "Completed", result["error"]
    assert seen == [True]


async def test_siblings_mutating_the_same_input_do_not_see_each_other(executor, ids, is_async):
    seen: Dict[str, List[int]] = {}

    def make(ctx):
        return {"items": [1, 2], "meta": {"by": "make"}}

    def mutate(name):
        def body(ctx):
            seen[name] = list(ctx["items"])
            ctx["items"].append(name)
            ctx["meta"]["by"] = name
            return {f"{name}_len": len(ctx["items"])}

        return body

    source = define(ids, "make", make, is_async)
    branches = [define(ids, name, mutate(name), is_async, [source]) for name in ("b1", "b2", "b3")]
    result = await executor.execute(cl.Workflow(ids.wf(), branches))
    assert result["status"] == "Completed", result["error"]
    assert seen == {"b1": [1, 2], "b2": [1, 2], "b3": [1, 2]}
    final = result["final_context"]
    assert final["items"] == [1, 2] and final["meta"] == {"by": "make"}
    assert [final[f"{name}_len"] for name in ("b1", "b2", "b3")] == [3, 3, 3]
    stored = await executor.get_execution(result["execution_id"])
    assert stored["final_context"] == final
    assert list(final) == list(stored["final_context"]) == sorted(final)


async def test_in_place_changes_to_a_value_a_task_does_not_return_stay_out_of_the_record(
    executor, ids, is_async
):
    seen: List[Any] = []

    def make(ctx):
        return {"config": {"level": 1}}

    def tamper(ctx):
        ctx["config"]["level"] = 99  # changed in place, not returned
        return {"tampered": True}

    def later(ctx):
        seen.append(ctx["config"])
        return {}

    source = define(ids, "make", make, is_async)
    middle = define(ids, "tamper", tamper, is_async, [source])
    last = define(ids, "later", later, is_async, [middle])
    result = await executor.execute(cl.Workflow(ids.wf(), [last]))
    assert result["status"] == "Completed", result["error"]
    assert seen == [{"level": 1}]
    assert result["final_context"]["config"] == {"level": 1}
    stored = await executor.get_execution(result["execution_id"])
    assert stored["final_context"] == result["final_context"]


async def test_a_retry_after_in_place_changes_gets_the_returned_value_afresh(executor, ids, is_async):
    seen: List[List[int]] = []

    def make(ctx):
        return {"items": [1, 2]}

    def flaky(ctx):
        seen.append(list(ctx["items"]))
        ctx["items"].clear()
        if len(seen) < 3:
            raise ValueError("not yet")
        return {"done": True}

    source = define(ids, "make", make, is_async)
    retried = define(ids, "flaky", flaky, is_async, [source], retries=2, retry_delay=0.01)
    result = await executor.execute(cl.Workflow(ids.wf(), [retried]))
    assert result["status"] == "Completed", result["error"]
    assert seen == [[1, 2], [1, 2], [1, 2]]
    assert result["final_context"]["items"] == [1, 2]

"""Property-based tests of contexts: any JSON-compatible context round-trips exactly (types
included) through execute and get_execution, as input and as a task's output; any context holding
a value JSON cannot store raises ContextError and records nothing."""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any, Dict

# Hypothesis caches what it learns; keep it out of the repository.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "cloacina-hypothesis")
)

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend import cl

# One executor (the suite's per-test fixture) serves every example of a test; CI is noisy, so no
# deadline; no example database, so nothing is written into the repository.
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# What the engine promises (README, "How contexts flow"): str keys, lists, str, 64-bit ints
# (signed, plus unsigned up to 2**64 - 1), finite floats (including -0.0), bool and None.
KEYS = st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=25,
)
CONTEXTS = st.dictionaries(KEYS, JSON, max_size=6)


class Opaque:
    pass


# Values JSON cannot store; each must be refused wherever it sits in a context.
NOT_JSON = st.sampled_from(
    [
        {1, 2},
        frozenset(),
        b"raw",
        bytearray(b"x"),
        (1, 2),
        (),
        Opaque(),
        complex(1, 2),
        math.nan,
        math.inf,
        -math.inf,
        2**64,
        -(2**63) - 1,
        10**30,
        "\ud800",
        "text \udfff",
        {1: "int key"},
        {None: "None key"},
        {True: "bool key"},
        {(1, 2): "tuple key"},
        {"\udc80": "surrogate key"},
    ]
)


def _in_list(items: list, index: int, value: Any) -> list:
    index = min(index, len(items))
    return items[:index] + [value] + items[index:]


def _in_dict(entries: dict, key: str, value: Any) -> dict:
    return {**entries, key: value}


# A JSON tree with exactly one bad value somewhere inside it.
WITH_ONE_BAD_VALUE = st.deferred(
    lambda: NOT_JSON
    | st.builds(_in_list, st.lists(JSON, max_size=3), st.integers(0, 3), WITH_ONE_BAD_VALUE)
    | st.builds(_in_dict, st.dictionaries(KEYS, JSON, max_size=3), KEYS, WITH_ONE_BAD_VALUE)
)
BAD_CONTEXTS = st.builds(_in_dict, CONTEXTS, KEYS, WITH_ONE_BAD_VALUE)


def exact(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1, 1.0 and True differ; so do 0.0 and -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(exact(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(exact(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b


class Echo:
    """A one-task workflow that records the context it sees and returns `output`."""

    def __init__(self, ids) -> None:
        self.seen: Dict[str, Any] = {}
        self.output: Any = None

        @cl.task(ids("echo"))
        def echo(ctx):
            self.seen = ctx
            return self.output

        self.workflow = cl.Workflow(ids.wf(), [echo])


@pytest.fixture
def echo(ids) -> Echo:
    return Echo(ids)


@PROPERTY
@given(context=CONTEXTS)
async def test_json_input_round_trips_exactly(executor, echo, context):
    echo.output = None
    result = await executor.execute(echo.workflow, context)
    assert result["status"] == "Completed", result
    assert exact(echo.seen, context)
    stored = await executor.get_execution(result["execution_id"])
    for record in (result, stored):
        assert exact(record["input_context"], context)
        assert exact(record["final_context"], context)


@PROPERTY
@given(output=CONTEXTS)
async def test_json_output_round_trips_exactly(executor, echo, output):
    echo.output = output
    result = await executor.execute(echo.workflow, {})
    assert result["status"] == "Completed", result
    stored = await executor.get_execution(result["execution_id"])
    for record in (result, stored):
        assert exact(record["input_context"], {})
        assert exact(record["final_context"], output)


@PROPERTY
@given(context=BAD_CONTEXTS)
async def test_non_json_input_raises_context_error_and_records_nothing(executor, echo, context):
    with pytest.raises(cl.ContextError) as info:
        await executor.execute(echo.workflow, context)
    assert str(info.value).startswith("context")
    assert await executor.list_executions(workflow=echo.workflow.name) == []


@PROPERTY
@given(output=BAD_CONTEXTS)
async def test_non_json_output_fails_the_task(executor, echo, output):
    echo.output = output
    result = await executor.execute(echo.workflow, {"kept": True})
    assert result["status"] == "Failed", result
    (task,) = result["task_results"]
    assert "not JSON" in task["error"], task["error"]
    assert exact(result["input_context"], {"kept": True})

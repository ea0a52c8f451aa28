"""Inputs that databases cannot store or that are not what they seem are refused with a clear
message where they are given, the same on every backend."""

from __future__ import annotations

import asyncio
import math

import pytest

from backend import cl


def test_nul_in_a_task_id_is_refused_when_decorating(ids):
    with pytest.raises(ValueError, match="NUL"):
        cl.task(ids("a\x00b"))(lambda ctx: None)


def test_nul_in_a_workflow_name_is_refused_when_building(ids):
    @cl.task(ids("t"))
    def t(ctx):
        return None

    with pytest.raises(ValueError, match="NUL"):
        cl.Workflow(ids.wf("w\x00x"), [t])


async def test_an_execution_id_with_a_lone_surrogate_says_so(executor):
    for method in (executor.cancel, executor.get_execution, executor.wait, executor.resume):
        with pytest.raises(ValueError, match="surrogate"):
            await method("\ud800")


async def test_an_execution_id_that_is_not_a_str_is_a_type_error(executor):
    with pytest.raises(TypeError, match="must be a str, got int"):
        await executor.cancel(5)


# --- numbers: one rule per option, the same limits everywhere ---------------------------------

ONE_YEAR = 365 * 24 * 60 * 60
# Values no numeric option accepts, whatever its range.
OUT_OF_RANGE = [1e20, 1e300, 10**400, math.nan, math.inf, -math.inf, -1]
NOT_NUMBERS = [True, False, "1", [1]]


def short(value) -> str:
    """A test id: the value's repr, cut short."""
    text = repr(value)
    return text if len(text) <= 20 else text[:17] + "..."
TASK_SECONDS = ["timeout", "retry_delay", "retry_max_delay"]
TASK_NUMBERS = ["retries", "retry_backoff", "retry_jitter"]


def _options(values):
    return [
        pytest.param(option, value, id=f"{option}={short(value)}")
        for option in TASK_SECONDS + TASK_NUMBERS
        for value in values
        # A float is the wrong type for retries, not out of its range.
        if not (option == "retries" and isinstance(value, float))
    ]


@pytest.mark.parametrize("option, value", _options(OUT_OF_RANGE))
def test_every_task_number_out_of_range_is_a_value_error_naming_it(ids, option, value):
    with pytest.raises(ValueError, match=f"^{option}=.* is out of range: must be "):
        cl.task(ids("t"), **{option: value})(lambda ctx: None)


@pytest.mark.parametrize("option, value", _options(NOT_NUMBERS))
def test_every_task_number_of_the_wrong_type_is_a_type_error_naming_it(ids, option, value):
    with pytest.raises(TypeError, match=f"^{option} must be ") as info:
        cl.task(ids("t"), **{option: value})(lambda ctx: None)
    if isinstance(value, bool):
        assert "True and False are not numbers" in str(info.value)


def test_the_range_of_seconds_is_stated_in_the_message(ids):
    with pytest.raises(ValueError) as info:
        cl.task(ids("t"), timeout=1e20)(lambda ctx: None)
    assert str(info.value) == (
        "timeout=1e+20 is out of range: must be a finite number of seconds greater than 0 "
        f"and at most {ONE_YEAR} (one year)"
    )


@pytest.mark.parametrize(
    "options",
    [{"timeout": ONE_YEAR}, {"retry_delay": ONE_YEAR}, {"retry_max_delay": float(ONE_YEAR)},
     {"retries": 10_000}, {"retry_backoff": 100}, {"retry_delay": 0}],
    ids=repr,
)
def test_the_limits_themselves_are_accepted(ids, options):
    cl.task(ids("t"), **options)(lambda ctx: None)


@pytest.mark.parametrize(
    "options", [{"timeout": ONE_YEAR + 1}, {"retries": 10_001}, {"retry_backoff": 100.5}], ids=repr
)
def test_just_past_the_limits_is_refused(ids, options):
    with pytest.raises(ValueError, match="out of range"):
        cl.task(ids("t"), **options)(lambda ctx: None)


@pytest.mark.parametrize("value", [0, 100_001, 10**30], ids=short)
def test_max_concurrency_out_of_range(value):
    with pytest.raises(ValueError, match=r"^max_concurrency=.* must be an int between 1 and 100000"):
        cl.UnifiedExecutor(max_concurrency=value)


@pytest.mark.parametrize("value", [True, 2.0, 1e20, "8"], ids=repr)
def test_max_concurrency_of_the_wrong_type(value):
    with pytest.raises(TypeError, match="^max_concurrency must be an int"):
        cl.UnifiedExecutor(max_concurrency=value)


@pytest.mark.parametrize(
    "option, value",
    [("pool_size", v) for v in (0, 1001, 10**30)]
    + [("lease_timeout", v) for v in OUT_OF_RANGE + [0]],
    ids=short,
)
async def test_initialize_numbers_out_of_range(database_url, option, value):
    ex = cl.UnifiedExecutor()
    with pytest.raises(ValueError, match=f"^{option}=.* is out of range"):
        await ex.initialize(database_url, **{option: value})


@pytest.mark.parametrize("option", ["pool_size", "lease_timeout"])
@pytest.mark.parametrize("value", [True, "4"], ids=repr)
async def test_initialize_numbers_of_the_wrong_type(database_url, option, value):
    ex = cl.UnifiedExecutor()
    with pytest.raises(TypeError, match=f"^{option} must be "):
        await ex.initialize(database_url, **{option: value})


@pytest.mark.parametrize("value", OUT_OF_RANGE + [0, True], ids=short)
async def test_submit_execute_and_wait_timeouts(executor, ids, value):
    @cl.task(ids("t"))
    def t(ctx):
        return None

    wf = cl.Workflow(ids.wf(), [t])
    expected = TypeError if isinstance(value, bool) else ValueError
    execution_id = await executor.submit(wf)
    calls = [
        lambda: executor.submit(wf, timeout=value),
        lambda: executor.execute(wf, timeout=value),
        lambda: executor.wait(execution_id, timeout=value),
    ]
    for call in calls:
        with pytest.raises(expected, match="^timeout"):
            await call()
    assert len(await executor.list_executions(workflow=wf.name)) == 1


@pytest.mark.parametrize(
    "value, expected",
    [(0, ValueError), (10_001, ValueError), (True, TypeError), (2.0, TypeError), (None, TypeError)],
)
async def test_list_executions_limit(executor, value, expected):
    with pytest.raises(expected, match="^limit"):
        await executor.list_executions(limit=value)


# --- contexts: what is wrong, said plainly ------------------------------------------------------


class DistinctStr(str):
    """A str subclass whose instances never equal each other, so a dict keeps equal texts apart."""

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)


async def _refused(executor, ids, context) -> str:
    @cl.task(ids("t"))
    def t(ctx):
        return None

    wf = cl.Workflow(ids.wf(), [t])
    with pytest.raises(cl.ContextError) as info:
        await executor.execute(wf, context)
    assert await executor.list_executions(workflow=wf.name) == []
    return str(info.value)


async def test_keys_with_equal_text_are_refused_not_collapsed(executor, ids):
    message = await _refused(executor, ids, {"outer": {DistinctStr("k"): 1, "k": 2}})
    assert message.startswith("context['outer']: two keys have the text 'k'")


async def test_a_dict_subclass_is_read_through_its_items(executor, ids):
    class Redacted(dict):
        def items(self):
            return [(k, "***" if k == "password" else v) for k, v in super().items()]

    @cl.task(ids("t"))
    def t(ctx):
        return None

    context = Redacted(user="ann", password="hunter2")
    result = await executor.execute(cl.Workflow(ids.wf(), [t]), {"login": context})
    assert result["input_context"] == {"login": {"user": "ann", "password": "***"}}


async def test_a_dict_subclass_whose_items_are_not_pairs_is_refused(executor, ids):
    class Odd(dict):
        def items(self):
            return ["not a pair"]

    message = await _refused(executor, ids, {"a": Odd(x=1)})
    assert message.startswith("context['a']: Odd.items() yielded 'not a pair'")


async def test_a_self_referencing_context_is_called_a_cycle(executor, ids):
    context = {"a": {"b": []}}
    context["a"]["b"].append(context["a"])
    message = await _refused(executor, ids, context)
    assert message == "context contains a reference cycle: context['a']['b'][0] refers back to context['a']"


async def test_a_context_that_contains_itself(executor, ids):
    context = {}
    context["me"] = context
    message = await _refused(executor, ids, context)
    assert message == "context contains a reference cycle: context['me'] refers back to context"


async def test_too_deep_nesting_shows_a_short_path(executor, ids):
    deep = leaf = {}
    for _ in range(150):
        leaf["k"] = {}
        leaf = leaf["k"]
    message = await _refused(executor, ids, {"top": deep})
    assert message.endswith("nested deeper than 100 levels")
    assert "more levels" in message
    assert len(message) < 150, message


async def test_a_lone_surrogate_in_a_value_or_a_key_says_so(executor, ids):
    for context, path in [({"s": ["\ud800"]}, "context['s'][0]"), ({"\udfff": 1}, "context")]:
        message = await _refused(executor, ids, context)
        assert message.startswith(f"{path}: ") and "lone surrogate" in message, message


async def test_control_characters_in_a_path_are_escaped(executor, ids):
    message = await _refused(executor, ids, {"a\x00\n'b": {1}})
    assert message.startswith("context['a\\x00\\n\\'b']: set is not JSON-compatible"), message


async def test_a_bad_output_under_a_key_holding_nul_fails_the_task(executor, ids):
    """The error names the path; a raw NUL in it could not be stored on PostgreSQL."""

    @cl.task(ids("t"))
    def t(ctx):
        return {"k\x00": {1}}

    result = await asyncio.wait_for(executor.execute(cl.Workflow(ids.wf(), [t])), 30)
    assert result["status"] == "Failed"
    assert "context['k\\x00']: set" in result["task_results"][0]["error"]

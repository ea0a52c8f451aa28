"""Every invalid resilience argument is rejected up front, with a message naming it."""

from __future__ import annotations

import math

import pytest

from backend import cl

NAN = math.nan
INF = math.inf
RULES = ("all_success", "all_done", "one_success", "one_failed", "none_failed")


def sample(ctx):
    return {"ok": True}


class NotAnException:
    pass


# --- task(...) options ------------------------------------------------------------------------

BAD_TYPES = [
    ("retries", True),
    ("retries", False),
    ("retries", 1.0),
    ("retries", 2.5),
    ("retries", "2"),
    ("retry_delay", "1"),
    ("retry_delay", True),
    ("retry_delay", [1]),
    ("retry_backoff", "2"),
    ("retry_backoff", True),
    ("retry_max_delay", "60"),
    ("retry_jitter", "0.1"),
    ("retry_jitter", True),
    ("retry_on", [ValueError]),
    ("retry_on", [ValueError, KeyError]),
    ("retry_on", ValueError("instance")),
    ("retry_on", (ValueError("instance"),)),
    ("retry_on", int),
    ("retry_on", NotAnException),
    ("retry_on", (ValueError, str)),
    ("retry_on", "ValueError"),
    ("retry_on", 42),
    ("timeout", "1"),
    ("timeout", True),
    ("timeout", [1.0]),
    ("trigger_rule", 3),
    ("trigger_rule", ["all_done"]),
]

BAD_VALUES = [
    ("retries", -1),
    ("retries", -100),
    ("retry_delay", -0.1),
    ("retry_delay", -1),
    ("retry_delay", NAN),
    ("retry_delay", INF),
    ("retry_delay", -INF),
    ("retry_max_delay", -1.0),
    ("retry_max_delay", NAN),
    ("retry_max_delay", INF),
    ("retry_backoff", 0.99),
    ("retry_backoff", 0.0),
    ("retry_backoff", -2.0),
    ("retry_backoff", NAN),
    ("retry_backoff", INF),
    ("retry_jitter", 1.01),
    ("retry_jitter", 2),
    ("retry_jitter", -0.01),
    ("retry_jitter", NAN),
    ("timeout", 0),
    ("timeout", 0.0),
    ("timeout", -1),
    ("timeout", -0.5),
    ("timeout", NAN),
    ("timeout", INF),
    ("trigger_rule", "bogus"),
    ("trigger_rule", ""),
    ("trigger_rule", "all-success"),
]


def _id(param):
    option, value = param
    return f"{option}={value!r}"


@pytest.mark.parametrize("option, value", BAD_TYPES, ids=[_id(p) for p in BAD_TYPES])
def test_wrong_type_raises_type_error(ids, option, value):
    with pytest.raises(TypeError) as info:
        cl.task(ids("bad"), **{option: value})(sample)
    assert not isinstance(info.value, ValueError)
    assert option in str(info.value)
    # Nothing was registered under that id.
    with pytest.raises(cl.WorkflowError):
        cl.Workflow(ids.wf(), [ids("bad")])


@pytest.mark.parametrize("option, value", BAD_VALUES, ids=[_id(p) for p in BAD_VALUES])
def test_bad_value_raises_value_error(ids, option, value):
    with pytest.raises(ValueError) as info:
        cl.task(ids("bad"), **{option: value})(sample)
    assert option in str(info.value)
    with pytest.raises(cl.WorkflowError):
        cl.Workflow(ids.wf(), [ids("bad")])


@pytest.mark.parametrize(
    "option",
    ["retries", "retry_delay", "retry_backoff", "retry_max_delay", "retry_jitter", "retry_on", "trigger_rule"],
)
def test_none_is_rejected_where_the_option_is_not_optional(ids, option):
    """Only ``timeout`` is Optional; None elsewhere is the wrong type, not "use the default"."""
    with pytest.raises(TypeError) as info:
        cl.task(ids("bad"), **{option: None})(sample)
    assert option in str(info.value)


def test_bad_option_raises_at_decoration_not_at_run(ids):
    """The error comes from task(...) or applying it, long before any workflow is built."""
    with pytest.raises(ValueError):
        @cl.task(ids("bad"), retries=-1)
        def bad(ctx):
            return None


def test_bad_option_on_bare_name_decorator(ids):
    with pytest.raises(ValueError) as info:
        cl.task(retry_backoff=0.5)(sample)
    assert "retry_backoff" in str(info.value)


def test_unknown_trigger_rule_lists_valid_names(ids):
    with pytest.raises(ValueError) as info:
        cl.task(ids("bad"), trigger_rule="always")(sample)
    message = str(info.value)
    assert "always" in message
    for rule in RULES:
        assert rule in message


def test_bad_option_does_not_replace_existing_task(ids):
    @cl.task(ids("kept"), retries=1)
    def kept(ctx):
        return {"kept": True}

    with pytest.raises(ValueError):
        cl.task(ids("kept"), retries=-1)(sample)
    # The earlier definition still stands.
    assert cl.Workflow(ids.wf(), [ids("kept")]).task_ids == [ids("kept")]


@pytest.mark.parametrize(
    "options",
    [
        {"retries": 0},
        {"retries": 10},
        {"retry_delay": 0},
        {"retry_delay": 0.0},
        {"retry_delay": 2},
        {"retry_backoff": 1},
        {"retry_backoff": 1.0},
        {"retry_backoff": 10.5},
        {"retry_max_delay": 0},
        {"retry_jitter": 0},
        {"retry_jitter": 1},
        {"retry_jitter": 0.5},
        {"retry_on": ValueError},
        {"retry_on": (ValueError, KeyError)},
        {"retry_on": (TimeoutError,)},
        {"retry_on": BaseException},
        {"retry_on": ()},
        {"timeout": None},
        {"timeout": 1},
        {"timeout": 0.001},
        *({"trigger_rule": rule} for rule in RULES),
    ],
    ids=repr,
)
def test_valid_options_accepted(ids, options):
    fn = cl.task(ids("good"), **options)(sample)
    assert fn is sample
    assert cl.Workflow(ids.wf(), [ids("good")]).task_ids == [ids("good")]


def test_options_are_keyword_only(ids):
    with pytest.raises(TypeError):
        cl.task(ids("positional"), [], 3)(sample)


def test_unknown_option_rejected(ids):
    with pytest.raises(TypeError):
        cl.task(ids("typo"), retires=3)(sample)


# --- execute(timeout=) ------------------------------------------------------------------------

def _wf(ids):
    @cl.task(ids("t"))
    def t(ctx):
        return {"ran": True}

    return cl.Workflow(ids.wf(), [t])


@pytest.mark.parametrize("timeout", [0, 0.0, -1, -0.001, NAN, INF, -INF])
async def test_execute_timeout_bad_value(executor, ids, timeout):
    wf = _wf(ids)
    with pytest.raises(ValueError) as info:
        await executor.execute(wf, timeout=timeout)
    assert "timeout" in str(info.value)
    assert await executor.list_executions(workflow=wf.name) == []


@pytest.mark.parametrize("timeout", ["1", True, [1], {"s": 1}])
async def test_execute_timeout_bad_type(executor, ids, timeout):
    wf = _wf(ids)
    with pytest.raises(TypeError) as info:
        await executor.execute(wf, timeout=timeout)
    assert "timeout" in str(info.value)
    assert await executor.list_executions(workflow=wf.name) == []


@pytest.mark.parametrize("timeout", [None, 5, 2.5])
async def test_execute_timeout_valid(executor, ids, timeout):
    result = await executor.execute(_wf(ids), timeout=timeout)
    assert result["status"] == "Completed"


async def test_execute_timeout_is_keyword_only(executor, ids):
    with pytest.raises(TypeError):
        await executor.execute(_wf(ids), None, 5)


# --- cancel(execution_id) ---------------------------------------------------------------------

@pytest.mark.parametrize("bad_id", ["not-a-uuid", "", "12345", "g" * 32, "00000000-0000-0000-0000-00000000000"])
async def test_cancel_malformed_id_raises_value_error(executor, bad_id):
    with pytest.raises(ValueError):
        await executor.cancel(bad_id)


@pytest.mark.parametrize("bad_id", [None, 42, b"bytes"])
async def test_cancel_non_str_id_raises(executor, bad_id):
    with pytest.raises((TypeError, ValueError)):
        await executor.cancel(bad_id)


async def test_cancel_before_initialize_raises():
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.NotInitializedError):
        await ex.cancel("00000000-0000-0000-0000-000000000000")

"""SkipTask: a task skips itself with a reason; not a failure, never retried."""

from __future__ import annotations

import asyncio

import pytest

from backend import by_task, cl, parse_ts


def test_skiptask_is_an_exception_class():
    assert issubclass(cl.SkipTask, Exception)
    assert str(cl.SkipTask("why")) == "why"


async def test_skip_reason_is_recorded(executor, ids):
    @cl.task(ids("skipper"))
    def skipper(ctx):
        raise cl.SkipTask("no new files since yesterday")

    result = await executor.execute(cl.Workflow(ids.wf(), [skipper]), {"day": 3})
    assert result["status"] == "Completed"
    assert result["error"] is None
    assert result["final_context"] == {"day": 3}
    tr = by_task(result)[ids("skipper")]
    assert tr["status"] == "Skipped"
    assert tr["reason"] == "no new files since yesterday"
    assert tr["error"] is None
    assert tr["traceback"] is None
    assert tr["attempts"] == 1
    assert len(tr["history"]) == 1
    assert tr["history"][0]["attempt"] == 1
    assert tr["history"][0]["status"] == "Skipped"
    parse_ts(tr["history"][0]["started_at"])
    parse_ts(tr["history"][0]["completed_at"])

    stored = await executor.get_execution(result["execution_id"])
    assert stored == result
    assert by_task(stored)[ids("skipper")]["reason"] == "no new files since yesterday"


async def test_async_task_can_skip(executor, ids):
    @cl.task(ids("async_skipper"))
    async def async_skipper(ctx):
        await asyncio.sleep(0.01)
        raise cl.SkipTask("async: nothing to do")

    result = await executor.execute(cl.Workflow(ids.wf(), [async_skipper]))
    assert result["status"] == "Completed"
    tr = by_task(result)[ids("async_skipper")]
    assert tr["status"] == "Skipped"
    assert tr["reason"] == "async: nothing to do"
    assert tr["error"] is None


@pytest.mark.parametrize("is_async", [False, True])
async def test_skip_is_never_retried(executor, ids, is_async):
    calls = []

    if is_async:
        @cl.task(ids("skip_once"), retries=3, retry_delay=0.01)
        async def skip_once(ctx):
            calls.append(1)
            raise cl.SkipTask("skip, do not retry")
    else:
        @cl.task(ids("skip_once"), retries=3, retry_delay=0.01)
        def skip_once(ctx):
            calls.append(1)
            raise cl.SkipTask("skip, do not retry")

    result = await executor.execute(cl.Workflow(ids.wf(), [ids("skip_once")]))
    assert calls == [1]
    tr = by_task(result)[ids("skip_once")]
    assert tr["status"] == "Skipped"
    assert tr["attempts"] == 1
    assert [h["status"] for h in tr["history"]] == ["Skipped"]
    assert result["status"] == "Completed"


async def test_skip_not_retried_even_when_retry_on_names_it(executor, ids):
    calls = []

    @cl.task(ids("skip_named"), retries=2, retry_delay=0.01, retry_on=(cl.SkipTask, ValueError))
    def skip_named(ctx):
        calls.append(1)
        raise cl.SkipTask("still a skip")

    result = await executor.execute(cl.Workflow(ids.wf(), [skip_named]))
    assert calls == [1]
    assert by_task(result)[ids("skip_named")]["status"] == "Skipped"


async def test_skip_after_failed_attempt(executor, ids):
    """A retry may decide to skip: the history keeps the failure, the task ends Skipped."""
    calls = []

    @cl.task(ids("fail_then_skip"), retries=3, retry_delay=0.01)
    def fail_then_skip(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("flaky")
        raise cl.SkipTask("gave up politely")

    result = await executor.execute(cl.Workflow(ids.wf(), [fail_then_skip]))
    assert calls == [1, 1]
    tr = by_task(result)[ids("fail_then_skip")]
    assert tr["status"] == "Skipped"
    assert tr["reason"] == "gave up politely"
    assert tr["attempts"] == 2
    assert [h["status"] for h in tr["history"]] == ["Failed", "Skipped"]
    assert tr["history"][0]["error"] == "ConnectionError: flaky"
    assert result["status"] == "Completed"


async def test_downstream_rules_after_skip(executor, ids):
    @cl.task(ids("skipper"))
    def skipper(ctx):
        raise cl.SkipTask("skipped on purpose")

    ran = []

    def make(name, rule):
        @cl.task(ids(name), dependencies=[skipper], trigger_rule=rule)
        def fn(ctx):
            ran.append(name)
            return {name: True}
        return fn

    default = cl.task(ids("default"), dependencies=[skipper])(lambda ctx: ran.append("default"))
    tasks = [
        default,
        make("all_success", "all_success"),
        make("none_failed", "none_failed"),
        make("all_done", "all_done"),
        make("one_success", "one_success"),
        make("one_failed", "one_failed"),
    ]

    @cl.task(ids("grandchild"), dependencies=[ids("default")])
    def grandchild(ctx):
        ran.append("grandchild")

    result = await executor.execute(cl.Workflow(ids.wf(), tasks + [grandchild]))
    assert result["status"] == "Completed"
    assert sorted(ran) == ["all_done", "none_failed"]
    tr = by_task(result)
    for name in ("default", "all_success", "one_success", "one_failed", "grandchild"):
        assert tr[ids(name)]["status"] == "Skipped", name
        assert tr[ids(name)]["attempts"] == 0, name
        assert tr[ids(name)]["history"] == [], name
        assert isinstance(tr[ids(name)]["reason"], str) and tr[ids(name)]["reason"], name
    assert "all_success" in tr[ids("default")]["reason"]
    for name in ("none_failed", "all_done"):
        assert tr[ids(name)]["status"] == "Completed"
    assert result["final_context"] == {"none_failed": True, "all_done": True}


async def test_skip_in_one_branch_spares_others(executor, ids):
    @cl.task(ids("skipper"))
    def skipper(ctx):
        raise cl.SkipTask("branch not needed")

    @cl.task(ids("other"))
    def other(ctx):
        return {"other": True}

    @cl.task(ids("other_child"), dependencies=[other])
    async def other_child(ctx):
        return {"other_child": ctx["other"]}

    result = await executor.execute(cl.Workflow(ids.wf(), [skipper, other_child]))
    assert result["status"] == "Completed"
    assert result["final_context"] == {"other": True, "other_child": True}


async def test_skip_alongside_failure_execution_failed(executor, ids):
    @cl.task(ids("skipper"))
    def skipper(ctx):
        raise cl.SkipTask("skip")

    @cl.task(ids("bad"))
    def bad(ctx):
        raise ValueError("real failure")

    result = await executor.execute(cl.Workflow(ids.wf(), [skipper, bad]))
    assert result["status"] == "Failed"
    assert ids("bad") in result["error"]
    assert ids("skipper") not in result["error"]
    tr = by_task(result)
    assert tr[ids("skipper")]["status"] == "Skipped"
    assert tr[ids("bad")]["status"] == "Failed"
    assert tr[ids("bad")]["reason"] is None


async def test_list_executions_after_skip(executor, ids):
    @cl.task(ids("skipper"))
    def skipper(ctx):
        raise cl.SkipTask("skip")

    result = await executor.execute(cl.Workflow(ids.wf(), [skipper]))
    listed = await executor.list_executions(workflow=ids.wf(), status="Completed")
    assert [e["execution_id"] for e in listed] == [result["execution_id"]]
    assert listed[0] == result

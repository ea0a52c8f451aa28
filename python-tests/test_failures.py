"""A failing task fails the execution, skips its dependents, and spares the rest."""

from __future__ import annotations

import time

import pytest

from backend import by_task, cl, parse_ts, statuses


class PipelineError(Exception):
    pass


def assert_skipped(tr):
    """Never started; `completed_at` records when it was skipped."""
    assert tr["status"] == "Skipped"
    assert tr["attempts"] == 0
    assert tr["history"] == []
    assert tr["traceback"] is None
    assert tr["started_at"] is None
    parse_ts(tr["completed_at"])
    assert "trigger rule 'all_success' not met" in tr["reason"]


async def test_failure_skips_dependents(executor, ids):
    @cl.task(ids("ok"))
    def ok(ctx):
        return {"ok": 1}

    @cl.task(ids("boom"), dependencies=[ok])
    def boom_fn(ctx):
        raise ValueError("boom")

    @cl.task(ids("child"), dependencies=[boom_fn])
    def child(ctx):
        return {"child": 1}

    @cl.task(ids("grandchild"), dependencies=[child])
    def grandchild(ctx):
        return {"grandchild": 1}

    wf = cl.Workflow(ids.wf(), [grandchild])
    result = await executor.execute(wf)

    assert result["status"] == "Failed"
    assert isinstance(result["error"], str) and ids("boom") in result["error"]
    tr = by_task(result)
    assert tr[ids("ok")]["status"] == "Completed"
    failed = tr[ids("boom")]
    assert failed["status"] == "Failed"
    assert failed["attempts"] == 1
    assert failed["error"] == "ValueError: boom"
    assert "Traceback" in failed["traceback"]
    assert "boom_fn" in failed["traceback"]
    assert "ValueError: boom" in failed["traceback"]
    parse_ts(failed["started_at"])
    parse_ts(failed["completed_at"])
    assert_skipped(tr[ids("child")])
    assert_skipped(tr[ids("grandchild")])
    assert result["final_context"] == {"ok": 1}
    assert [r["task_id"] for r in result["task_results"]] == wf.task_ids


async def test_independent_branch_runs_to_completion(executor, ids):
    @cl.task(ids("fail_fast"))
    def fail_fast(ctx):
        raise PipelineError("early failure")

    @cl.task(ids("after_fail"), dependencies=[fail_fast])
    def after_fail(ctx):
        return {"after_fail": True}

    @cl.task(ids("slow1"))
    def slow1(ctx):
        time.sleep(0.2)
        return {"slow1": True}

    @cl.task(ids("slow2"), dependencies=[slow1])
    async def slow2(ctx):
        return {"slow2": ctx["slow1"]}

    wf = cl.Workflow(ids.wf(), [after_fail, slow2])
    result = await executor.execute(wf)

    assert result["status"] == "Failed"
    assert statuses(result) == {
        ids("fail_fast"): "Failed",
        ids("after_fail"): "Skipped",
        ids("slow1"): "Completed",
        ids("slow2"): "Completed",
    }
    assert by_task(result)[ids("fail_fast")]["error"] == "PipelineError: early failure"
    assert result["final_context"] == {"slow1": True, "slow2": True}


async def test_diamond_with_one_failed_parent(executor, ids):
    @cl.task(ids("root"))
    def root(ctx):
        return {"root": 1}

    @cl.task(ids("good"), dependencies=[root])
    def good(ctx):
        return {"good": 1}

    @cl.task(ids("bad"), dependencies=[root])
    def bad(ctx):
        raise KeyError("missing")

    @cl.task(ids("join"), dependencies=[good, bad])
    def join(ctx):
        return {"join": 1}

    result = await executor.execute(cl.Workflow(ids.wf(), [join]))
    assert result["status"] == "Failed"
    tr = by_task(result)
    assert tr[ids("good")]["status"] == "Completed"
    assert tr[ids("bad")]["status"] == "Failed"
    assert tr[ids("bad")]["error"] == "KeyError: 'missing'"
    assert_skipped(tr[ids("join")])
    assert result["final_context"] == {"root": 1, "good": 1}


async def test_two_independent_failures(executor, ids):
    @cl.task(ids("f1"))
    def f1(ctx):
        raise ValueError("one")

    @cl.task(ids("f2"))
    async def f2(ctx):
        raise ZeroDivisionError("two")

    @cl.task(ids("fine"))
    def fine(ctx):
        return {"fine": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [f1, f2, fine]))
    assert result["status"] == "Failed"
    tr = by_task(result)
    assert tr[ids("f1")]["error"] == "ValueError: one"
    assert tr[ids("f2")]["error"] == "ZeroDivisionError: two"
    assert tr[ids("fine")]["status"] == "Completed"
    assert ids("f1") in result["error"] or ids("f2") in result["error"]


@pytest.mark.parametrize(
    "value, type_name",
    [(42, "int"), ("text", "str"), ([1, 2], "list"), ((1,), "tuple"), (True, "bool"), (object(), "object")],
)
async def test_bad_return_type_fails_task(executor, ids, value, type_name):
    @cl.task(ids("bad"))
    def bad(ctx):
        return value

    @cl.task(ids("dependent"), dependencies=[bad])
    def dependent(ctx):
        return {"never": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [dependent]))
    assert result["status"] == "Failed"
    tr = by_task(result)
    assert tr[ids("bad")]["status"] == "Failed"
    error = tr[ids("bad")]["error"]
    assert error.startswith("TypeError: ")
    assert ids("bad") in error
    assert type_name in error
    assert_skipped(tr[ids("dependent")])


@pytest.mark.parametrize(
    "output, fragment",
    [
        ({"s": {1, 2}}, "set"),
        ({"b": b"bytes"}, "bytes"),
        ({"nested": [{"t": (1, 2)}]}, "tuple"),
        ({1: "int key"}, "int"),
        ({"nan": float("nan")}, None),
        ({"inf": float("inf")}, None),
    ],
)
async def test_non_json_output_fails_task(executor, ids, output, fragment):
    @cl.task(ids("bad"))
    def bad(ctx):
        return output

    result = await executor.execute(cl.Workflow(ids.wf(), [bad]), {"input": 1})
    assert result["status"] == "Failed"
    tr = by_task(result)[ids("bad")]
    assert tr["status"] == "Failed"
    assert tr["error"].startswith("TypeError: ")
    if fragment is not None:
        assert fragment in tr["error"]
    assert result["final_context"] == {"input": 1}


async def test_in_place_non_json_value_fails_task(executor, ids):
    @cl.task(ids("bad"))
    def bad(ctx):
        ctx["when"] = object()

    result = await executor.execute(cl.Workflow(ids.wf(), [bad]))
    tr = by_task(result)[ids("bad")]
    assert tr["status"] == "Failed"
    assert tr["error"].startswith("TypeError: ")


async def test_failed_execution_is_stored(executor, ids):
    @cl.task(ids("bad"))
    def bad(ctx):
        raise RuntimeError("stored failure")

    result = await executor.execute(cl.Workflow(ids.wf(), [bad]))
    stored = await executor.get_execution(result["execution_id"])
    assert stored == result
    assert stored["task_results"][0]["error"] == "RuntimeError: stored failure"
    assert "stored failure" in stored["task_results"][0]["traceback"]


async def test_executor_still_works_after_failure(executor, ids):
    @cl.task(ids("bad"))
    def bad(ctx):
        raise RuntimeError("x")

    @cl.task(ids("good"))
    def good(ctx):
        return {"good": True}

    failed = await executor.execute(cl.Workflow(ids.wf("bad"), [bad]))
    ok = await executor.execute(cl.Workflow(ids.wf("good"), [good]))
    assert failed["status"] == "Failed"
    assert ok["status"] == "Completed"
    assert ok["final_context"] == {"good": True}

"""Trigger rules: whether a task runs once all of its upstream tasks have ended."""

from __future__ import annotations

import asyncio
import time
from typing import Dict, List

import pytest

from backend import by_task, cl, parse_ts

RULES = ["all_success", "all_done", "one_success", "one_failed", "none_failed"]

# Upstream outcomes: C = Completed, F = Failed, S = Skipped (raised SkipTask).
COMBOS = ["CC", "CF", "CS", "FF", "SS", "FS", "CFS"]


def rule_met(rule: str, outcomes: str) -> bool:
    return {
        "all_success": all(o == "C" for o in outcomes),
        "all_done": True,
        "one_success": "C" in outcomes,
        "one_failed": "F" in outcomes,
        "none_failed": "F" not in outcomes,
    }[rule]


STATUS = {"C": "Completed", "F": "Failed", "S": "Skipped"}


def make_upstreams(ids, outcomes: str) -> List[object]:
    tasks = []
    for i, outcome in enumerate(outcomes):
        name = ids(f"up{i}_{outcome}")
        if outcome == "C":
            def fn(ctx, i=i):
                return {f"up{i}": True}
        elif outcome == "F":
            def fn(ctx, i=i):
                raise ValueError(f"upstream {i} failed")
        else:
            def fn(ctx, i=i):
                raise cl.SkipTask(f"upstream {i} has nothing to do")
        tasks.append(cl.task(name)(fn))
    return tasks


def assert_rule_skipped(task_result: Dict, rule: str) -> None:
    assert task_result["status"] == "Skipped"
    assert task_result["attempts"] == 0
    assert task_result["history"] == []
    assert task_result["started_at"] is None
    assert task_result["error"] is None
    assert isinstance(task_result["reason"], str)
    assert rule in task_result["reason"]


@pytest.mark.parametrize("outcomes", COMBOS)
@pytest.mark.parametrize("rule", RULES)
async def test_rule_against_upstream_outcomes(executor, ids, rule, outcomes):
    upstreams = make_upstreams(ids, outcomes)
    ran = []

    @cl.task(ids("down"), dependencies=upstreams, trigger_rule=rule)
    def down(ctx):
        ran.append(sorted(k for k in ctx if k.startswith("up")))
        return {"down": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [down]))
    tr = by_task(result)
    for i, outcome in enumerate(outcomes):
        assert tr[ids(f"up{i}_{outcome}")]["status"] == STATUS[outcome]

    completed_keys = sorted(f"up{i}" for i, o in enumerate(outcomes) if o == "C")
    down_result = tr[ids("down")]
    if rule_met(rule, outcomes):
        assert down_result["status"] == "Completed", down_result
        assert down_result["attempts"] == 1
        assert ran == [completed_keys]
        assert result["final_context"].get("down") is True
    else:
        assert ran == []
        assert_rule_skipped(down_result, rule)
        # The reason names the upstream statuses that decided it.
        for outcome in set(outcomes):
            assert STATUS[outcome] in down_result["reason"], down_result["reason"]
        assert "down" not in result["final_context"]

    expected = "Failed" if "F" in outcomes else "Completed"
    assert result["status"] == expected
    if expected == "Failed":
        assert "failed" in result["error"].lower()
    else:
        assert result["error"] is None
    assert await executor.get_execution(result["execution_id"]) == result


async def test_default_rule_is_all_success(executor, ids):
    @cl.task(ids("ok"))
    def ok(ctx):
        return {"ok": True}

    @cl.task(ids("skipping"))
    def skipping(ctx):
        raise cl.SkipTask("not today")

    @cl.task(ids("down"), dependencies=[ok, skipping])
    def down(ctx):
        return {"down": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [down]))
    assert result["status"] == "Completed"
    assert_rule_skipped(by_task(result)[ids("down")], "all_success")


async def test_cleanup_runs_after_failure_and_execution_stays_failed(executor, ids):
    @cl.task(ids("extract"))
    def extract(ctx):
        return {"rows": [1, 2, 3], "tmp": "/tmp/work"}

    @cl.task(ids("transform"), dependencies=[extract])
    def transform(ctx):
        raise RuntimeError("transform broke")

    @cl.task(ids("load"), dependencies=[transform])
    def load(ctx):
        return {"loaded": True}

    seen = []

    @cl.task(ids("cleanup"), dependencies=[extract, transform, load], trigger_rule="all_done")
    def cleanup(ctx):
        seen.append(dict(ctx))
        return {"cleaned": ctx["tmp"]}

    result = await executor.execute(cl.Workflow(ids.wf(), [cleanup]), {"run": 7})
    tr = by_task(result)
    assert tr[ids("extract")]["status"] == "Completed"
    assert tr[ids("transform")]["status"] == "Failed"
    assert tr[ids("load")]["status"] == "Skipped"
    assert tr[ids("cleanup")]["status"] == "Completed"
    assert result["status"] == "Failed"
    assert ids("transform") in result["error"]
    assert "transform broke" in result["error"]
    # The cleanup saw the input and the completed upstream outputs, nothing from the failed task.
    assert seen == [{"run": 7, "rows": [1, 2, 3], "tmp": "/tmp/work"}]
    assert result["final_context"] == {"run": 7, "rows": [1, 2, 3], "tmp": "/tmp/work", "cleaned": "/tmp/work"}
    # It ran only after every upstream task had ended.
    assert parse_ts(tr[ids("cleanup")]["started_at"]) >= parse_ts(tr[ids("transform")]["completed_at"])
    stored = await executor.get_execution(result["execution_id"])
    assert stored == result


async def test_cleanup_after_success_keeps_execution_completed(executor, ids):
    @cl.task(ids("work"))
    async def work(ctx):
        return {"work": 1}

    @cl.task(ids("cleanup"), dependencies=[work], trigger_rule="all_done")
    def cleanup(ctx):
        return {"cleanup_saw": ctx["work"]}

    result = await executor.execute(cl.Workflow(ids.wf(), [cleanup]))
    assert result["status"] == "Completed"
    assert result["final_context"] == {"work": 1, "cleanup_saw": 1}


async def test_failing_cleanup_fails_execution(executor, ids):
    @cl.task(ids("work"))
    def work(ctx):
        return {"work": 1}

    @cl.task(ids("cleanup"), dependencies=[work], trigger_rule="all_done")
    def cleanup(ctx):
        raise OSError("disk gone")

    result = await executor.execute(cl.Workflow(ids.wf(), [cleanup]))
    assert result["status"] == "Failed"
    assert by_task(result)[ids("cleanup")]["error"] == "OSError: disk gone"


async def test_rules_wait_for_all_upstream_tasks(executor, ids):
    """one_success and one_failed are decided once every upstream task has ended, not at the first."""

    @cl.task(ids("fast_ok"))
    def fast_ok(ctx):
        return {"fast_ok": True}

    @cl.task(ids("fast_bad"))
    def fast_bad(ctx):
        raise ValueError("fast failure")

    @cl.task(ids("slow"))
    async def slow(ctx):
        await asyncio.sleep(0.3)
        return {"slow": True}

    @cl.task(ids("any_ok"), dependencies=[fast_ok, slow], trigger_rule="one_success")
    def any_ok(ctx):
        return {"any_ok_saw_slow": ctx.get("slow", False)}

    @cl.task(ids("any_bad"), dependencies=[fast_bad, slow], trigger_rule="one_failed")
    def any_bad(ctx):
        return {"any_bad_saw_slow": ctx.get("slow", False)}

    result = await executor.execute(cl.Workflow(ids.wf(), [any_ok, any_bad]))
    tr = by_task(result)
    slow_done = parse_ts(tr[ids("slow")]["completed_at"])
    assert tr[ids("any_ok")]["status"] == "Completed"
    assert tr[ids("any_bad")]["status"] == "Completed"
    assert parse_ts(tr[ids("any_ok")]["started_at"]) >= slow_done
    assert parse_ts(tr[ids("any_bad")]["started_at"]) >= slow_done
    assert result["final_context"]["any_ok_saw_slow"] is True
    assert result["final_context"]["any_bad_saw_slow"] is True
    assert result["status"] == "Failed"


async def test_all_done_waits_for_slow_failure(executor, ids):
    @cl.task(ids("quick"))
    def quick(ctx):
        return {"quick": True}

    @cl.task(ids("slow_bad"))
    def slow_bad(ctx):
        time.sleep(0.2)
        raise ValueError("late failure")

    @cl.task(ids("finally"), dependencies=[quick, slow_bad], trigger_rule="all_done")
    def finally_(ctx):
        return {"finally": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [finally_]))
    tr = by_task(result)
    assert tr[ids("finally")]["status"] == "Completed"
    assert parse_ts(tr[ids("finally")]["started_at"]) >= parse_ts(tr[ids("slow_bad")]["completed_at"])
    assert result["status"] == "Failed"


async def test_none_failed_runs_after_propagated_skip(executor, ids):
    """Upstream Skipped because of its own failed upstream counts as Skipped, not Failed."""

    @cl.task(ids("bad"))
    def bad(ctx):
        raise ValueError("root failure")

    @cl.task(ids("middle"), dependencies=[bad])
    def middle(ctx):
        return {"middle": True}

    @cl.task(ids("ok"))
    def ok(ctx):
        return {"ok": True}

    @cl.task(ids("tolerant"), dependencies=[middle, ok], trigger_rule="none_failed")
    def tolerant(ctx):
        return {"tolerant": True}

    @cl.task(ids("strict"), dependencies=[middle, ok])
    def strict(ctx):
        return {"strict": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [tolerant, strict]))
    tr = by_task(result)
    assert tr[ids("middle")]["status"] == "Skipped"
    assert tr[ids("tolerant")]["status"] == "Completed"
    assert_rule_skipped(tr[ids("strict")], "all_success")
    assert result["status"] == "Failed"


async def test_default_rule_downstream_of_rule_skipped_task(executor, ids):
    @cl.task(ids("ok"))
    def ok(ctx):
        return {"ok": True}

    @cl.task(ids("only_on_failure"), dependencies=[ok], trigger_rule="one_failed")
    def only_on_failure(ctx):
        return {"alert": True}

    @cl.task(ids("after_alert"), dependencies=[only_on_failure])
    def after_alert(ctx):
        return {"after_alert": True}

    @cl.task(ids("report"), dependencies=[only_on_failure], trigger_rule="all_done")
    def report(ctx):
        return {"report": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [after_alert, report]))
    tr = by_task(result)
    assert_rule_skipped(tr[ids("only_on_failure")], "one_failed")
    assert tr[ids("after_alert")]["status"] == "Skipped"
    assert tr[ids("report")]["status"] == "Completed"
    assert result["status"] == "Completed"
    assert result["final_context"] == {"ok": True, "report": True}


async def test_trigger_rule_with_task_dependencies_by_id(executor, ids):
    @cl.task(ids("late_cleanup"), dependencies=[ids("late_bad")], trigger_rule="all_done")
    def late_cleanup(ctx):
        return {"late_cleanup": True}

    @cl.task(ids("late_bad"))
    def late_bad(ctx):
        raise ValueError("x")

    result = await executor.execute(cl.Workflow(ids.wf(), [late_cleanup]))
    assert by_task(result)[ids("late_cleanup")]["status"] == "Completed"
    assert result["status"] == "Failed"


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_name_is_accepted(ids, rule):
    @cl.task(ids("t"), trigger_rule=rule)
    def t(ctx):
        return None

    assert cl.Workflow(ids.wf(), [t]).task_ids == [ids("t")]


@pytest.mark.parametrize("rule", RULES)
async def test_rule_on_root_task_runs(executor, ids, rule):
    """A task without upstream tasks runs whatever its rule."""

    @cl.task(ids("root"), trigger_rule=rule)
    def root(ctx):
        return {"root": True}

    result = await executor.execute(cl.Workflow(ids.wf(), [root]))
    assert result["status"] == "Completed"
    assert result["final_context"] == {"root": True}

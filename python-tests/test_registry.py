"""The @task decorator and the global task registry."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from backend import cl


def test_decorator_returns_function_unchanged(ids):
    def compute(ctx):
        return {"y": ctx["x"] * 3}

    decorated = cl.task(ids("compute"))(compute)
    assert decorated is compute
    assert compute.__cloacina_task_id__ == ids("compute")
    assert compute({"x": 2}) == {"y": 6}
    assert compute.__name__ == "compute"


def test_default_task_id_is_function_name(ids):
    def fn(ctx):
        return {}

    unique_name = ids("by_name").replace(".", "_")
    fn.__name__ = unique_name
    fn.__qualname__ = unique_name
    decorated = cl.task()(fn)
    assert decorated.__cloacina_task_id__ == unique_name
    wf = cl.Workflow("by-name", [unique_name])
    assert wf.task_ids == [unique_name]


def test_keyword_task_id(ids):
    @cl.task(task_id=ids("kw"))
    def fn(ctx):
        return {}

    assert fn.__cloacina_task_id__ == ids("kw")


async def test_dependencies_by_function_and_by_id(executor, ids):
    @cl.task(ids("a"))
    def a(ctx):
        return {"a": 1}

    @cl.task(ids("b"))
    def b(ctx):
        return {"b": 2}

    @cl.task(ids("c"), dependencies=(a, ids("b")))
    def c(ctx):
        return {"c": ctx["a"] + ctx["b"]}

    wf = cl.Workflow(ids.wf(), [c])
    assert set(wf.task_ids) == {ids("a"), ids("b"), ids("c")}
    assert wf.task_ids[-1] == ids("c")
    result = await executor.execute(wf)
    assert result["final_context"]["c"] == 3


async def test_dependency_on_task_registered_later(executor, ids):
    @cl.task(ids("consumer"), dependencies=[ids("producer")])
    def consumer(ctx):
        return {"got": ctx["made"]}

    @cl.task(ids("producer"))
    def producer(ctx):
        return {"made": "thing"}

    wf = cl.Workflow(ids.wf(), [consumer])
    assert wf.task_ids == [ids("producer"), ids("consumer")]
    result = await executor.execute(wf)
    assert result["final_context"] == {"made": "thing", "got": "thing"}


async def test_reregistering_replaces_definition(executor, ids):
    @cl.task(ids("v"))
    def v1(ctx):
        return {"version": 1}

    old = cl.Workflow(ids.wf("old"), [ids("v")])

    @cl.task(ids("v"))
    def v2(ctx):
        return {"version": 2}

    wf = cl.Workflow(ids.wf("new"), [ids("v")])
    assert wf.task_ids == [ids("v")]
    result = await executor.execute(wf)
    assert result["final_context"] == {"version": 2}
    assert v1({}) == {"version": 1}, "the replaced function itself is untouched"
    assert old.task_ids == [ids("v")]


def test_reregistering_with_new_dependencies_changes_graph(ids):
    @cl.task(ids("base"))
    def base(ctx):
        return {}

    @cl.task(ids("top"))
    def top_v1(ctx):
        return {}

    first = cl.Workflow(ids.wf(), [ids("top")])
    assert first.task_ids == [ids("top")]

    @cl.task(ids("top"), dependencies=[base])
    def top_v2(ctx):
        return {}

    second = cl.Workflow(ids.wf(), [ids("top")])
    assert second.task_ids == [ids("base"), ids("top")]
    assert first.version != second.version


def test_workflow_attributes_and_version(ids):
    @cl.task(ids("a"))
    def a(ctx):
        return {}

    @cl.task(ids("b"), dependencies=[a])
    def b(ctx):
        return {}

    @cl.task(ids("c"), dependencies=[a])
    def c(ctx):
        return {}

    wf1 = cl.Workflow(ids.wf(), [b])
    wf2 = cl.Workflow(ids.wf(), [ids("b")])
    wf3 = cl.Workflow(ids.wf(), [b, c])
    assert wf1.name == ids.wf()
    assert isinstance(wf1.task_ids, list)
    assert wf1.task_ids == [ids("a"), ids("b")]
    assert isinstance(wf1.version, str) and wf1.version
    assert wf1.version == wf2.version
    assert wf1.version != wf3.version


def test_tasks_given_by_id_or_function_are_equivalent(ids):
    @cl.task(ids("x"))
    def x(ctx):
        return {}

    @cl.task(ids("y"), dependencies=[x])
    async def y(ctx):
        return {}

    assert cl.Workflow(ids.wf(), [y]).task_ids == cl.Workflow(ids.wf(), [ids("y")]).task_ids
    assert cl.Workflow(ids.wf(), (x, y)).task_ids == [ids("x"), ids("y")]


ALL_TASKS_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from backend import cl

    @cl.task()
    def first(ctx):
        return {"first": 1}

    @cl.task(dependencies=[first])
    async def second(ctx):
        return {"second": ctx["first"] + 1}

    @cl.task("third-id")
    def third(ctx):
        return {"third": 3}

    snapshot = cl.Workflow("everything")
    snapshot_explicit_none = cl.Workflow("everything", None)

    @cl.task()
    def late(ctx):
        return {"late": True}

    grown = cl.Workflow("everything-later", None)

    async def main():
        ex = cl.UnifiedExecutor()
        await ex.initialize(sys.argv[1])
        try:
            result = await ex.execute(snapshot)
        finally:
            await ex.shutdown()
        print(json.dumps({
            "snapshot": snapshot.task_ids,
            "explicit": snapshot_explicit_none.task_ids,
            "grown": grown.task_ids,
            "same_version": snapshot.version == snapshot_explicit_none.version,
            "status": result["status"],
            "final": result["final_context"],
        }))

    asyncio.run(main())
    """
)


def test_workflow_without_tasks_takes_every_registered_task(tmp_path, subprocess_env, database_url):
    script = tmp_path / "all_tasks.py"
    script.write_text(ALL_TASKS_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), database_url], env=subprocess_env,
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(out["snapshot"]) == ["first", "second", "third-id"]
    assert out["snapshot"].index("first") < out["snapshot"].index("second")
    assert out["explicit"] == out["snapshot"]
    assert out["same_version"] is True
    assert sorted(out["grown"]) == ["first", "late", "second", "third-id"]
    assert out["status"] == "Completed"
    assert out["final"] == {"first": 1, "second": 2, "third": 3}

"""How the command line shows composition: a sub-workflow task waiting for its child, parent and
child naming each other in ``executions show``, and hooks in ``run``. The workflows run on a
worker in this process (the ``executor`` fixture) or in ``cloacina run``."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, List

from backend import by_task, cl
from procs import finished, until
from test_cli import Cli, cli, describe, env, render  # noqa: F401 (fixtures)


def field(stdout: str, name: str) -> str:
    """The value of the ``executions show`` header field ``name``."""
    for line in stdout.splitlines():
        if line.split()[:1] == [name]:
            return line[len(name):].strip()
    raise AssertionError(f"no field {name!r} in:\n{stdout}")


def row(stdout: str, first: str) -> List[str]:
    """The cells of the table row starting with ``first``."""
    return next(line for line in stdout.splitlines() if line.startswith(first + " ")).split()


async def test_show_links_a_parent_and_its_child_both_ways_and_shows_the_node_waiting(
        cli: Cli, executor: Any, database_url: str, ids: Any) -> None:
    release = asyncio.Event()

    @cl.task(ids("step"))
    async def step(ctx: dict) -> dict:
        await release.wait()
        return {"step": True}

    child = cl.Workflow(ids.wf("child"), [step])
    node = cl.subworkflow(child, task_id=ids("node"))
    execution_id = await executor.submit(cl.Workflow(ids.wf(), [node]), {})

    async def child_id() -> Any:
        record = await executor.get_execution(execution_id)
        task = by_task(record)[ids("node")]
        return task["child_execution_id"] if task["status"] == "Waiting" else None

    await until(child_id, what="the node waits for its child")
    child_execution = await child_id()

    shown = await cli.off_loop("--db", database_url, "executions", "show", execution_id)
    assert shown.returncode == 0, describe(shown)
    reason = f"waiting for child execution {child_execution} (workflow '{child.name}')"
    node_row = next(line for line in shown.stdout.splitlines() if line.startswith(ids("node") + " "))
    assert node_row.split()[1] == "Waiting" and node_row.endswith(reason), describe(shown)  # whole, not cut
    lines = shown.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.split()[:3] == ["TASK", "CHILD", "EXECUTION"]))
    assert lines[header + 1].split() == [ids("node"), child_execution], describe(shown)
    assert "parent" not in [line.split()[0] for line in lines if line.strip()], describe(shown)

    shown_child = await cli.off_loop("--db", database_url, "executions", "show", child_execution)
    assert shown_child.returncode == 0, describe(shown_child)
    assert field(shown_child.stdout, "parent") == f"{execution_id} (task {ids('node')})", describe(shown_child)
    assert field(shown_child.stdout, "workflow").startswith(child.name + " ")

    release.set()
    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", result
    after = await cli.off_loop("--db", database_url, "executions", "show", execution_id)
    assert row(after.stdout, ids("node"))[:2] == [ids("node"), "Completed"], describe(after)
    assert [ids("node"), child_execution] in [line.split() for line in after.stdout.splitlines()], describe(after)


async def test_a_mapped_child_names_its_instance(cli: Cli, executor: Any, database_url: str, ids: Any) -> None:
    @cl.task(ids("step"))
    def step(ctx: dict) -> dict:
        return {"doubled": ctx["item"] * 2}

    child = cl.Workflow(ids.wf("child"), [step])
    fan = cl.subworkflow(child, task_id=ids("fan"), map_over="items")
    result = await executor.execute(cl.Workflow(ids.wf(), [fan]), {"items": [1, 2, 3]})
    assert result["status"] == "Completed", result
    children = [e for e in await executor.list_executions(workflow=child.name)
                if e["parent_execution_id"] == result["execution_id"]]
    assert sorted(e["parent_task_id"] for e in children) == [f"{ids('fan')}[{i}]" for i in range(3)]
    second = next(e for e in children if e["parent_task_id"] == f"{ids('fan')}[1]")

    shown = await cli.off_loop("--db", database_url, "executions", "show", second["execution_id"])
    assert shown.returncode == 0, describe(shown)
    assert field(shown.stdout, "parent") == f"{result['execution_id']} (task {ids('fan')}[1])", describe(shown)
    parent = await cli.off_loop("--db", database_url, "executions", "show", result["execution_id"])
    assert "CHILD EXECUTION" not in parent.stdout, describe(parent)  # instances do not record their child


def test_run_shows_the_hooks_and_exits_1_when_the_execution_failed(cli: Cli, database_url: str, tmp_path: Path,
                                                                   ids: Any) -> None:
    module = f"hookflows_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(f'''
from cloacina import Workflow, task


@task(task_id="{ids("work")}")
def work(context):
    raise ValueError("the work failed")


@task(task_id="{ids("alert")}")
def alert(context):
    return {{"alerted": context["execution"]["failed_tasks"]}}


@task(task_id="{ids("publish")}")
def publish(context):
    return {{"published": True}}


wf = Workflow("{ids.wf()}", tasks=[work], on_success=publish, on_failure=alert)
''')
    proc = cli("--db", database_url, "run", f"{module}:wf")
    assert proc.returncode == 1, describe(proc)
    lines = proc.stdout.splitlines()
    assert f"task {ids('publish')} Skipped (the execution ended Failed; this on_success hook runs only when it " \
           f"ends Completed)" in lines, describe(proc)
    assert any(line.startswith(f"task {ids('alert')} Completed ") for line in lines), describe(proc)
    assert any(line.startswith(f"task {ids('work')} Failed ") for line in lines), describe(proc)
    assert f'"alerted": ["{ids("work")}"]' in proc.stdout, describe(proc)
    assert any(line.startswith("execution ") and " Failed in " in line for line in lines), describe(proc)


def test_parent_and_children_rendering(render: Any) -> None:
    parent_id, child_id = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
    child = {"execution_id": child_id, "workflow_name": "enrich", "workflow_version": "v", "status": "Running",
             "parent_execution_id": parent_id, "parent_task_id": "enrich[3]", "started_at": None,
             "completed_at": None, "input_context": {}, "final_context": None, "error": None, "reason": None}
    header = render.execution_header(child).splitlines()
    assert header[3] == f"parent     {parent_id} (task enrich[3])"
    assert not any(line.startswith("parent") for line in render.execution_header(
        dict(child, parent_execution_id=None, parent_task_id=None)).splitlines())

    reason = f"waiting for child execution {child_id} (workflow 'enrich')"
    node = {"task_id": "enrich", "status": "Waiting", "attempts": 1, "error": None, "reason": reason,
            "started_at": None, "completed_at": None, "child_execution_id": child_id, "map": None}
    plain = {"task_id": "load", "status": "Pending", "attempts": 0, "error": None, "reason": None,
             "started_at": None, "completed_at": None, "child_execution_id": None, "map": None}
    assert render.tasks_table([node, plain]).splitlines()[1].endswith(reason)
    assert render.children_table([node, plain]).splitlines() == [
        "TASK    CHILD EXECUTION", f"enrich  {child_id}"]
    assert render.children_table([plain]) == ""
    assert render.task_line(node) == f"task enrich Waiting ({reason})"

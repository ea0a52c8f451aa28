"""``cloacina events send`` and how the command line shows a ``Waiting`` task, against the test's
database; the waits run on a worker in this process (the ``executor`` fixture)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from backend import cl
from procs import finished, until
from test_cli import Cli, assert_user_error, cli, describe, env, render  # noqa: F401 (fixtures)


async def _waiting_reason(executor: Any, execution_id: str, task_id: str) -> Any:
    """The task's reason once it is Waiting, else None."""
    record = await executor.get_execution(execution_id)
    task = next(t for t in record["task_results"] if t["task_id"] == task_id)
    return task["reason"] if task["status"] == "Waiting" else None


async def test_send_completes_the_waiting_task_shown_waiting_with_its_key(cli: Cli, executor: Any,
                                                                         database_url: str, ids: Any) -> None:
    approval = cl.wait_for_event(ids("approval"), key="approve:{order_id}")  # the database is the test's own

    @cl.task(task_id=ids("ship"), dependencies=[approval])
    def ship(context: dict) -> dict:
        return {"approved_by": context[ids("approval")]["by"]}

    execution_id = await executor.submit(cl.Workflow(ids.wf(), tasks=[ship]), {"order_id": 42})
    key = "approve:42"
    await until(lambda: _waiting_reason(executor, execution_id, ids("approval")), what="the wait to start")

    shown = await cli.off_loop("--db", database_url, "executions", "show", execution_id)
    assert shown.returncode == 0, describe(shown)
    assert any(line.split()[:1] == ["status"] and line.split()[1] == "Running" for line in shown.stdout.splitlines()), \
        describe(shown)
    row = next(line for line in shown.stdout.splitlines() if line.startswith(ids("approval") + " "))
    assert row.split()[1] == "Waiting" and f"waiting for event '{key}'" in row, describe(shown)

    sent = await cli.off_loop("--db", database_url, "events", "send", key, "--payload", '{"by": "ana"}')
    assert sent.returncode == 0, describe(sent)
    assert sent.stdout.strip() == f"event {key} sent: 1 waiting task completed", describe(sent)
    assert sent.stderr == "", describe(sent)

    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", result
    assert result["final_context"]["approved_by"] == "ana"
    again = await cli.off_loop("--db", database_url, "events", "send", key)
    assert again.stdout.strip() == f"event {key} sent: 0 waiting tasks completed", describe(again)


async def test_an_event_sent_before_the_wait_starts_still_completes_it(cli: Cli, executor: Any, database_url: str,
                                                                       ids: Any, tmp_path: Path) -> None:
    gate_file = tmp_path / f"gate-{uuid.uuid4().hex}"

    @cl.task(task_id=ids("gate"))
    async def gate(context: dict) -> None:
        import asyncio

        while not gate_file.exists():
            await asyncio.sleep(0.02)

    approval = cl.wait_for_event(ids("approval"), key=ids("early"), dependencies=[gate])
    execution_id = await executor.submit(cl.Workflow(ids.wf(), tasks=[approval]))

    sent = await cli.off_loop("--db", database_url, "--json", "events", "send", ids("early"), "--payload", "[1, 2]")
    assert sent.returncode == 0, describe(sent)
    assert json.loads(sent.stdout) == {"key": ids("early"), "payload": [1, 2], "completed": 0}

    gate_file.write_text("go")
    result = await finished(executor, execution_id)
    assert result["status"] == "Completed", result
    assert result["final_context"][ids("approval")] == [1, 2]


def test_bad_events_are_user_errors(cli: Cli, database_url: str) -> None:
    assert_user_error(cli("--db", database_url, "events", "send", "k", "--payload", "{bad"),
                      "--payload is not valid JSON", "line 1 column 2")
    assert_user_error(cli("--db", database_url, "events", "send", "", "--payload", "1"), "key")
    usage = cli("--db", database_url, "events")
    assert usage.returncode == 2 and "ACTION" in usage.stderr, describe(usage)
    listed = cli("events", "--help")
    assert listed.returncode == 0 and "send" in listed.stdout, describe(listed)
    helped = cli("events", "send", "--help")
    assert helped.returncode == 0 and "--payload JSON" in helped.stdout, describe(helped)


def test_nothing_waiting_without_a_payload(cli: Cli, database_url: str) -> None:
    sent = cli("--db", database_url, "--json", "events", "send", "nobody:waits")
    assert sent.returncode == 0, describe(sent)
    assert json.loads(sent.stdout) == {"key": "nobody:waits", "payload": None, "completed": 0}


def test_run_prints_a_line_when_a_task_starts_to_wait(cli: Cli, database_url: str, tmp_path: Path, ids: Any) -> None:
    module = f"waitflows_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(f'''
from cloacina import Workflow, sleep, task

nap = sleep("{ids("nap")}", 1.0)


@task(task_id="{ids("after")}", dependencies=[nap])
def after(context):
    return {{"after": True}}


wf = Workflow("{ids.wf()}", tasks=[after])
''')
    proc = cli("--db", database_url, "run", f"{module}:wf")
    assert proc.returncode == 0, describe(proc)
    lines = proc.stdout.splitlines()
    waiting = [line for line in lines if line.startswith(f"task {ids('nap')} Waiting (sleeping until ")]
    assert len(waiting) == 1, describe(proc)
    ended = [line.split()[1:3] for line in lines if line.startswith("task ") and " Waiting " not in line]
    assert ended == [[ids("nap"), "Completed"], [ids("after"), "Completed"]], describe(proc)
    assert lines.index(waiting[0]) < lines.index(next(l for l in lines if l.startswith(f"task {ids('nap')} Completed")))


def test_waiting_tasks_rendering(render: Any) -> None:
    waiting = {"task_id": "nap", "status": "Waiting", "attempts": 0, "error": None,
               "reason": "sleeping until 2026-12-05T18:00:00.000Z", "started_at": None, "completed_at": None}
    running = dict(waiting, task_id="load", status="Running", reason=None, attempts=1)
    assert render.task_line(waiting) == "task nap Waiting (sleeping until 2026-12-05T18:00:00.000Z)"
    assert render.progress_line([running, waiting], elapsed=1) == \
        "[--------------------] 0/2 done  1.00s  running: load  waiting: nap"
    row = render.tasks_table([waiting]).splitlines()[1]
    assert row.split()[:2] == ["nap", "Waiting"] and row.endswith("sleeping until 2026-12-05T18:00:00.000Z")

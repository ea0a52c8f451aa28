"""The engine logs through the standard `logging` module, and tasks can ask who they are."""

from __future__ import annotations

import logging
from typing import Any, List

import pytest

from backend import cl, run_snippet


class Collect(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected():
    logger = logging.getLogger("cloacina")
    handler = Collect()
    old_level = logger.level
    logger.addHandler(handler)
    try:
        yield handler, logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def mine(records: List[logging.LogRecord], execution_id: str) -> List[logging.LogRecord]:
    return [r for r in records if getattr(r, "execution_id", None) == execution_id]


async def test_debug_shows_every_attempt_with_its_fields(executor, ids, collected):
    handler, logger = collected
    logger.setLevel(logging.DEBUG)
    failures: List[int] = []

    @cl.task(task_id=ids("extract"))
    def extract(ctx: Any) -> Any:
        return {"rows": [1, 2]}

    @cl.task(task_id=ids("total"), dependencies=[extract], retries=1, retry_delay=0)
    async def total(ctx: Any) -> Any:
        if not failures:
            failures.append(1)
            raise ValueError("flaky source")
        return {"total": sum(ctx["rows"])}

    wf = cl.Workflow(ids.wf(), tasks=[total])
    result = await executor.execute(wf)
    assert result["status"] == "Completed", result
    records = mine(handler.records, result["execution_id"])
    seen = [(r.name, r.levelno, getattr(r, "task_id", None), getattr(r, "attempt", None)) for r in records]
    assert seen == [
        ("cloacina.executor", logging.INFO, None, None),
        ("cloacina.task", logging.DEBUG, ids("extract"), 1),
        ("cloacina.task", logging.DEBUG, ids("extract"), 1),
        ("cloacina.task", logging.DEBUG, ids("total"), 1),
        ("cloacina.task", logging.WARNING, ids("total"), 1),
        ("cloacina.task", logging.WARNING, ids("total"), 1),
        ("cloacina.task", logging.DEBUG, ids("total"), 2),
        ("cloacina.task", logging.DEBUG, ids("total"), 2),
        ("cloacina.executor", logging.INFO, None, None),
    ], seen
    assert all(r.workflow_name == wf.name for r in records)
    assert "submitted" in records[0].getMessage()
    assert "ValueError: flaky source" in records[4].getMessage()
    assert "will run attempt 2" in records[5].getMessage()
    assert records[-1].getMessage().endswith("ended Completed")


async def test_a_failed_execution_is_an_error_and_quiet_below_warning(executor, ids, collected):
    handler, logger = collected
    logger.setLevel(logging.WARNING)

    @cl.task(task_id=ids("broken"))
    def broken(ctx: Any) -> Any:
        raise RuntimeError("disk on fire")

    result = await executor.execute(cl.Workflow(ids.wf(), tasks=[broken]))
    assert result["status"] == "Failed"
    records = mine(handler.records, result["execution_id"])
    assert [(r.name, r.levelname) for r in records] == [
        ("cloacina.task", "WARNING"),
        ("cloacina.executor", "ERROR"),
    ]
    assert "RuntimeError: disk on fire" in records[0].getMessage()
    assert records[1].getMessage().endswith("ended Failed")


async def test_pytest_caplog_sees_records(executor, ids, caplog):
    caplog.set_level(logging.INFO, logger="cloacina")

    @cl.task(task_id=ids("one"))
    def one(ctx: Any) -> Any:
        return {}

    result = await executor.execute(cl.Workflow(ids.wf(), tasks=[one]))
    messages = [r.getMessage() for r in caplog.records if getattr(r, "execution_id", None) == result["execution_id"]]
    assert any(m.endswith("submitted") for m in messages), messages
    assert any(m.endswith("ended Completed") for m in messages), messages


def test_importing_configures_no_logging(subprocess_env):
    """A library adds a NullHandler to its own logger and never touches the root logger."""
    code = (
        "import logging, backend\n"
        "root = logging.getLogger()\n"
        "print(len(root.handlers), logging.getLevelName(root.level))\n"
        "print([type(h).__name__ for h in logging.getLogger('cloacina').handlers])\n"
    )
    proc = run_snippet(code, subprocess_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["0 WARNING", "['NullHandler']"]


async def test_current_task_inside_sync_and_async_tasks(executor, ids):
    @cl.task(task_id=ids("sync"))
    def sync_task(ctx: Any) -> Any:
        return {"sync": cl.current_task()}

    @cl.task(task_id=ids("async"), dependencies=[sync_task], retries=1, retry_delay=0)
    async def async_task(ctx: Any) -> Any:
        me = cl.current_task()
        if me["attempt"] == 1:
            raise RuntimeError("again")
        return {"async": me}

    wf = cl.Workflow(ids.wf(), tasks=[async_task])
    result = await executor.execute(wf)
    assert result["status"] == "Completed", result
    context = result["final_context"]
    assert context["sync"] == {"execution_id": result["execution_id"], "workflow_name": wf.name,
                               "task_id": ids("sync"), "attempt": 1, "map_index": None, "snoozes": 0}
    assert context["async"] == {"execution_id": result["execution_id"], "workflow_name": wf.name,
                                "task_id": ids("async"), "attempt": 2, "map_index": None, "snoozes": 0}


def test_current_task_outside_a_task_is_a_clear_error():
    with pytest.raises(RuntimeError, match="outside a running task"):
        cl.current_task()

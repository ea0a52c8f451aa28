"""The hand-written .pyi stub matches the compiled module (mypy.stubtest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend import cl

pytest.importorskip("mypy")


def test_stub_matches_runtime(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--ignore-disjoint-bases", cl.__name__],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_is_typed():
    from importlib import resources

    assert resources.files(cl.__name__).joinpath("py.typed").is_file()
    assert resources.files("cloacina").joinpath("py.typed").is_file()


USER_CODE = '''
from typing import List, Optional

import cloacina
from cloacina import AttemptRecord, CurrentTask, ExecutionResult, ScheduleInfo, TaskResult, WorkerInfo


@cloacina.task
def one(context: dict) -> dict:  # type: ignore[type-arg]
    current: CurrentTask = cloacina.current_task()
    return {"attempt": current["attempt"]}


@cloacina.task
def alert(context: dict) -> None:  # type: ignore[type-arg]
    print(context["execution"]["status"])


node: cloacina.TaskRef = cloacina.subworkflow(cloacina.Workflow("typed_child", [one]), task_id="typed_node",
                                              map_over="items", retries=1, timeout=30.0)
parent = cloacina.Workflow("typed_parent", [node], on_failure=alert, on_success="alert")


async def main() -> None:
    executor = cloacina.UnifiedExecutor()
    await executor.initialize("sqlite:///typed.db")
    result: ExecutionResult = await executor.execute(cloacina.Workflow("typed", [one]))
    tasks: List[TaskResult] = result["task_results"]
    history: List[AttemptRecord] = tasks[0]["history"]
    workers: List[WorkerInfo] = await executor.list_workers()
    schedules: List[ScheduleInfo] = await executor.list_schedules()
    print(result["status"], len(history), len(workers), len(schedules))
    parent_id: Optional[str] = result["parent_execution_id"]
    child_id: Optional[str] = tasks[0]["child_execution_id"]
    print(parent_id, child_id, result["parent_task_id"])
'''


def test_result_types_are_public_at_run_time():
    import cloacina

    for name in ("ExecutionResult", "TaskResult", "AttemptRecord", "WorkerInfo", "ScheduleInfo", "CurrentTask",
                 "RunningTask"):
        kind = getattr(cloacina, name)
        assert kind is getattr(cl, name) and kind.__annotations__, name
    assert "history" in cloacina.TaskResult.__annotations__


def test_user_annotations_type_check_with_no_backend_package_in_sight(tmp_path):
    """mypy --strict sees only the `cloacina` package: no stub reaches into cloacina_sqlite, so an
    install with the PostgreSQL backend alone type-checks the same."""
    from importlib import resources

    path = tmp_path / "path"
    path.mkdir()
    (path / "cloacina").symlink_to(Path(str(resources.files("cloacina"))))
    (tmp_path / "user.py").write_text(USER_CODE)
    env = dict(os.environ, MYPYPATH=str(path))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-site-packages", "--no-incremental",
                           "user.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""The backend module under test and small helpers shared by the test files.

``CLOACINA_TEST_BACKEND`` (default ``sqlite``) names the backend; the module
``cloacina_<name>`` is imported as ``cl``. The database URL comes from the
``database_url`` fixture in conftest.py; PostgreSQL helpers live in pg_admin.py.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from datetime import datetime
from typing import Any, Dict, Optional

BACKEND: str = os.environ.get("CLOACINA_TEST_BACKEND", "sqlite")
cl = importlib.import_module(f"cloacina_{BACKEND}")

IS_SQLITE = BACKEND == "sqlite"
IS_POSTGRES = BACKEND == "postgres"



def parse_ts(value: Optional[str]) -> datetime:
    """A record's timestamp as :func:`cloacina._records.parse_timestamp` (the package's one
    parser) reads it, asserting there is one and that it reads. Imported here, not above: the
    child processes import this module too, and importing ``cloacina`` binds a backend."""
    from cloacina._records import parse_timestamp

    parsed = parse_timestamp(value)
    assert parsed is not None, f"expected an ISO-8601 timestamp, got {value!r}"
    return parsed


def by_task(result: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """task_results of an execution keyed by task_id."""
    out = {r["task_id"]: r for r in result["task_results"]}
    assert len(out) == len(result["task_results"]), "duplicate task_id in task_results"
    return out


def assert_uuid(value: Any) -> None:
    assert isinstance(value, str)
    assert str(uuid.UUID(value)) == value.lower()


def statuses(result: Dict[str, Any]) -> Dict[str, str]:
    return {r["task_id"]: r["status"] for r in result["task_results"]}


async def execute_once(database_url: str, workflow: Any, context: Optional[Dict[str, Any]] = None,
                       **initialize_kwargs: Any) -> Dict[str, Any]:
    """Initialize a new executor, run ``workflow`` once, shut the executor down; returns the result."""
    executor = cl.UnifiedExecutor()
    await executor.initialize(database_url, **initialize_kwargs)
    try:
        return await executor.execute(workflow, context)
    finally:
        await executor.shutdown()


def run_snippet(code: str, env: Dict[str, str], *, cwd: Optional[str] = None,
                timeout: float = 60) -> "subprocess.CompletedProcess[str]":
    """Runs Python ``code`` in a child process that can import this directory's helpers."""
    here = os.path.dirname(os.path.abspath(__file__))
    child_env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=child_env, capture_output=True,
                          text=True, timeout=timeout)

"""The pytest plugin (``cloacina.pytest_plugin``) and ``cloacina.testing``, used as a user would.

Each test writes a test file into its tmp_path and runs pytest on it in a child interpreter,
reading the outcome back from a JUnit XML report. Where the dispatcher's ``pytest11`` entry
point is installed, the child loads the plugin through it; otherwise ``-p
cloacina.pytest_plugin`` enables it. On PostgreSQL the child gets a fresh database through
``CLOACINA_TEST_DATABASE_URL``.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from backend import BACKEND, IS_POSTGRES

PLUGIN = "cloacina.pytest_plugin"


def declared_entry_points() -> List[importlib.metadata.EntryPoint]:
    return [ep for ep in importlib.metadata.distribution("cloacina").entry_points if ep.group == "pytest11"]


ENTRY_POINT_INSTALLED = any(ep.value == PLUGIN for ep in declared_entry_points())

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
filterwarnings = error
xfail_strict = true
"""


class Report:
    """Outcome of a child pytest run, per test name."""

    def __init__(self, junit: Path, output: str) -> None:
        self.output = output
        self.outcomes: Dict[str, str] = {}
        self.messages: Dict[str, str] = {}
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = case.attrib["name"]
            self.outcomes[name] = "passed"
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    self.outcomes[name] = {"failure": "failed", "error": "error"}.get(child.tag, "skipped")
                    self.messages[name] = child.attrib.get("message", "") + "\n" + (child.text or "")

    def __repr__(self) -> str:
        return f"{self.outcomes}\n{self.output}"


def run_pytest(
    tmp_path: Path,
    env: Dict[str, str],
    test_source: str,
    *,
    ini: str = INI,
    plugin_args: Optional[Sequence[str]] = None,
) -> Report:
    """Runs pytest on ``test_source`` in a child interpreter; returns its report.

    ``plugin_args`` default: nothing where the entry point loads the plugin, else ``-p
    cloacina.pytest_plugin``.
    """
    (tmp_path / "pytest.ini").write_text(textwrap.dedent(ini))
    test_file = tmp_path / "test_generated.py"
    test_file.write_text(textwrap.dedent(test_source))
    junit = tmp_path / "report.xml"
    if plugin_args is None:
        plugin_args = [] if ENTRY_POINT_INSTALLED else ["-p", PLUGIN]
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *plugin_args, "-q", "-rA",
            "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
            f"--junitxml={junit}", str(test_file)]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    output = proc.stdout + proc.stderr
    assert junit.exists(), f"pytest exited {proc.returncode} without a report:\n{output}"
    return Report(junit, output)


@pytest.fixture
def child_env(subprocess_env: Dict[str, str], request: pytest.FixtureRequest) -> Dict[str, str]:
    """The child's environment: the backend under test bound, and its database on PostgreSQL."""
    env = dict(subprocess_env, CLOACINA_BACKEND=BACKEND)
    env.pop("CLOACINA_TEST_DATABASE_URL", None)
    if IS_POSTGRES:
        env["CLOACINA_TEST_DATABASE_URL"] = request.getfixturevalue("database_url")
    return env


def test_entry_point_is_declared():
    [entry_point] = [ep for ep in declared_entry_points() if ep.name == "cloacina"]
    assert entry_point.value == PLUGIN
    assert entry_point.load().__name__ == PLUGIN


WORKFLOW_TESTS = """
import asyncio
import threading

import pytest

import cloacina
from cloacina.testing import run_task, run_task_sync

CALLS = []
KEPT = {}


@cloacina.task("plug.rows")
def rows(ctx):
    CALLS.append("rows")
    return {"rows": [1, 2, 3]}


@cloacina.task("plug.total", dependencies=[rows])
async def total(ctx):
    await asyncio.sleep(0.01)
    CALLS.append("total")
    return {"total": sum(ctx["rows"]), "on_thread": threading.current_thread().name}


@cloacina.task("plug.flaky", retries=3, retry_delay=0.01, retry_backoff=1.0)
def flaky(ctx):
    CALLS.append("flaky")
    if CALLS.count("flaky") < 3:
        raise ConnectionError(f"attempt {CALLS.count('flaky')} fails")
    return {"attempts_seen": CALLS.count("flaky")}


@cloacina.task("plug.broken")
def broken(ctx):
    raise ValueError("nope")


@pytest.mark.asyncio
async def test_executes_a_workflow(cloacina_executor):
    KEPT["async"] = cloacina_executor
    assert isinstance(cloacina_executor, cloacina.UnifiedExecutor)
    result = await cloacina_executor.execute(cloacina.Workflow("plug.etl", [total]), {"source": "x"})
    assert result["status"] == "Completed", result
    assert result["final_context"]["total"] == 6
    assert [r["task_id"] for r in result["task_results"]] == ["plug.rows", "plug.total"]


@pytest.mark.asyncio
async def test_the_executor_was_shut_down_after_its_test():
    assert "shut down" in repr(KEPT["async"])
    with pytest.raises(cloacina.NotInitializedError):
        await KEPT["async"].list_executions()


@pytest.mark.asyncio
async def test_run_task_applies_retries(cloacina_executor):
    CALLS.clear()
    result = await run_task(cloacina_executor, flaky)
    assert result["status"] == "Completed", result
    [record] = result["task_results"]
    assert record["task_id"] == "plug.flaky" and record["attempts"] == 3
    assert [a["status"] for a in record["history"]] == ["Failed", "Failed", "Completed"]
    assert record["history"][0]["error"] == "ConnectionError: attempt 1 fails"
    assert result["final_context"] == {"attempts_seen": 3}


@pytest.mark.asyncio
async def test_run_task_runs_an_async_task_alone(cloacina_executor):
    CALLS.clear()
    result = await run_task(cloacina_executor, total, {"rows": [4, 5]})
    assert result["status"] == "Completed", result
    assert CALLS == ["total"]  # its dependency did not run: the context stood in for it
    assert [r["task_id"] for r in result["task_results"]] == ["plug.total"]
    assert result["final_context"]["rows"] == [4, 5] and result["final_context"]["total"] == 9


@pytest.mark.asyncio
async def test_run_task_reports_a_failure_without_raising(cloacina_executor):
    result = await run_task(cloacina_executor, "plug.broken", {"a": 1})
    assert result["status"] == "Failed"
    assert result["task_results"][0]["error"] == "ValueError: nope"
    assert "raise ValueError" in result["task_results"][0]["traceback"]


@pytest.mark.asyncio
async def test_run_task_of_an_unknown_task_raises(cloacina_executor):
    with pytest.raises(cloacina.WorkflowError):
        await run_task(cloacina_executor, "plug.never_registered")


def test_sync_fixture_runs_a_task_alone(cloacina_sync_executor):
    KEPT["sync"] = cloacina_sync_executor
    assert isinstance(cloacina_sync_executor, cloacina.SyncExecutor)
    CALLS.clear()
    result = run_task_sync(cloacina_sync_executor, total, {"rows": [10]})
    assert result["status"] == "Completed", result
    assert CALLS == ["total"]
    assert result["final_context"]["total"] == 10
    # Async tasks run on the SyncExecutor's own event loop thread.
    assert result["final_context"]["on_thread"] == "cloacina-sync-executor"


def test_the_sync_executor_was_shut_down_after_its_test():
    assert "shut down" in repr(KEPT["sync"])
    with pytest.raises(cloacina.NotInitializedError):
        KEPT["sync"].list_executions()
"""

EXPECTED = {
    "test_executes_a_workflow", "test_the_executor_was_shut_down_after_its_test",
    "test_run_task_applies_retries", "test_run_task_runs_an_async_task_alone",
    "test_run_task_reports_a_failure_without_raising", "test_run_task_of_an_unknown_task_raises",
    "test_sync_fixture_runs_a_task_alone", "test_the_sync_executor_was_shut_down_after_its_test",
}


@pytest.mark.timeout(300)
def test_fixtures_and_run_task(tmp_path, child_env):
    report = run_pytest(tmp_path, child_env, WORKFLOW_TESTS)
    assert report.outcomes == {name: "passed" for name in EXPECTED}, report


@pytest.mark.timeout(300)
def test_without_autoload_p_enables_the_plugin(tmp_path, child_env):
    """The documented route where plugins are not auto-loaded: ``-p cloacina`` (the entry point's
    name), or ``-p cloacina.pytest_plugin`` where the distribution is not installed."""
    env = dict(child_env, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    plugin = "cloacina" if ENTRY_POINT_INSTALLED else PLUGIN
    report = run_pytest(tmp_path, env, WORKFLOW_TESTS, plugin_args=["-p", "asyncio", "-p", plugin])
    assert report.outcomes == {name: "passed" for name in EXPECTED}, report


NEEDS_PYTEST_ASYNCIO = """
import pytest

import cloacina


async def test_async_fixture(cloacina_executor):
    raise AssertionError("must be skipped before it runs")


def test_sync_fixture(cloacina_sync_executor):
    assert cloacina_sync_executor.list_executions() == []
"""

HIDE_PYTEST_ASYNCIO = """
import importlib.abc, sys

class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pytest_asyncio":
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by test)", name=name)
        return None

sys.meta_path.insert(0, _Hide())
"""


@pytest.mark.timeout(300)
def test_without_pytest_asyncio_the_async_fixture_skips(tmp_path, child_env):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(HIDE_PYTEST_ASYNCIO)
    env = dict(child_env, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
               PYTHONPATH=os.pathsep.join([str(shim), child_env["PYTHONPATH"]]))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    plugin = "cloacina" if ENTRY_POINT_INSTALLED else PLUGIN
    report = run_pytest(run_dir, env, NEEDS_PYTEST_ASYNCIO, ini="[pytest]\nfilterwarnings = error\n",
                        plugin_args=["-p", plugin])
    assert report.outcomes == {"test_async_fixture": "skipped", "test_sync_fixture": "passed"}, report
    assert "needs pytest-asyncio" in report.messages["test_async_fixture"], report


NEEDS_A_URL = """
import pytest


@pytest.mark.asyncio
async def test_async_fixture(cloacina_executor):
    raise AssertionError("must be skipped")


def test_sync_fixture(cloacina_sync_executor):
    raise AssertionError("must be skipped")
"""


@pytest.mark.postgres_only
@pytest.mark.timeout(300)
def test_postgres_without_a_database_url_skips(tmp_path, subprocess_env):
    env = dict(subprocess_env, CLOACINA_BACKEND=BACKEND)
    env.pop("CLOACINA_TEST_DATABASE_URL", None)
    report = run_pytest(tmp_path, env, NEEDS_A_URL)
    assert report.outcomes == {"test_async_fixture": "skipped", "test_sync_fixture": "skipped"}, report
    for message in report.messages.values():
        assert "set CLOACINA_TEST_DATABASE_URL" in message, report

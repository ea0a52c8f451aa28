"""The `cloacina` dispatcher package binds exactly one installed backend.

Each scenario runs in a child interpreter whose environment the test controls.
A shim directory on PYTHONPATH can hold a ``sitecustomize.py`` that makes
named modules unimportable (a ``sys.meta_path`` blocker), so "none installed",
"only sqlite" and "only postgres" can be exercised for real against the
installed dispatcher. The sqlite venv holds only ``cloacina-sqlite``; the
postgres venv holds both real wheels. Where the real postgres wheel is absent,
a stand-in ``cloacina_postgres`` package in the shim plays it for the "both
installed" scenarios.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import pytest

from backend import BACKEND, cl

REAL_SQLITE = importlib.util.find_spec("cloacina_sqlite") is not None
REAL_POSTGRES = importlib.util.find_spec("cloacina_postgres") is not None
needs_sqlite_wheel = pytest.mark.skipif(not REAL_SQLITE, reason="scenarios built around the real sqlite wheel")

EXPORTED = [
    "task", "Workflow", "UnifiedExecutor", "CloacinaError", "DatabaseError", "WorkflowError",
    "ConfigurationError", "NotInitializedError", "ContextError", "SkipTask",
    "ExecutionNotFoundError", "ExecutionStateError", "ScheduleNotFoundError", "LimitNotFoundError", "current_task",
    "EXECUTION_STATUSES", "FINAL_EXECUTION_STATUSES", "TASK_STATUSES", "FINAL_TASK_STATUSES",
    "DEFAULT_MAX_CONCURRENCY", "DEFAULT_LEASE_TIMEOUT", "DEFAULT_LIST_LIMIT",
    "AttemptRecord", "CurrentTask", "ExecutionResult", "LimitInfo", "MapCounts", "RunningTask", "ScheduleInfo", "TaskInstance",
    "TaskResult", "WorkerInfo", "sleep", "wait_for_event", "TaskRef", "Snooze", "subworkflow",
]

SITECUSTOMIZE = textwrap.dedent(
    """
    import os, sys, importlib.abc

    _BLOCKED = {m for m in os.environ.get("CLOACINA_TEST_BLOCK", "").split(",") if m}

    class _Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in _BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by test)", name=name)
            return None

    sys.meta_path.insert(0, _Blocker())
    """
)

FAKE_POSTGRES = textwrap.dedent(
    """
    \"\"\"Stand-in for the postgres wheel: same names, no engine.\"\"\"
    __version__ = "0.0.0+fake"

    class CloacinaError(Exception): pass
    class DatabaseError(CloacinaError): pass
    class WorkflowError(CloacinaError, ValueError): pass
    class ConfigurationError(CloacinaError, ValueError): pass
    class NotInitializedError(CloacinaError, RuntimeError): pass
    class ContextError(CloacinaError, TypeError): pass
    class ExecutionNotFoundError(CloacinaError, LookupError): pass
    class ExecutionStateError(CloacinaError, ValueError): pass
    class ScheduleNotFoundError(CloacinaError, LookupError): pass
    class LimitNotFoundError(CloacinaError, LookupError): pass
    class SkipTask(Exception): pass
    class Snooze(Exception): pass
    class TaskRef: pass

    def sleep(task_id, seconds=None, *, until=None, dependencies=()):
        return TaskRef()

    def wait_for_event(task_id, *, key, timeout=None, on_timeout="fail", dependencies=()):
        return TaskRef()

    def subworkflow(workflow, *, task_id=None, dependencies=(), input_keys=None, map_over=None,
                    map_item="item", retries=0, timeout=None):
        return TaskRef()

    def current_task():
        raise RuntimeError("fake")

    def task(task_id=None, *, dependencies=()):
        def register(fn):
            return fn
        return register

    class Workflow:
        pass

    class UnifiedExecutor:
        pass

    EXECUTION_STATUSES = FINAL_EXECUTION_STATUSES = TASK_STATUSES = FINAL_TASK_STATUSES = ()
    DEFAULT_MAX_CONCURRENCY = DEFAULT_LIST_LIMIT = 1
    DEFAULT_LEASE_TIMEOUT = 1.0
    AttemptRecord = CurrentTask = ExecutionResult = RunningTask = ScheduleInfo = TaskResult = WorkerInfo = dict
    MapCounts = TaskInstance = LimitInfo = dict
    """
)

PROBE = textwrap.dedent(
    """
    import json, sys
    try:
        import cloacina
    except ImportError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        sys.exit(0)
    backend_module = sys.modules["cloacina_" + cloacina.backend]
    print(json.dumps({
        "backend": cloacina.backend,
        "available": cloacina.available_backends(),
        "backend_version": cloacina.backend_version,
        "version": cloacina.__version__,
        "all": sorted(cloacina.__all__),
        "same_objects": all(getattr(cloacina, n) is getattr(backend_module, n) for n in %r),
        "loaded": sorted(m for m in ("cloacina_sqlite", "cloacina_postgres") if m in sys.modules),
    }))
    """
    % (EXPORTED,)
)


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    directory = tmp_path / "shim"
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return directory


@pytest.fixture
def with_postgres(shim: Path) -> Tuple[Path, str]:
    """A shim under which postgres is installed: the real wheel if present, else the stand-in.

    Returns the shim and the ``backend_version`` the dispatcher should then report.
    """
    if REAL_POSTGRES:
        import cloacina_postgres

        return shim, cloacina_postgres.__version__
    package = shim / "cloacina_postgres"
    package.mkdir()
    (package / "__init__.py").write_text(FAKE_POSTGRES)
    return shim, "0.0.0+fake"


def run_probe(shim: Path, tmp_path: Path, backend: Optional[str] = None,
              block: Sequence[str] = ()) -> Dict[str, object]:
    env = dict(os.environ)
    env.pop("CLOACINA_BACKEND", None)
    env.pop("PYTHONPATH", None)
    env["PYTHONPATH"] = str(shim)
    env["CLOACINA_TEST_BLOCK"] = ",".join(block)
    if backend is not None:
        env["CLOACINA_BACKEND"] = backend
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def can_import(shim: Path, module: str, block: Sequence[str]) -> bool:
    env = dict(os.environ, PYTHONPATH=str(shim), CLOACINA_TEST_BLOCK=",".join(block))
    code = f"import importlib, sys\ntry:\n    importlib.import_module({module!r})\nexcept ImportError:\n    sys.exit(3)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode in (0, 3), proc.stderr
    return proc.returncode == 0


# --- in this process -------------------------------------------------------------------------

async def test_dispatcher_in_process_runs_a_workflow(executor, ids):
    import cloacina

    expected = os.environ.get("CLOACINA_BACKEND") or cloacina.available_backends()[0]
    assert cloacina.backend == expected
    assert BACKEND in cloacina.available_backends()
    assert cloacina.__version__ == "0.1.0"
    assert cloacina.__version__ == importlib.metadata.version("cloacina")
    for name in EXPORTED + ["backend", "backend_version", "available_backends", "__version__"]:
        assert name in cloacina.__all__
        assert hasattr(cloacina, name)
    if cloacina.backend != BACKEND:
        pytest.skip(f"dispatcher bound {cloacina.backend}, suite tests {BACKEND}")
    assert cloacina.backend_version == cl.__version__
    assert all(getattr(cloacina, n) is getattr(cl, n) for n in EXPORTED)

    @cloacina.task(ids("hello"))
    def hello(ctx):
        return {"greeting": f"hello {ctx['who']}"}

    result = await executor.execute(cloacina.Workflow(ids.wf(), [hello]), {"who": "dispatcher"})
    assert result["final_context"]["greeting"] == "hello dispatcher"


def test_dispatcher_ships_type_information():
    import cloacina

    package = Path(cloacina.__file__).parent
    assert (package / "py.typed").is_file()
    assert (package / "__init__.pyi").is_file()
    assert "site-packages" in str(package), f"tests must import the installed package, not {package}"


# --- child interpreters ----------------------------------------------------------------------

def test_blocker_really_hides_modules(shim):
    module = f"cloacina_{BACKEND}"
    assert can_import(shim, module, block=())
    assert not can_import(shim, module, block=[module])
    assert can_import(shim, "cloacina_postgres", block=()) is REAL_POSTGRES


@needs_sqlite_wheel
def test_only_sqlite_installed(shim, tmp_path):
    out = run_probe(shim, tmp_path, block=["cloacina_postgres"])
    assert out["backend"] == "sqlite"
    assert out["available"] == ["sqlite"]
    assert out["same_objects"] is True
    assert out["loaded"] == ["cloacina_sqlite"]
    assert out["version"] == "0.1.0"
    import cloacina_sqlite

    assert out["backend_version"] == cloacina_sqlite.__version__
    assert out["all"] == sorted(EXPORTED + ["SyncExecutor", "backend", "backend_version", "available_backends",
                                            "__version__"])


def test_unblocked_environment_is_what_the_venv_holds(shim, tmp_path):
    """The sqlite venv holds only the sqlite wheel; the postgres venv holds both."""
    out = run_probe(shim, tmp_path)
    expected = [name for name, real in (("postgres", REAL_POSTGRES), ("sqlite", REAL_SQLITE)) if real]
    assert out["available"] == expected
    assert out["backend"] == expected[0]
    assert out["loaded"] == [f"cloacina_{expected[0]}"]
    assert BACKEND in expected


def test_override_selects_installed_backend(shim, tmp_path):
    out = run_probe(shim, tmp_path, backend=BACKEND)
    assert out["backend"] == BACKEND
    assert out["loaded"] == [f"cloacina_{BACKEND}"]
    assert out["backend_version"] == cl.__version__


@needs_sqlite_wheel
def test_override_naming_missing_backend(shim, tmp_path):
    out = run_probe(shim, tmp_path, backend="postgres", block=["cloacina_postgres"])
    assert out.get("error") in ("ImportError", "ModuleNotFoundError"), out
    assert "pip install cloacina-postgres" in out["message"]


@pytest.mark.parametrize("name", ["mysql", "sqlite3", "oracle"])
def test_override_with_unknown_name(shim, tmp_path, name):
    out = run_probe(shim, tmp_path, backend=name)
    assert out.get("error") in ("ImportError", "ModuleNotFoundError"), out
    message = out["message"]
    assert name in message
    assert "postgres" in message and "sqlite" in message


def test_no_backend_installed(shim, tmp_path):
    out = run_probe(shim, tmp_path, block=["cloacina_sqlite", "cloacina_postgres"])
    assert out.get("error") in ("ImportError", "ModuleNotFoundError"), out
    assert "pip install cloacina-sqlite" in out["message"]
    assert "pip install cloacina-postgres" in out["message"]


def test_override_naming_hidden_sqlite(shim, tmp_path):
    out = run_probe(shim, tmp_path, backend="sqlite", block=["cloacina_sqlite"])
    assert out.get("error") in ("ImportError", "ModuleNotFoundError"), out
    assert "cloacina-sqlite" in out["message"]


@needs_sqlite_wheel
def test_both_installed_prefers_postgres(with_postgres, tmp_path):
    shim, postgres_version = with_postgres
    out = run_probe(shim, tmp_path)
    assert out["available"] == ["postgres", "sqlite"]
    assert out["backend"] == "postgres"
    assert out["backend_version"] == postgres_version
    assert out["same_objects"] is True
    assert out["loaded"] == ["cloacina_postgres"], "exactly one backend is imported"


@needs_sqlite_wheel
def test_both_installed_override_sqlite(with_postgres, tmp_path):
    shim, _ = with_postgres
    out = run_probe(shim, tmp_path, backend="sqlite")
    assert out["available"] == ["postgres", "sqlite"]
    assert out["backend"] == "sqlite"
    assert out["same_objects"] is True
    assert out["loaded"] == ["cloacina_sqlite"]


@needs_sqlite_wheel
@pytest.mark.parametrize("override", ["sqlite", "SQLite", " postgres ", None])
def test_both_installed_override_is_case_and_space_insensitive(with_postgres, tmp_path, override):
    shim, _ = with_postgres
    out = run_probe(shim, tmp_path, backend=override)
    assert out["backend"] == (override or "postgres").strip().lower()


def test_only_postgres_installed(with_postgres, tmp_path):
    shim, postgres_version = with_postgres
    out = run_probe(shim, tmp_path, block=["cloacina_sqlite"])
    assert out["available"] == ["postgres"]
    assert out["backend"] == "postgres"
    assert out["backend_version"] == postgres_version
    assert out["loaded"] == ["cloacina_postgres"]


@needs_sqlite_wheel
def test_empty_override_means_no_override(with_postgres, tmp_path):
    shim, _ = with_postgres
    out = run_probe(shim, tmp_path, backend="")
    assert out["backend"] == "postgres"


RUN_THROUGH_DISPATCHER = textwrap.dedent(
    """
    import asyncio, json, sys
    import cloacina

    @cloacina.task("double")
    def double(ctx):
        return {"y": ctx["x"] * 2}

    async def main():
        ex = cloacina.UnifiedExecutor()
        await ex.initialize(sys.argv[1])
        try:
            result = await ex.execute(cloacina.Workflow("dispatched", [double]), {"x": 21})
        finally:
            await ex.shutdown()
        print(json.dumps({
            "backend": cloacina.backend,
            "status": result["status"],
            "final": result["final_context"],
            "loaded": sorted(m for m in ("cloacina_sqlite", "cloacina_postgres") if m in sys.modules),
        }))

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not (REAL_SQLITE and REAL_POSTGRES), reason="needs both real wheels installed")
@pytest.mark.parametrize("choice", ["sqlite", "default"])
def test_both_real_wheels_installed_run_the_chosen_engine(tmp_path, choice, request):
    """With both wheels installed, the default binds the real postgres engine; CLOACINA_BACKEND=sqlite
    binds the real sqlite engine. Each runs a workflow on its own kind of database."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if choice == "sqlite":
        env["CLOACINA_BACKEND"] = "sqlite"
        url = f"sqlite:///{tmp_path / 'dispatched.db'}"
    else:
        env.pop("CLOACINA_BACKEND", None)
        if BACKEND != "postgres":
            pytest.skip("needs the postgres server of the postgres run")
        import pg_admin

        url = pg_admin.database_url(request.getfixturevalue("postgres_database"))
    proc = subprocess.run([sys.executable, "-c", RUN_THROUGH_DISPATCHER, url], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = "sqlite" if choice == "sqlite" else "postgres"
    assert out == {"backend": expected, "status": "Completed", "final": {"x": 21, "y": 42},
                   "loaded": [f"cloacina_{expected}"]}

"""The `cloacina` dispatcher package binds exactly one installed backend.

Each scenario runs in a child interpreter whose environment the test controls.
A shim directory on PYTHONPATH can hold a ``sitecustomize.py`` that makes
named modules unimportable (a ``sys.meta_path`` blocker) and a stand-in
``cloacina_postgres`` package, so "none installed", "only postgres" and "both
installed" can be exercised for real against the installed dispatcher.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Optional, Sequence

import pytest

from backend import BACKEND, cl

needs_sqlite = pytest.mark.skipif(BACKEND != "sqlite", reason="scenarios built around the sqlite wheel")

EXPORTED = [
    "task", "Workflow", "UnifiedExecutor", "CloacinaError", "DatabaseError", "WorkflowError",
    "ConfigurationError", "NotInitializedError", "ContextError",
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

    def task(task_id=None, *, dependencies=()):
        def register(fn):
            return fn
        return register

    class Workflow:
        pass

    class UnifiedExecutor:
        pass
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
def fake_postgres(shim: Path) -> Path:
    package = shim / "cloacina_postgres"
    package.mkdir()
    (package / "__init__.py").write_text(FAKE_POSTGRES)
    return shim


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

@needs_sqlite
def test_blocker_really_hides_modules(shim):
    assert can_import(shim, "cloacina_sqlite", block=())
    assert not can_import(shim, "cloacina_sqlite", block=["cloacina_sqlite"])
    assert not can_import(shim, "cloacina_postgres", block=())


@needs_sqlite
def test_only_sqlite_installed(shim, tmp_path):
    out = run_probe(shim, tmp_path)
    assert out["backend"] == "sqlite"
    assert out["available"] == ["sqlite"]
    assert out["same_objects"] is True
    assert out["loaded"] == ["cloacina_sqlite"]
    assert out["version"] == "0.1.0"
    assert out["backend_version"] == cl.__version__
    assert out["all"] == sorted(EXPORTED + ["backend", "backend_version", "available_backends", "__version__"])


@needs_sqlite
def test_override_selects_installed_backend(shim, tmp_path):
    out = run_probe(shim, tmp_path, backend="sqlite")
    assert out["backend"] == "sqlite"
    assert out["loaded"] == ["cloacina_sqlite"]


@needs_sqlite
def test_override_naming_missing_backend(shim, tmp_path):
    out = run_probe(shim, tmp_path, backend="postgres")
    assert out.get("error") in ("ImportError", "ModuleNotFoundError"), out
    assert "pip install cloacina-postgres" in out["message"]


@pytest.mark.parametrize("name", ["mysql", "sqlite3", "oracle"])
def test_override_with_unknown_name(shim, tmp_path, name):
    out = run_probe(shim, tmp_path, backend=name)
    assert out.get("error") in ("ImportError", "ModuleNotFoundError"), out
    message = out["message"]
    assert name in message
    assert "postgres" in message and "sqlite" in message


@needs_sqlite
def test_no_backend_installed(shim, tmp_path):
    out = run_probe(shim, tmp_path, block=["cloacina_sqlite", "cloacina_postgres"])
    assert out.get("error") in ("ImportError", "ModuleNotFoundError"), out
    assert "pip install cloacina-sqlite" in out["message"]
    assert "pip install cloacina-postgres" in out["message"]


@needs_sqlite
def test_override_naming_hidden_sqlite(shim, tmp_path):
    out = run_probe(shim, tmp_path, backend="sqlite", block=["cloacina_sqlite"])
    assert out.get("error") in ("ImportError", "ModuleNotFoundError"), out
    assert "cloacina-sqlite" in out["message"]


@needs_sqlite
def test_both_installed_prefers_postgres(fake_postgres, tmp_path):
    out = run_probe(fake_postgres, tmp_path)
    assert out["available"] == ["postgres", "sqlite"]
    assert out["backend"] == "postgres"
    assert out["backend_version"] == "0.0.0+fake"
    assert out["same_objects"] is True
    assert out["loaded"] == ["cloacina_postgres"], "exactly one backend is imported"


@needs_sqlite
def test_both_installed_override_sqlite(fake_postgres, tmp_path):
    out = run_probe(fake_postgres, tmp_path, backend="sqlite")
    assert out["available"] == ["postgres", "sqlite"]
    assert out["backend"] == "sqlite"
    assert out["loaded"] == ["cloacina_sqlite"]


@needs_sqlite
def test_only_postgres_installed(fake_postgres, tmp_path):
    out = run_probe(fake_postgres, tmp_path, block=["cloacina_sqlite"])
    assert out["available"] == ["postgres"]
    assert out["backend"] == "postgres"
    assert out["loaded"] == ["cloacina_postgres"]


@needs_sqlite
def test_empty_override_means_no_override(fake_postgres, tmp_path):
    out = run_probe(fake_postgres, tmp_path, backend="")
    assert out["backend"] == "postgres"

"""`angreal task python_tests`: Rust tests, then the Python suite once per backend.

Steps, each streamed to the terminal:
1. ``cargo test --workspace``.
2. Per backend, a fresh venv under ``target/python-tests/venv-<backend>`` with the test tools.
3. ``maturin build --release`` of each wheel the selected backends need, once, into
   ``target/python-tests/wheels-<wheel>``.
4. Installs: the sqlite venv gets ``cloacina-sqlite`` and the dispatcher; the postgres venv gets
   both wheels and the dispatcher (for the cross-backend and "both installed" tests).
5. ``pytest`` run by the venv's interpreter from ``python-tests/`` (so the installed packages, not
   the source tree, are imported) with ``CLOACINA_TEST_BACKEND=<backend>``. For postgres the suite
   uses ``CLOACINA_TEST_POSTGRES_URL`` when set; otherwise a throwaway server is started for the
   run and always stopped afterwards (see ``postgres_server.py``).

The cargo target dir is the repo's ``target/`` for every step so builds are cached.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import angreal

from build_steps import build_env, build_wheel, repo_root, run_step, venv_bin
from postgres_server import INSTALL_HINT, PostgresUnavailable, find_binaries, throwaway_postgres

task = angreal.command_group(name="task", about="Cloacina development tasks")

BACKENDS = ("sqlite", "postgres")
# Wheels installed in each backend's venv besides the dispatcher; the backend's own wheel first.
WHEELS_FOR: Dict[str, Sequence[str]] = {
    "sqlite": ("sqlite",),
    "postgres": ("postgres", "sqlite"),
}
TEST_TOOLS = ("maturin>=1.5,<2", "pytest>=8", "pytest-asyncio>=0.24", "pytest-timeout>=2.3", "hypothesis>=6.100",
              "mypy>=1.10", "opentelemetry-api>=1.20", "opentelemetry-sdk>=1.20",
              "selenium>=4.10")


def _fresh_venv(root: Path, backend: str, env: Dict[str, str]) -> Optional[Path]:
    venv = root / "target" / "python-tests" / f"venv-{backend}"
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not run_step(f"venv ({backend})", [sys.executable, "-m", "venv", str(venv)], root, env):
        return None
    python = venv_bin(venv, "python")
    if not run_step(f"test tools ({backend})", [python, "-m", "pip", "install", "--quiet", *TEST_TOOLS], root, env):
        return None
    return venv


def _install(root: Path, venv: Path, backend: str, wheels: Sequence[Path], env: Dict[str, str]) -> bool:
    cmd = [venv_bin(venv, "python"), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps",
           *wheels, root / "cloacina-dispatcher"]
    return run_step(f"install wheels ({backend})", cmd, root, env)


def _pytest(root: Path, venv: Path, backend: str, env: Dict[str, str], extra: Dict[str, str]) -> bool:
    test_env = dict(env)
    test_env.update(extra)
    test_env["CLOACINA_TEST_BACKEND"] = backend
    test_env.pop("CLOACINA_BACKEND", None)
    cmd = [venv_bin(venv, "python"), "-m", "pytest", "-p", "no:cacheprovider", "--durations=5"]
    return run_step(f"pytest ({backend})", cmd, root / "python-tests", test_env)


def _pytest_postgres(root: Path, venv: Path, env: Dict[str, str]) -> bool:
    """Run the suite against CLOACINA_TEST_POSTGRES_URL, or a throwaway server started here."""
    if env.get("CLOACINA_TEST_POSTGRES_URL"):
        print("==> [postgres] using the server at CLOACINA_TEST_POSTGRES_URL", flush=True)
        return _pytest(root, venv, "postgres", env, {})
    binaries = find_binaries()
    if binaries is None:
        print(f"\n==> [postgres] cannot test the postgres backend: {INSTALL_HINT}", flush=True)
        return False
    print(f"\n==> [postgres server] starting a throwaway PostgreSQL from {binaries.bin_dir}", flush=True)
    try:
        with throwaway_postgres(binaries) as server:
            print(f"==> [postgres server] ready on 127.0.0.1:{server.port} in {server.startup_seconds:.1f}s "
                  f"(data in {server.base_dir})", flush=True)
            ok = _pytest(root, venv, "postgres", env, server.test_environment())
    except PostgresUnavailable as exc:
        print(f"==> [postgres server] FAILED: {exc}", flush=True)
        return False
    print("==> [postgres server] stopped and removed", flush=True)
    return ok


def _test_backend(root: Path, venv: Path, backend: str, wheels: Dict[str, Path], env: Dict[str, str]) -> List[str]:
    """Install and test one backend. Returns the names of failed steps."""
    if not _install(root, venv, backend, [wheels[w] for w in WHEELS_FOR[backend]], env):
        return [f"install-{backend}"]
    ok = _pytest_postgres(root, venv, env) if backend == "postgres" else _pytest(root, venv, backend, env, {})
    return [] if ok else [f"pytest-{backend}"]


@task()
@angreal.command(name="python_tests", about="Run cargo tests, build the wheels and run the Python suite per backend")
@angreal.argument(name="backend", long="backend", help="one backend to test: sqlite or postgres (default: both)",
                  required=False)
def python_tests(backend: Optional[str] = None) -> int:
    started = time.monotonic()
    root = repo_root()
    env = build_env(root)
    selected = [backend] if backend else list(BACKENDS)
    unknown = [b for b in selected if b not in BACKENDS]
    if unknown:
        print(f"unknown backend(s) {unknown}; choose from {list(BACKENDS)}", flush=True)
        return 2

    failed: List[str] = []
    if not run_step("cargo test", ["cargo", "test", "--workspace"], root, env):
        failed.append("cargo-test")

    venvs: Dict[str, Path] = {}
    for name in selected:
        venv = _fresh_venv(root, name, env)
        if venv is None:
            failed.append(f"venv-{name}")
        else:
            venvs[name] = venv

    wheels: Dict[str, Path] = {}
    if venvs:
        builder = next(iter(venvs.values()))
        needed = [w for w in BACKENDS if any(w in WHEELS_FOR[b] for b in venvs)]
        for wheel in needed:
            built = build_wheel(root, builder, wheel, root / "target" / "python-tests" / f"wheels-{wheel}", env)
            if built is None:
                failed.append(f"build-{wheel}")
            else:
                wheels[wheel] = built

    for name, venv in venvs.items():
        missing = [w for w in WHEELS_FOR[name] if w not in wheels]
        if missing:
            print(f"==> [{name}] skipped: wheel(s) {missing} did not build", flush=True)
            continue
        failed.extend(_test_backend(root, venv, name, wheels, env))

    elapsed = time.monotonic() - started
    if failed:
        print(f"\npython_tests: FAILED ({', '.join(failed)}) after {elapsed:.0f}s", flush=True)
        return 1
    print(f"\npython_tests: all steps ok ({', '.join(selected)}) in {elapsed:.0f}s", flush=True)
    return 0

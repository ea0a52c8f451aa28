"""`angreal task python_tests`: Rust tests, then the Python suite against built wheels.

Steps, each streamed to the terminal:
1. ``cargo test --workspace``.
2. A fresh venv under ``target/python-tests/venv-<backend>`` with the test tools.
3. ``maturin build --release`` of ``cloacina-<backend>`` into ``target/python-tests/wheels-<backend>``,
   then ``pip install`` of that wheel and of ``./cloacina-dispatcher``.
4. ``pytest`` run by the venv's interpreter from ``python-tests/`` so the
   installed packages (not the source tree) are imported.

The cargo target dir is the repo's ``target/`` for every step so builds are cached.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import angreal

task = angreal.command_group(name="task", about="Cloacina development tasks")

BACKENDS = ("sqlite",)
TEST_TOOLS = ("maturin>=1.5,<2", "pytest>=8", "pytest-asyncio>=0.24", "pytest-timeout>=2.3", "mypy>=1.10")


def _repo_root() -> Path:
    return Path(angreal.get_root()).resolve().parent


def _build_env(root: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = str(root / "target")
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return env


def _run(step: str, cmd: Sequence[str], cwd: Path, env: Dict[str, str]) -> bool:
    print(f"\n==> [{step}] {' '.join(str(c) for c in cmd)}", flush=True)
    started = time.monotonic()
    result = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=env)
    elapsed = time.monotonic() - started
    outcome = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
    print(f"==> [{step}] {outcome} in {elapsed:.1f}s", flush=True)
    return result.returncode == 0


def _venv_bin(venv: Path, name: str) -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    return venv / scripts / (name + (".exe" if os.name == "nt" else ""))


def _fresh_venv(root: Path, backend: str, env: Dict[str, str]) -> Optional[Path]:
    venv = root / "target" / "python-tests" / f"venv-{backend}"
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not _run("venv", [sys.executable, "-m", "venv", str(venv)], root, env):
        return None
    python = _venv_bin(venv, "python")
    if not _run("test tools", [python, "-m", "pip", "install", "--quiet", *TEST_TOOLS], root, env):
        return None
    return venv


def _build_wheel(root: Path, venv: Path, backend: str, env: Dict[str, str]) -> Optional[Path]:
    wheels = root / "target" / "python-tests" / f"wheels-{backend}"
    if wheels.exists():
        shutil.rmtree(wheels)
    manifest = root / f"cloacina-{backend}" / "Cargo.toml"
    cmd: List[object] = [_venv_bin(venv, "maturin"), "build", "--release", "-m", manifest, "-o", wheels,
                         "--interpreter", _venv_bin(venv, "python")]
    if not _run(f"build cloacina-{backend}", cmd, root, env):
        return None
    built = sorted(wheels.glob("*.whl"))
    if len(built) != 1:
        print(f"==> expected one wheel in {wheels}, found {[w.name for w in built]}", flush=True)
        return None
    return built[0]


def _install(root: Path, venv: Path, wheel: Path, env: Dict[str, str]) -> bool:
    cmd = [_venv_bin(venv, "python"), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps",
           wheel, root / "cloacina-dispatcher"]
    return _run("install wheels", cmd, root, env)


def _pytest(root: Path, venv: Path, backend: str, env: Dict[str, str]) -> bool:
    test_env = dict(env)
    test_env["CLOACINA_TEST_BACKEND"] = backend
    test_env.pop("CLOACINA_BACKEND", None)
    cmd = [_venv_bin(venv, "python"), "-m", "pytest", "-p", "no:cacheprovider"]
    return _run(f"pytest ({backend})", cmd, root / "python-tests", test_env)


def _run_backend(root: Path, backend: str, env: Dict[str, str]) -> List[str]:
    """Build, install and test one backend. Returns the names of failed steps."""
    venv = _fresh_venv(root, backend, env)
    if venv is None:
        return [f"venv-{backend}"]
    wheel = _build_wheel(root, venv, backend, env)
    if wheel is None:
        return [f"build-{backend}"]
    if not _install(root, venv, wheel, env):
        return [f"install-{backend}"]
    if not _pytest(root, venv, backend, env):
        return [f"pytest-{backend}"]
    return []


@task()
@angreal.command(name="python_tests", about="Run cargo tests, build the wheels and run the Python test suite")
@angreal.argument(name="backend", long="backend", help="backend to test (default: sqlite)", required=False)
def python_tests(backend: Optional[str] = None) -> int:
    started = time.monotonic()
    root = _repo_root()
    env = _build_env(root)
    selected = [backend] if backend else list(BACKENDS)
    unknown = [b for b in selected if b not in BACKENDS]
    if unknown:
        print(f"unknown backend(s) {unknown}; choose from {list(BACKENDS)}", flush=True)
        return 2

    failed: List[str] = []
    if not _run("cargo test", ["cargo", "test", "--workspace"], root, env):
        failed.append("cargo-test")
    for name in selected:
        failed.extend(_run_backend(root, name, env))

    elapsed = time.monotonic() - started
    if failed:
        print(f"\npython_tests: FAILED ({', '.join(failed)}) after {elapsed:.0f}s", flush=True)
        return 1
    print(f"\npython_tests: all steps ok ({', '.join(selected)}) in {elapsed:.0f}s", flush=True)
    return 0

"""Build steps shared by the angreal tasks: paths, environment, logged commands, wheels."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import angreal


def repo_root() -> Path:
    """The repository root (the parent of `.angreal/`)."""
    return Path(angreal.get_root()).resolve().parent


def build_env(root: Path) -> Dict[str, str]:
    """The environment for builds and child processes: one shared cargo target dir, no outer venv."""
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = str(root / "target")
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return env


def run_step(step: str, cmd: Sequence[object], cwd: Path, env: Dict[str, str]) -> bool:
    """Run and time a command, streaming its output; True if it succeeded."""
    print(f"\n==> [{step}] {' '.join(str(c) for c in cmd)}", flush=True)
    started = time.monotonic()
    result = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=env)
    elapsed = time.monotonic() - started
    outcome = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
    print(f"==> [{step}] {outcome} in {elapsed:.1f}s", flush=True)
    return result.returncode == 0


def venv_bin(venv: Path, name: str) -> Path:
    """The path of a program inside a virtualenv."""
    scripts = "Scripts" if os.name == "nt" else "bin"
    return venv / scripts / (name + (".exe" if os.name == "nt" else ""))


def build_wheel(root: Path, venv: Path, wheel: str, wheels: Path, env: Dict[str, str]) -> Optional[Path]:
    """`maturin build --release` of ``cloacina-<wheel>`` into the empty directory ``wheels``."""
    if wheels.exists():
        shutil.rmtree(wheels)
    manifest = root / f"cloacina-{wheel}" / "Cargo.toml"
    cmd: List[object] = [venv_bin(venv, "maturin"), "build", "--release", "-m", manifest, "-o", wheels,
                         "--interpreter", venv_bin(venv, "python")]
    if not run_step(f"build cloacina-{wheel}", cmd, root, env):
        return None
    built = sorted(wheels.glob("*.whl"))
    if len(built) != 1:
        print(f"==> expected one wheel in {wheels}, found {[w.name for w in built]}", flush=True)
        return None
    return built[0]

"""Build steps shared by the angreal tasks: paths, environment, logged commands, virtualenvs, wheels.

The release wheels of the three packages are built by ``build_release_wheel`` into ``dist/`` at the
repo root; ``angreal task wheels`` builds them all, ``angreal task python_tests`` builds the ones it
tests and installs exactly those files.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Dict, List, Optional, Sequence, Set, Tuple

import angreal

# Tools of the venv that builds the wheels: maturin for the two backends, setuptools for the dispatcher.
BUILD_TOOLS = ("maturin>=1.9,<2", "setuptools>=77")


@dataclass(frozen=True)
class WheelProject:
    """One of the three Python packages of the repository."""

    key: str        # what the tasks call it: sqlite, postgres, dispatcher
    directory: str  # its folder at the repo root
    dist_name: str  # its distribution name as spelled in wheel file names
    native: bool    # built by maturin (abi3, manylinux) rather than setuptools (pure Python)


WHEEL_PROJECTS: Dict[str, WheelProject] = {
    p.key: p for p in (
        WheelProject("sqlite", "cloacina-sqlite", "cloacina_sqlite", native=True),
        WheelProject("postgres", "cloacina-postgres", "cloacina_postgres", native=True),
        WheelProject("dispatcher", "cloacina-dispatcher", "cloacina", native=False),
    )
}

_output_lock = threading.Lock()


def say(text: str) -> None:
    """Print one whole line at once (background steps print too)."""
    with _output_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def repo_root() -> Path:
    """The repository root (the parent of `.angreal/`)."""
    return Path(angreal.get_root()).resolve().parent


def dist_dir(root: Path) -> Path:
    """Where the release wheels go: ``dist/`` at the repo root."""
    return root / "dist"


def build_env(root: Path) -> Dict[str, str]:
    """The environment for builds and child processes: one shared cargo target dir, no outer venv."""
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = str(root / "target")
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return env


def run_step(step: str, cmd: Sequence[object], cwd: Path, env: Dict[str, str], log: Optional[Path] = None) -> bool:
    """Run and time a command; True if it succeeded.

    Its output streams to the terminal, or, with ``log`` (a step running beside another), into that
    file, whose last lines are printed if it fails.
    """
    say(f"\n==> [{step}] {' '.join(str(c) for c in cmd)}" + (f"  (output: {log})" if log else ""))
    started = time.monotonic()
    if log is None:
        returncode = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=env).returncode
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"==> [{step}] {' '.join(str(c) for c in cmd)}\n".encode())
            out.flush()
            returncode = _run_in_background([str(c) for c in cmd], cwd, env, out)
    elapsed = time.monotonic() - started
    outcome = "ok" if returncode == 0 else f"FAILED (exit {returncode})"
    if log is not None and returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        say(f"==> [{step}] last lines of {log}:\n" + "\n".join(tail))
    say(f"==> [{step}] {outcome} in {elapsed:.1f}s" + (" (in the background)" if log else ""))
    STEP_TIMES.append((step, elapsed, returncode == 0))
    return returncode == 0


# (step, seconds, succeeded) of every step run, in the order they ended.
STEP_TIMES: List[Tuple[str, float, bool]] = []
_background_children: Set["subprocess.Popen[bytes]"] = set()


def _run_in_background(cmd: List[str], cwd: Path, env: Dict[str, str], out: IO[bytes]) -> int:
    """Run a command niced (the steps in the foreground, tests among them, come first for the CPU)
    in a process group of its own, so that ``stop_background`` can end it with its children."""
    nice = shutil.which("nice")
    if nice:
        cmd = [nice, "-n", str(BACKGROUND_NICENESS), *cmd]
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=os.name == "posix")
    _background_children.add(proc)
    try:
        return proc.wait()
    finally:
        _background_children.discard(proc)


BACKGROUND_NICENESS = 10


def stop_background() -> None:
    """End the commands still running in the background, with their children (the task is ending)."""
    for proc in list(_background_children):
        say(f"==> stopping a background command (pid {proc.pid})")
        try:
            os.killpg(proc.pid, signal.SIGTERM) if os.name == "posix" else proc.terminate()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()


def print_step_times() -> None:
    """One line per step run: how long it took, and whether it failed."""
    say("\nsteps (in the order they ended):")
    for step, seconds, ok in STEP_TIMES:
        say(f"  {seconds:7.1f}s  {step}{'' if ok else '  FAILED'}")


class Background:
    """Run ``work`` (steps logging to files) in a thread beside the steps in the foreground."""

    def __init__(self, name: str, work: Callable[[], bool]) -> None:
        self.name = name
        self._ok = False
        self._started = time.monotonic()

        def target() -> None:
            try:
                self._ok = work()
            except Exception as exc:  # noqa: BLE001 -- reported as the step's failure
                say(f"==> [{name}] FAILED: {exc!r}")

        say(f"\n==> [{name}] started in the background")
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def wait(self) -> bool:
        """Wait for the work to end; True if every step of it succeeded."""
        if self._thread.is_alive():
            say(f"\n==> [{self.name}] waiting for it to finish")
            self._thread.join()
        return self._ok


def venv_bin(venv: Path, name: str) -> Path:
    """The path of a program inside a virtualenv."""
    scripts = "Scripts" if os.name == "nt" else "bin"
    return venv / scripts / (name + (".exe" if os.name == "nt" else ""))


VENV_MARKER = "cloacina-venv.json"
PROJECT_DISTRIBUTIONS = ("cloacina", "cloacina-sqlite", "cloacina-postgres")


def _venv_key(tools: Sequence[str]) -> str:
    """What a reusable venv must match: the tool list and the interpreter that made it."""
    interpreter = {"version": sys.version, "executable": os.path.realpath(sys.executable)}
    return hashlib.sha256(json.dumps({"tools": list(tools), "python": interpreter}).encode()).hexdigest()


def _freeze(venv: Path, env: Dict[str, str]) -> Optional[str]:
    """What is installed in the venv besides the project's own packages (None if it cannot tell)."""
    exclude = [arg for name in PROJECT_DISTRIBUTIONS for arg in ("--exclude", name)]
    try:
        proc = subprocess.run([str(venv_bin(venv, "python")), "-m", "pip", "freeze", "--all", *exclude],
                              env=env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def ensure_venv(root: Path, venv: Path, tools: Sequence[str], label: str, env: Dict[str, str],
                log: Optional[Path] = None) -> Optional[Path]:
    """A venv at ``venv`` holding ``tools``: the existing one when it was made for the same tools by the
    same interpreter and nothing has been installed or removed in it since (the project's own
    packages aside), otherwise a fresh one. None if it could not be made."""
    marker = venv / VENV_MARKER
    key = _venv_key(tools)
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, ValueError):
            recorded = {}
        if recorded.get("key") == key and recorded.get("freeze") == _freeze(venv, env):
            say(f"\n==> [venv ({label})] reusing {venv} (same tools and interpreter, nothing installed since)")
            return venv
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not run_step(f"venv ({label})", [sys.executable, "-m", "venv", str(venv)], root, env, log):
        return None
    python = venv_bin(venv, "python")
    if not run_step(f"tools ({label})", [python, "-m", "pip", "install", "--quiet", *tools], root, env, log):
        return None
    freeze = _freeze(venv, env)
    if freeze is not None:
        marker.write_text(json.dumps({"key": key, "tools": list(tools), "freeze": freeze}, indent=1))
    return venv


def build_venv(root: Path, env: Dict[str, str], log: Optional[Path] = None) -> Optional[Path]:
    """The venv holding maturin and setuptools, under ``target/``."""
    return ensure_venv(root, root / "target" / "build-venv", BUILD_TOOLS, "build", env, log)


def build_wheel(root: Path, venv: Path, wheel: str, wheels: Path, env: Dict[str, str],
                log: Optional[Path] = None) -> Optional[Path]:
    """Build the release wheel of ``wheel`` (a key of ``WHEEL_PROJECTS``) into the emptied directory
    ``wheels`` and check its tags and metadata; its path, or None if it failed."""
    project = WHEEL_PROJECTS[wheel]
    if wheels.exists():
        shutil.rmtree(wheels)
    source = root / project.directory
    step = f"build {project.directory}"
    cmd: List[object]
    if project.native:
        cmd = [venv_bin(venv, "maturin"), "build", "--release", "-m", source / "Cargo.toml", "-o", wheels,
               "--interpreter", venv_bin(venv, "python")]
    else:
        # From a copy: setuptools would otherwise package whatever an earlier build left in build/lib.
        copy = wheels / "source"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*"))
        cmd = [venv_bin(venv, "python"), "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
               "--wheel-dir", wheels, copy]
    if not run_step(step, cmd, root, env, log):
        return None
    built = sorted(wheels.glob(f"{project.dist_name}-*.whl"))
    if len(built) != 1:
        say(f"==> [{step}] expected one wheel in {wheels}, found {[w.name for w in wheels.glob('*')]}")
        return None
    problems = wheel_problems(built[0], project)
    if problems:
        say(f"==> [{step}] FAILED: {built[0].name}: " + "; ".join(problems))
        return None
    return built[0]


def build_release_wheel(root: Path, venv: Path, wheel: str, env: Dict[str, str],
                        log: Optional[Path] = None) -> Optional[Path]:
    """Build the release wheel of ``wheel`` into ``dist/``, replacing that package's older wheels there.

    ``venv`` holds ``BUILD_TOOLS`` (see ``build_venv``)."""
    project = WHEEL_PROJECTS[wheel]
    built = build_wheel(root, venv, wheel, root / "target" / "wheel-staging" / wheel, env, log)
    if built is None:
        return None
    dist = dist_dir(root)
    dist.mkdir(exist_ok=True)
    for old in dist.glob(f"{project.dist_name}-*.whl"):
        old.unlink()
    released = dist / built.name
    shutil.move(str(built), str(released))
    say(f"==> [build {project.directory}] {released.relative_to(root)}")
    return released


# Metadata fields every wheel must carry (the checks `twine check` makes, and then some).
REQUIRED_METADATA = ("Name", "Version", "Summary", "License-Expression", "Requires-Python", "Author",
                     "Description-Content-Type", "Keywords")


def wheel_problems(wheel: Path, project: WheelProject) -> List[str]:
    """What is wrong with a built wheel's tags or metadata (nothing: an empty list)."""
    problems: List[str] = []
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info_dir = next((n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA")), None)
        if info_dir is None:
            return ["no .dist-info/METADATA"]
        metadata = email.parser.Parser().parsestr(archive.read(f"{info_dir}/METADATA").decode())
        tags = email.parser.Parser().parsestr(archive.read(f"{info_dir}/WHEEL").decode()).get_all("Tag") or []
    problems += [f"no {field}" for field in REQUIRED_METADATA if not metadata.get(field)]
    if not metadata.get_all("Project-URL"):
        problems.append("no Project-URL")
    if len(metadata.get_all("Classifier") or []) < 5:
        problems.append("fewer than 5 classifiers")
    if len(str(metadata.get_payload()).strip()) < 100:
        problems.append("no long description (README)")
    if project.native:
        if not all("-abi3-" in tag for tag in tags):
            problems.append(f"not an abi3 wheel: {tags}")
        if sys.platform.startswith("linux") and not all("manylinux" in tag for tag in tags):
            problems.append(f"not tagged manylinux: {tags} (maturin's audit failed to find a manylinux policy)")
    elif tags != ["py3-none-any"]:
        problems.append(f"a pure-Python wheel should be py3-none-any, not {tags}")
    return problems

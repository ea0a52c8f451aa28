"""`angreal task python_tests`: Rust tests, then the Python suite once per backend, on the release wheels.

Steps, each timed; the ones in the foreground stream to the terminal, the ones beside them write to
``target/python-tests/logs/`` (named when they start, their last lines printed if they fail) and
run niced, so the foreground comes first for the CPU:

1. ``cargo test --workspace``; beside it, the venvs: ``target/build-venv`` (maturin, setuptools) and,
   per backend, ``target/python-tests/venv-<backend>`` with the test tools. A venv is reused when it
   was made for the same tool list by the same interpreter and nothing was installed into it or
   removed since (``build_steps.ensure_venv``); otherwise it is made afresh.
2. The release wheels the first backend needs, built into ``dist/`` by the code of
   ``angreal task wheels`` (``build_steps.build_release_wheel``, which checks tags and metadata). The
   wheels only later backends need are built beside that backend's tests.
3. Per backend: its venv gets exactly those wheel files (the sqlite venv: ``cloacina-sqlite`` and
   the ``cloacina`` dispatcher; the postgres venv: both backend wheels and the dispatcher, for the
   cross-backend and "both installed" tests), then ``pytest`` runs with the venv's interpreter from
   ``python-tests/`` (so the installed packages, not the source tree, are imported; ``test_examples``
   runs ``examples/quickstart.py`` on them) with ``CLOACINA_TEST_BACKEND=<backend>``. For postgres
   the suite uses ``CLOACINA_TEST_POSTGRES_URL`` when set; otherwise a throwaway server is started
   for the run and always stopped afterwards (see ``postgres_server.py``).

A failed step does not stop the others that do not need it; the task then fails, naming every
failed step, and prints the time of each step. The cargo target dir is the repo's ``target/``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import angreal

from build_steps import (PROJECT_DISTRIBUTIONS, Background, build_env, build_release_wheel, build_venv,
                         ensure_venv, print_step_times, repo_root, run_step, say, stop_background, venv_bin)
from postgres_server import INSTALL_HINT, PostgresUnavailable, find_binaries, throwaway_postgres

task = angreal.command_group(name="task", about="Cloacina development tasks")

BACKENDS = ("sqlite", "postgres")
# The wheels installed in each backend's venv: the backend's own first, the dispatcher last.
WHEELS_FOR: Dict[str, Sequence[str]] = {
    "sqlite": ("sqlite", "dispatcher"),
    "postgres": ("postgres", "sqlite", "dispatcher"),
}
TEST_TOOLS = ("pytest>=8", "pytest-asyncio>=0.24", "pytest-timeout>=2.3", "hypothesis>=6.100",
              "mypy>=1.10", "opentelemetry-api>=1.20", "opentelemetry-sdk>=1.20",
              "selenium>=4.10")

class Run:
    """One run of the task: its paths, environment, venvs, wheels and failed steps."""

    def __init__(self, root: Path, selected: List[str]) -> None:
        self.root = root
        self.env = build_env(root)
        self.selected = selected
        self.work = root / "target" / "python-tests"
        self.logs = self.work / "logs"
        self.build_venv: Optional[Path] = None
        self.venvs: Dict[str, Path] = {}
        self.wheels: Dict[str, Path] = {}
        self.attempted: set = set()
        self.failed: List[str] = []

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    # --- venvs ----------------------------------------------------------------------------

    def prepare_venvs(self) -> bool:
        """The build venv and each selected backend's test venv (run beside cargo test)."""
        self.build_venv = build_venv(self.root, self.env, self.log("venvs"))
        for name in self.selected:
            venv = ensure_venv(self.root, self.work / f"venv-{name}", TEST_TOOLS, name, self.env, self.log("venvs"))
            if venv is not None:
                self.venvs[name] = venv
        return self.build_venv is not None and len(self.venvs) == len(self.selected)

    # --- wheels ---------------------------------------------------------------------------

    def build(self, keys: Sequence[str], log: Optional[Path] = None) -> bool:
        """Build those of ``keys`` not tried yet into dist/; True if all of ``keys`` are built."""
        for key in keys:
            if key in self.attempted or self.build_venv is None:
                continue
            self.attempted.add(key)
            wheel = build_release_wheel(self.root, self.build_venv, key, self.env, log)
            if wheel is None:
                self.failed.append(f"build-{key}")
            else:
                self.wheels[key] = wheel
        return all(k in self.wheels for k in keys)

    # --- tests ----------------------------------------------------------------------------

    def install(self, backend: str) -> bool:
        """Exactly this backend's wheels from dist/: other project packages are removed first."""
        python = venv_bin(self.venvs[backend], "python")
        removed = run_step(f"uninstall old wheels ({backend})",
                           [python, "-m", "pip", "uninstall", "--yes", "-qq", *PROJECT_DISTRIBUTIONS],
                           self.root, self.env)
        wheels = [self.wheels[k] for k in WHEELS_FOR[backend]]
        return removed and run_step(f"install wheels ({backend})",
                                    [python, "-m", "pip", "install", "--quiet", "--no-deps", *wheels],
                                    self.root, self.env)

    def pytest(self, backend: str, extra: Dict[str, str]) -> bool:
        test_env = dict(self.env)
        test_env.update(extra)
        test_env["CLOACINA_TEST_BACKEND"] = backend
        test_env.pop("CLOACINA_BACKEND", None)
        cmd = [venv_bin(self.venvs[backend], "python"), "-m", "pytest", "-p", "no:cacheprovider", "--durations=5"]
        return run_step(f"pytest ({backend})", cmd, self.root / "python-tests", test_env)

    def pytest_postgres(self) -> bool:
        """Run the suite against CLOACINA_TEST_POSTGRES_URL, or a throwaway server started here."""
        if self.env.get("CLOACINA_TEST_POSTGRES_URL"):
            say("==> [postgres] using the server at CLOACINA_TEST_POSTGRES_URL")
            return self.pytest("postgres", {})
        binaries = find_binaries()
        if binaries is None:
            say(f"\n==> [postgres] cannot test the postgres backend: {INSTALL_HINT}")
            return False
        say(f"\n==> [postgres server] starting a throwaway PostgreSQL from {binaries.bin_dir}")
        try:
            with throwaway_postgres(binaries) as server:
                say(f"==> [postgres server] ready on 127.0.0.1:{server.port} in {server.startup_seconds:.1f}s "
                    f"(data in {server.base_dir})")
                ok = self.pytest("postgres", server.test_environment())
        except PostgresUnavailable as exc:
            say(f"==> [postgres server] FAILED: {exc}")
            return False
        say("==> [postgres server] stopped and removed")
        return ok

    def test(self, backend: str) -> None:
        """Install and test one backend, recording what failed."""
        if not self.install(backend):
            self.failed.append(f"install-{backend}")
            return
        ok = self.pytest_postgres() if backend == "postgres" else self.pytest(backend, {})
        if not ok:
            self.failed.append(f"pytest-{backend}")

    # --- the whole run --------------------------------------------------------------------

    def run(self) -> None:
        if self.logs.exists():
            shutil.rmtree(self.logs)
        venvs = Background("venvs", self.prepare_venvs)
        if not run_step("cargo test", ["cargo", "test", "--workspace"], self.root, self.env):
            self.failed.append("cargo-test")
        venvs.wait()
        if self.build_venv is None:
            self.failed.append("venv-build")
        self.failed.extend(f"venv-{name}" for name in self.selected if name not in self.venvs)

        testable = [name for name in self.selected if name in self.venvs]
        for position, backend in enumerate(testable):
            if not self.build(WHEELS_FOR[backend]):
                say(f"==> [{backend}] not tested: its wheels did not build")
                continue
            later = [k for b in testable[position + 1:] for k in WHEELS_FOR[b] if k not in self.attempted]
            builder = (Background("wheels for later backends", lambda: self.build(later, self.log("wheels")))
                       if later else None)
            self.test(backend)
            if builder is not None:
                builder.wait()


@task()
@angreal.command(name="python_tests", about="Run cargo tests, build the wheels and run the Python suite per backend")
@angreal.argument(name="backend", long="backend", help="one backend to test: sqlite or postgres (default: both)",
                  required=False)
def python_tests(backend: Optional[str] = None) -> int:
    started = time.monotonic()
    selected = [backend] if backend else list(BACKENDS)
    unknown = [b for b in selected if b not in BACKENDS]
    if unknown:
        say(f"unknown backend(s) {unknown}; choose from {list(BACKENDS)}")
        return 2
    run = Run(repo_root(), selected)
    try:
        run.run()
    finally:
        stop_background()
    print_step_times()
    elapsed = time.monotonic() - started
    if run.failed:
        say(f"\npython_tests: FAILED ({', '.join(run.failed)}) after {elapsed:.0f}s")
        return 1
    say(f"\npython_tests: all steps ok ({', '.join(selected)}) in {elapsed:.0f}s")
    return 0

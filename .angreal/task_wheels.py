"""`angreal task wheels`: the release wheels of the three packages, in ``dist/`` at the repo root.

``cloacina-sqlite`` and ``cloacina-postgres`` are built by ``maturin build --release`` (abi3 for
CPython 3.10 and later, tagged manylinux by maturin's audit; the postgres wheel has libpq and
OpenSSL compiled in), the ``cloacina`` dispatcher by setuptools (pure Python). Each wheel's tags and
metadata are checked (``build_steps.wheel_problems``) before it replaces that package's older wheel
in ``dist/``. The build tools live in a venv under ``target/build-venv``, made again only when
``BUILD_TOOLS`` or the interpreter change. ``angreal task python_tests`` builds and installs the
same files.
"""

from __future__ import annotations

import time
from typing import List, Optional

import angreal

from build_steps import WHEEL_PROJECTS, build_env, build_release_wheel, build_venv, repo_root, say

task = angreal.command_group(name="task", about="Cloacina development tasks")


@task()
@angreal.command(name="wheels", about="Build the release wheels of the three packages into dist/")
@angreal.argument(name="package", long="package", required=False,
                  help="one package: sqlite, postgres or dispatcher (default: all three)")
def wheels(package: Optional[str] = None) -> int:
    started = time.monotonic()
    root = repo_root()
    env = build_env(root)
    selected = [package] if package else list(WHEEL_PROJECTS)
    unknown = [p for p in selected if p not in WHEEL_PROJECTS]
    if unknown:
        say(f"unknown package(s) {unknown}; choose from {list(WHEEL_PROJECTS)}")
        return 2
    venv = build_venv(root, env)
    if venv is None:
        say("\nwheels: FAILED (build tools)")
        return 1
    built: List[str] = []
    failed: List[str] = []
    for key in selected:
        wheel = build_release_wheel(root, venv, key, env)
        if wheel is None:
            failed.append(key)
        else:
            built.append(wheel.name)
    elapsed = time.monotonic() - started
    say("")
    for name in built:
        say(f"    dist/{name}")
    if failed:
        say(f"wheels: FAILED ({', '.join(failed)}) after {elapsed:.0f}s")
        return 1
    say(f"wheels: {len(built)} built and checked in {elapsed:.0f}s")
    return 0

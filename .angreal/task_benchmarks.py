"""`angreal task benchmarks`: scenarios S1-S4 and the growth runs on SQLite and PostgreSQL.

Builds both wheels (release) into ``target/benches/venv``, runs ``benches/run_benchmarks.py`` once
per backend (PostgreSQL on a throwaway server with fsync and synchronous commits on, as in
production; then ``benches/scale_out.py``: worker processes scaling out and failing over), then the
engine-only Rust benchmark (``cargo bench -p cloacina --bench engine``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import angreal

from build_steps import build_env, build_wheel, repo_root, run_step, venv_bin
from postgres_server import INSTALL_HINT, PostgresUnavailable, find_binaries, throwaway_postgres

task = angreal.command_group(name="task", about="Cloacina development tasks")


def _bench_venv(root: Path, env: dict) -> Optional[Path]:
    venv = root / "target" / "benches" / "venv"
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not run_step("bench venv", [sys.executable, "-m", "venv", str(venv)], root, env):
        return None
    if not run_step("bench tools", [venv_bin(venv, "python"), "-m", "pip", "install", "--quiet", "maturin>=1.5,<2"],
                    root, env):
        return None
    wheels = []
    for wheel in ("sqlite", "postgres"):
        built = build_wheel(root, venv, wheel, root / "target" / "benches" / f"wheels-{wheel}", env)
        if built is None:
            return None
        wheels.append(built)
    cmd = [venv_bin(venv, "python"), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", *wheels,
           root / "cloacina-dispatcher"]
    return venv if run_step("install wheels", cmd, root, env) else None


@task()
@angreal.command(name="benchmarks", about="Run the S1-S4 and growth benchmarks on SQLite and PostgreSQL")
@angreal.argument(name="backend", long="backend", help="sqlite or postgres (default: both)", required=False)
@angreal.argument(name="repeat", long="repeat", help="timed runs per measurement (default 5)", required=False)
@angreal.argument(name="quick", long="quick", help="skip the growth runs", takes_value=False, is_flag=True,
                  required=False)
def benchmarks(backend: Optional[str] = None, repeat: Optional[str] = None, quick: bool = False) -> int:
    root = repo_root()
    env = build_env(root)
    venv = _bench_venv(root, env)
    if venv is None:
        return 1
    script = root / "benches" / "run_benchmarks.py"
    common: List[object] = ["--repeat", repeat or "5"] + (["--quick"] if quick else [])
    failed: List[str] = []
    if backend in (None, "sqlite"):
        with tempfile.TemporaryDirectory(prefix="cloacina-bench-") as directory:
            cmd = [venv_bin(venv, "python"), script, "--backend", "sqlite", "--url", directory, *common]
            if not run_step("benchmarks (sqlite)", cmd, root, env):
                failed.append("sqlite")
    pg_url = None
    if backend in (None, "postgres"):
        binaries = find_binaries()
        if binaries is None:
            print(f"==> [postgres] skipped: {INSTALL_HINT}", flush=True)
            failed.append("postgres")
        else:
            try:
                with throwaway_postgres(binaries, durable=True) as server:
                    pg_url = server.admin_url
                    cmd = [venv_bin(venv, "python"), script, "--backend", "postgres", "--url", pg_url, *common]
                    if not run_step("benchmarks (postgres)", cmd, root, env):
                        failed.append("postgres")
                    cmd = [venv_bin(venv, "python"), root / "benches" / "scale_out.py", "--url", pg_url,
                           "--shape", "all", *(["--quick"] if quick else [])]
                    if not run_step("scale-out and failover benchmarks (postgres)", cmd, root, env):
                        failed.append("scale-out")
                    engine_env = dict(env, CLOACINA_BENCH_POSTGRES_URL=pg_url)
                    if not run_step("engine benchmarks (sqlite, postgres)",
                                    ["cargo", "bench", "-p", "cloacina", "--features", "postgres", "--bench", "engine"],
                                    root, engine_env):
                        failed.append("engine")
            except PostgresUnavailable as exc:
                print(f"==> [postgres server] FAILED: {exc}", flush=True)
                failed.append("postgres")
    if pg_url is None and not run_step("engine benchmarks (sqlite)", ["cargo", "bench", "-p", "cloacina", "--bench", "engine"], root, env):
        failed.append("engine")
    if failed:
        print(f"\nbenchmarks: FAILED ({', '.join(failed)})", flush=True)
        return 1
    return 0

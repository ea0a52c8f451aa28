"""The shipped examples run end to end against the installed packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend import BACKEND, IS_SQLITE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart(tmp_path, subprocess_env, database_url):
    """Through the dispatcher, which binds the backend under test (postgres wins when both are installed)."""
    script = EXAMPLES / "quickstart.py"
    if not script.is_file():
        pytest.skip("examples/ not present next to python-tests/")
    proc = subprocess.run([sys.executable, str(script), database_url], cwd=str(tmp_path),
                          env=subprocess_env, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"backend   {BACKEND} " in out
    assert "Completed" in out
    for task_id in ("extract", "clean_orders", "fetch_rates", "report"):
        assert task_id in out
    assert '"total_eur": 194.06' in out

    again_target = database_url
    if IS_SQLITE:
        db = Path(database_url[len("sqlite:///"):])
        assert db.is_file()
        again_target = str(db)
    again = subprocess.run([sys.executable, str(script), again_target], cwd=str(tmp_path),
                           env=subprocess_env, capture_output=True, text=True, timeout=50)
    assert again.returncode == 0, again.stdout + again.stderr


def test_durable_demo(tmp_path, subprocess_env, database_url):
    """A worker process is killed with SIGKILL mid-task; a new one finishes the execution."""
    script = EXAMPLES / "durable.py"
    if not script.is_file():
        pytest.skip("examples/ not present next to python-tests/")
    env = dict(subprocess_env, DURABLE_DEMO_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, str(script), database_url], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=55)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "status    Completed  total=45" in out
    assert "download   Completed  attempts 1:Completed" in out
    assert "transform  Completed  attempts 1:Lost, 2:Completed" in out
    assert "publish    Completed  attempts 1:Completed" in out


def test_schedule_example(tmp_path, subprocess_env, database_url):
    """An every-second schedule fires three times, each fire once."""
    script = EXAMPLES / "schedule.py"
    if not script.is_file():
        pytest.skip("examples/ not present next to python-tests/")
    proc = subprocess.run([sys.executable, str(script), database_url], cwd=str(tmp_path),
                          env=subprocess_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fired = [line for line in proc.stdout.splitlines() if line.startswith("fired")]
    assert len(fired) == 3, proc.stdout
    assert all("api checked at" in line for line in fired)
    assert len(set(fired)) == 3, proc.stdout

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

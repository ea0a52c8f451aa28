"""The shipped examples run end to end against the installed packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend import IS_SQLITE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.skipif(not IS_SQLITE, reason="the quickstart uses SQLite")
def test_quickstart(tmp_path, subprocess_env):
    script = EXAMPLES / "quickstart.py"
    if not script.is_file():
        pytest.skip("examples/ not present next to python-tests/")
    db = tmp_path / "quickstart.db"
    proc = subprocess.run([sys.executable, str(script), f"sqlite:///{db}"], cwd=str(tmp_path),
                          env=subprocess_env, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Completed" in out
    for task_id in ("extract", "clean_orders", "fetch_rates", "report"):
        assert task_id in out
    assert '"total_eur": 194.06' in out
    assert db.is_file()

    again = subprocess.run([sys.executable, str(script), str(db)], cwd=str(tmp_path),
                           env=subprocess_env, capture_output=True, text=True, timeout=50)
    assert again.returncode == 0, again.stdout + again.stderr

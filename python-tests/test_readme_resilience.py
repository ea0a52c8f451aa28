"""The README's resilience examples run as written and print what their comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from backend import IS_SQLITE

README = Path(__file__).resolve().parent.parent / "README.md"
HEADING = "### Retries, timeouts, trigger rules, skipping and cancellation"


def snippets():
    if not README.is_file():
        return []
    text = README.read_text(encoding="utf-8")
    if HEADING not in text:
        return []
    section = text.split(HEADING, 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


SNIPPETS = snippets()


def test_readme_has_the_examples():
    if not README.is_file():
        pytest.skip("README.md not present next to python-tests/")
    assert len(SNIPPETS) == 5


@pytest.mark.skipif(not IS_SQLITE, reason="the examples use sqlite://:memory:")
@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_example_runs(tmp_path, subprocess_env, index):
    code = SNIPPETS[index]
    env = dict(subprocess_env, CLOACINA_BACKEND="sqlite")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every "# expected output" comment line that follows a print() appears in stdout.
    printed = [line.strip() for line in proc.stdout.splitlines()]
    for comment in re.findall(r"print\(.*\)\s*#\s*(.+)", code):
        assert comment.strip() in printed, (comment, proc.stdout)

"""The shipped examples run end to end against the installed packages, and type-check.

Every ``examples/*.py`` must be run by a test here (``test_every_example_is_tested``): each test
names its script as ``EXAMPLES / "<name>.py"`` or ``example("<name>.py")``. Each example is a child
process on the test's database, taking the URL as argv[1] and exiting 0 on its expected outcome.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from backend import BACKEND, IS_SQLITE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_SECONDS = 60  # generous: each example bounds its own run to well under 20 s


def example(name: str) -> Path:
    script = EXAMPLES / name
    if not script.is_file():
        pytest.skip("examples/ not present next to python-tests/")
    return script


def run_example(name: str, tmp_path: Path, env: Dict[str, str], database_url: str) -> str:
    """Runs examples/<name> on the test's database in tmp_path; asserts exit 0; returns stdout."""
    proc = subprocess.run([sys.executable, str(example(name)), database_url], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=EXAMPLE_SECONDS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


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
    out = run_example("schedule.py", tmp_path, subprocess_env, database_url)
    fired = [line for line in out.splitlines() if line.startswith("fired")]
    assert len(fired) == 3, out
    assert all("api checked at" in line for line in fired)
    assert len(set(fired)) == 3, out


def test_retries_example(tmp_path, subprocess_env, database_url):
    """A flaky task fails twice, is retried with backoff and completes on attempt 3."""
    out = run_example("retries.py", tmp_path, subprocess_env, database_url)
    assert "retries.fetch: Completed after 3 attempt(s)" in out
    assert "attempt 1  Failed     ConnectionError: upstream busy (call 1)" in out
    assert "attempt 3  Completed" in out
    assert "retries.parse: Failed after 1 attempt(s)" in out


def test_timeouts_example(tmp_path, subprocess_env, database_url):
    """A timed-out attempt is retried and completes; an execution deadline cancels the run."""
    out = run_example("timeouts.py", tmp_path, subprocess_env, database_url)
    assert "task timeout: timeouts.call_api Completed after 2 attempts" in out
    assert "timed out after 0.3 s  [cancelled by the timeout]" in out
    assert "execution timeout: Cancelled | cancelled: execution timed out after 0.5 s" in out


def test_trigger_rules_example(tmp_path, subprocess_env, database_url):
    """all_done cleanup and one_failed alert run after a failure; SkipTask skips a branch."""
    out = run_example("trigger_rules.py", tmp_path, subprocess_env, database_url)
    assert re.search(r"^  trigger_rules\.cleanup +Completed$", out, re.M), out
    assert re.search(r"^  trigger_rules\.alert +Completed$", out, re.M), out
    assert re.search(r"^  trigger_rules\.load +Skipped +trigger rule 'all_success' not met", out, re.M), out
    assert re.search(r"^  trigger_rules\.check_inbox +Skipped +no new files$", out, re.M), out
    assert "run 2: Completed" in out


def test_fan_out_example(tmp_path, subprocess_env, database_url):
    """Five async tasks after one task overlap in time, then a join sees all their outputs."""
    out = run_example("fan_out.py", tmp_path, subprocess_env, database_url)
    assert "status    Completed  total_rows=23" in out
    assert "fetches overlapped: yes" in out


def test_map_example(tmp_path, subprocess_env, database_url):
    """A task mapped over 20 orders: map_limit holds, order 7's instance is retried alone, values in order."""
    out = run_example("map.py", tmp_path, subprocess_env, database_url)
    assert re.search(r"^status    Completed  total=659\.4  ", out, re.M), out
    assert "map.price_order  Completed  20/20 instances completed" in out
    assert re.search(r"^  instance 6  Completed  attempts 1\n  instance 7  Completed  attempts 2\n"
                     r"  instance 8  Completed  attempts 1$", out, re.M), out
    assert "prices    20, the first {'id': 'A-100', 'price': 5.4}" in out
    most = int(re.search(r"^most instances running at once: (\d+) \(map_limit=4\)$", out, re.M).group(1))
    assert 1 <= most <= 4, out


def test_composition_example(tmp_path, subprocess_env, database_url):
    """A workflow mapped as a sub-workflow over three orders, with hooks: publish, then alert."""
    out = run_example("composition.py", tmp_path, subprocess_env, database_url)
    assert re.search(r"^status    Completed  3 orders, total 40\.8$", out, re.M), out
    assert "labels    ['A-100: 10.80', 'A-101: 6.60', 'A-102: 23.40']" in out
    assert re.search(r"^hooks     publish Completed, alert Skipped\n", out, re.M), out
    assert re.search(r"^status    Failed  composition\.batch Failed: composition\.enrich_each$", out, re.M), out
    assert "of workflow 'composition.enrich' ended Failed: task 'composition.price' failed: ValueError: order " \
           "A-101 has a negative quantity" in out
    assert re.search(r"^hooks     publish Skipped, alert Completed\n", out, re.M), out
    assert re.search(r"^  child composition\.enrich_each\[0\]  Completed\n  child composition\.enrich_each\[1\]  "
                     r"Failed\n  child composition\.enrich_each\[2\]  Completed$", out, re.M), out


def test_cancellation_example(tmp_path, subprocess_env, database_url):
    """cancel() stops a running execution; the async task sees CancelledError."""
    out = run_example("cancellation.py", tmp_path, subprocess_env, database_url)
    assert "cancel() returned True" in out
    assert "task saw CancelledError: yes" in out
    assert re.search(r"^status    Cancelled ", out, re.M), out


def test_cli_demo_example(tmp_path, subprocess_env, database_url):
    """`python -m cloacina` graph, run, executions list and show on the quickstart workflow."""
    script = example("cli_demo.py")
    probe = subprocess.run([sys.executable, "-m", "cloacina", "--help"], cwd=str(EXAMPLES),
                           env=subprocess_env, capture_output=True, text=True, timeout=EXAMPLE_SECONDS)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"the cloacina command line is not available (python -m cloacina --help: {last})")
    out = run_example(script.name, tmp_path, subprocess_env, database_url)
    assert "$ cloacina graph quickstart:workflow" in out
    assert "flowchart TD" in out
    assert re.search(r"^cli_demo: execution [0-9a-f-]{36} Completed$", out, re.M), out


def test_nightly_etl_example(tmp_path, subprocess_env, database_url):
    """A fan-out, a retried task and a skipped branch; docs/dashboard-execution.png shows this run."""
    out = run_example("nightly_etl.py", tmp_path, subprocess_env, database_url)
    assert re.search(r"^status    Completed$", out, re.M), out
    assert re.search(r"^  fetch_rates +Completed +attempts 1:Failed, 2:Completed +attempt 1: ConnectionError: "
                     r"rates API timed out$", out, re.M), out
    assert re.search(r"^  check_refunds +Skipped +attempts 1:Skipped +no refunds to apply tonight$", out, re.M), out
    assert re.search(r"^  apply_refunds +Skipped +attempts never started +trigger rule 'all_success' not met", out,
                     re.M), out
    assert re.search(r"^  load_warehouse +Completed +attempts 1:Completed$", out, re.M), out
    assert "report    6 orders, 627.11 EUR" in out


def test_every_example_is_tested():
    """A new example cannot land without a test here that runs it."""
    if not EXAMPLES.is_dir():
        pytest.skip("examples/ not present next to python-tests/")
    source = Path(__file__).read_text(encoding="utf-8")
    tested = set(re.findall(r'(?:EXAMPLES\s*/\s*|example\(\s*)"([\w.-]+\.py)"', source))
    shipped = {path.name for path in EXAMPLES.glob("*.py")}
    assert shipped - tested == set(), "examples without a test in test_examples.py"
    assert tested - shipped == set(), "tests naming examples that do not exist"


@pytest.mark.skipif(not IS_SQLITE, reason="type-checked once, on the SQLite run: the dispatcher's "
                                          "stub re-exports cloacina_sqlite's types")
def test_examples_pass_mypy_strict(tmp_path, subprocess_env):
    """Every example type-checks with `mypy --strict` against the installed packages' stubs."""
    pytest.importorskip("mypy")
    if not EXAMPLES.is_dir():
        pytest.skip("examples/ not present next to python-tests/")
    # mypy reads packages from sys.path entries; it cannot follow an editable install's import hook.
    where = subprocess.run(
        [sys.executable, "-c", "import os, sys, cloacina; d = os.path.dirname(os.path.dirname("
                               "os.path.abspath(cloacina.__file__))); print(d in map(os.path.abspath, sys.path))"],
        cwd=str(tmp_path), env=subprocess_env, capture_output=True, text=True, timeout=EXAMPLE_SECONDS)
    assert where.returncode == 0, where.stderr
    if where.stdout.strip() != "True":
        pytest.skip("the cloacina package is installed through an import hook (an editable install) "
                    "that mypy cannot follow; reinstall it normally or with editable_mode=compat")
    # cwd=tmp_path: from the repository root, its cloacina/ (the Rust crate) would shadow the package.
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-color-output",
                           "--cache-dir", str(tmp_path / "mypy_cache"), str(EXAMPLES)],
                          cwd=str(tmp_path), env=subprocess_env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

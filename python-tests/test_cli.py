"""The ``cloacina`` command line on the test's database.

Every command runs as ``cloacina --db <database_url> ...`` in the test's tmp_path, where the
test writes a small task module (task ids and workflow names made unique by the ``ids``
fixture). Nothing is mocked: the workflows run on the backend under test.

Most cases call the command line's ``main(argv)`` in this process (the ``cli`` fixture: its
stdout, stderr and exit code captured, the environment and working directory given). Those
whose point is a real process stay child processes: signals and second signals, exit status
of a stopped process, a real terminal, the installed console script. Long-lived processes
(workers) run through :mod:`procs`, which kills them by pid whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import io
import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import pytest

from backend import BACKEND, IS_SQLITE, cl
from procs import DEADLINE, client, exited, finished, procs, stopped, until  # noqa: F401 (fixtures)

# A module of tasks, written into the test's directory. PREFIX becomes the test's unique prefix.
FLOWS = '''
import asyncio
from pathlib import Path

from cloacina import Workflow, task


@task(task_id="PREFIX.extract")
def extract(context):
    return {"rows": list(range(context["n"]))}


@task(task_id="PREFIX.double", dependencies=["PREFIX.extract"])
async def double(context):
    await asyncio.sleep(0.01)
    return {"doubled": [r * 2 for r in context["rows"]]}


@task(task_id="PREFIX.total", dependencies=["PREFIX.double"])
def total(context):
    return {"total": sum(context["doubled"])}


@task(task_id="PREFIX.explode", dependencies=["PREFIX.extract"])
def explode(context):
    raise ValueError("boom: bad input\\nsecond line")


@task(task_id="PREFIX.gate")
async def gate(context):
    """Waits until the file named by context["gate"] exists (cancellable: it awaits)."""
    path = Path(context["gate"])
    while not path.exists():
        await asyncio.sleep(0.02)
    return {"gated": True}


@task(task_id="PREFIX.after_gate", dependencies=["PREFIX.gate"])
def after_gate(context):
    return {"after": context["gated"]}


pipeline = Workflow("PREFIX.pipeline", tasks=["PREFIX.total"])
broken = Workflow("PREFIX.broken", tasks=["PREFIX.total", "PREFIX.explode"])
gated = Workflow("PREFIX.gated", tasks=["PREFIX.after_gate"])
not_a_workflow = 42
'''

PASSWORD = "S3cretPw0rd"

# A task module that ends the process while being imported: its tasks never register.
EXITS = "import sys\nsys.exit(0)\n"

# Tasks whose error and skip reason hold terminal control sequences: a window title, clear
# screen, an OSC 8 hyperlink, a C1 CSI and DEL. The source is ASCII; Python reads the escapes.
HOSTILE = r'''
import time
from pathlib import Path

from cloacina import SkipTask, Workflow, task

TEXT = "title\x1b]0;pwned\x07 clear\x1b[2J link\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ csi\x9b31m del\x7f"


@task(task_id="PREFIX.fails")
def fails(context):
    raise ValueError(TEXT + "\nsecond\tline\x1b[0m")


@task(task_id="PREFIX.skips")
def skips(context):
    raise SkipTask(TEXT)


@task(task_id="PREFIX.stuck")
def stuck(context):
    """Writes context["started"], then blocks (a sync task ignores its cancellation)."""
    Path(context["started"]).write_text("started")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)


hostile = Workflow("PREFIX.hostile", tasks=["PREFIX.fails", "PREFIX.skips"])
stuck_wf = Workflow("PREFIX.stuck", tasks=["PREFIX.stuck"])
'''
# What the terminal must never receive from stored text: C0 but newline and tab, DEL, C1.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


# --- helpers -----------------------------------------------------------------------------------

@pytest.fixture
def env(subprocess_env: Dict[str, str]) -> Dict[str, str]:
    """Child environment: the dispatcher binds the backend under test; no database from outside."""
    child = dict(subprocess_env, CLOACINA_BACKEND=BACKEND)
    child.pop("CLOACINA_DATABASE_URL", None)
    return child


@pytest.fixture
def flows(tmp_path: Path, ids: Any) -> str:
    """Writes the task module ``flows.py`` into tmp_path; returns the prefix of its ids."""
    (tmp_path / "flows.py").write_text(FLOWS.replace("PREFIX", ids.prefix))
    return str(ids.prefix)


@pytest.fixture
def hostile(tmp_path: Path, flows: str) -> str:
    """Writes the task module ``hostile.py`` (:data:`HOSTILE`) beside ``flows.py``; returns the prefix."""
    (tmp_path / "hostile.py").write_text(HOSTILE.replace("PREFIX", flows))
    return flows


@pytest.fixture
def cli_procs(procs: Any, env: Dict[str, str], tmp_path: Path, hostile: str) -> Any:
    """The test's :class:`procs.Procs` with the child environment of :func:`env`, and ``flows.py``
    and ``hostile.py`` in their working directory."""
    procs.env = dict(env)
    for module in ("flows.py", "hostile.py"):
        (procs.workdir / module).write_text((tmp_path / module).read_text())
    return procs


# Modules the tests write into the working directory: forgotten around each test, so that each
# test imports its own (a command run in this process imports them as a child process would).
TEST_MODULES = ("flows", "hostile", "raises", "exits")
# One command line in this process at a time: it takes the process's stdout, stderr and environment.
_IN_PROCESS = threading.Lock()


class Cli:
    """Runs ``cloacina ARGS`` and returns its exit code, stdout and stderr as a
    :class:`subprocess.CompletedProcess`.

    In this process: ``cloacina.cli.main(ARGS)`` with stdout and stderr captured, stdin empty,
    the test's tmp_path as working directory and no ``CLOACINA_DATABASE_URL`` but the one given
    in ``env``; logging as in a new process (no handler on the root logger but the command's
    own, so what a child would print on stderr lands in ``stderr``), restored afterwards. Where
    this process's ``cloacina`` binds another backend than the one under test (both wheels
    installed, ``CLOACINA_BACKEND`` unset), it runs ``python -m cloacina ARGS`` instead.
    """

    def __init__(self, workdir: Path, child_env: Dict[str, str]) -> None:
        self.workdir = workdir
        self.child_env = child_env
        cloacina = importlib.import_module("cloacina")
        self.in_process = cloacina.backend == BACKEND

    def __call__(self, *args: str, env: Optional[Mapping[str, str]] = None) -> "subprocess.CompletedProcess[str]":
        if not self.in_process:
            return subprocess.run([sys.executable, "-m", "cloacina", *args], cwd=str(self.workdir),
                                  env=dict(self.child_env, **(env or {})), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=DEADLINE)
        with _IN_PROCESS, _environment(env or {}), _fresh_logging():
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _stdin(io.StringIO()):
                try:
                    code = importlib.import_module("cloacina.cli").main(list(args))
                except SystemExit as exc:  # argparse: --help, --version, usage errors
                    code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            return subprocess.CompletedProcess(["cloacina", *args], code, out.getvalue(), err.getvalue())

    async def off_loop(self, *args: str, env: Optional[Mapping[str, str]] = None) -> "subprocess.CompletedProcess[str]":
        """The same on a worker thread, for async tests (the command line runs its own loop)."""
        return await asyncio.to_thread(self, *args, env=env)


@contextlib.contextmanager
def _environment(extra: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _fresh_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


@contextlib.contextmanager
def _stdin(stream: io.StringIO) -> Iterator[None]:
    saved, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = saved


def _forget_test_modules() -> None:
    for name in TEST_MODULES:
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: Dict[str, str]) -> Iterator[Cli]:
    """A :class:`Cli` working in tmp_path."""
    monkeypatch.setenv("CLOACINA_BACKEND", BACKEND)  # binds the dispatcher if nothing did yet
    monkeypatch.delenv("CLOACINA_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # a command puts the working directory first
    _forget_test_modules()
    try:
        yield Cli(tmp_path, env)
    finally:
        _forget_test_modules()


def describe(proc: "subprocess.CompletedProcess[str]") -> str:
    return f"exit {proc.returncode}\n[stdout]\n{proc.stdout}\n[stderr]\n{proc.stderr}"


def assert_user_error(proc: "subprocess.CompletedProcess[str]", *fragments: str) -> None:
    """Exit 2 and exactly one line on stderr, ``cloacina: error: ...``, holding ``fragments``."""
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cloacina: error: "), describe(proc)
    for fragment in fragments:
        assert fragment in lines[0], describe(proc)


def load_in_process(path: Path) -> Dict[str, Any]:
    """Runs a task module in this process against the backend under test (the test process
    binds ``cl`` directly); returns its namespace, e.g. to submit its workflows."""
    source = path.read_text().replace("from cloacina import", f"from {cl.__name__} import")
    namespace: Dict[str, Any] = {"__name__": f"cli_test_{uuid.uuid4().hex}"}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace


def final_context_line(stdout: str) -> Dict[str, Any]:
    line = next(l for l in stdout.splitlines() if l.startswith("final context: "))
    value: Dict[str, Any] = json.loads(line[len("final context: "):])
    return value


def run_json(cli: Cli, database_url: str, target: str, context: str) -> Dict[str, Any]:
    proc = cli("--db", database_url, "--json", "run", target, "--context", context)
    assert proc.returncode in (0, 1), describe(proc)
    record: Dict[str, Any] = json.loads(proc.stdout)
    return record


# --- run ---------------------------------------------------------------------------------------

def test_run_prints_each_task_then_the_result(cli, database_url, flows):
    proc = cli("--db", database_url, "run", "flows:pipeline", "--context", '{"n": 2}')
    assert proc.returncode == 0, describe(proc)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("execution ") and f"workflow {flows}.pipeline, 3 tasks" in lines[0], describe(proc)
    task_lines = [l for l in lines if l.startswith("task ")]
    assert [l.split()[1:3] for l in task_lines] == [
        [f"{flows}.extract", "Completed"], [f"{flows}.double", "Completed"], [f"{flows}.total", "Completed"],
    ], describe(proc)
    assert all(l.endswith("s") for l in task_lines), describe(proc)  # a duration such as 0.01s
    assert any(l.startswith("execution ") and " Completed in " in l for l in lines), describe(proc)
    assert final_context_line(proc.stdout) == {"n": 2, "rows": [0, 1], "doubled": [0, 2], "total": 2}
    assert "\r" not in proc.stdout and "\x1b" not in proc.stdout, "no terminal codes when not a terminal"
    assert proc.stderr == "", describe(proc)


def test_run_json_prints_the_execution_dict(cli, database_url, flows):
    record = run_json(cli, database_url, "flows:pipeline", '{"n": 3}')
    assert record["status"] == "Completed"
    assert record["workflow_name"] == f"{flows}.pipeline"
    assert record["input_context"] == {"n": 3}
    assert record["final_context"]["total"] == 6
    assert [t["task_id"] for t in record["task_results"]] == [f"{flows}.extract", f"{flows}.double",
                                                                f"{flows}.total"]
    assert {t["status"] for t in record["task_results"]} == {"Completed"}


def test_run_context_file(cli, tmp_path, database_url, flows):
    (tmp_path / "ctx.json").write_text('{"n": 4}')
    proc = cli("run", "flows:pipeline", "--context-file", "ctx.json", "--db", database_url)
    assert proc.returncode == 0, describe(proc)
    assert final_context_line(proc.stdout)["total"] == 12


def test_run_failing_workflow_exits_1_and_shows_the_error(cli, database_url, flows):
    proc = cli("--db", database_url, "run", "flows:broken", "--context", '{"n": 2}')
    assert proc.returncode == 1, describe(proc)
    assert f"task {flows}.explode Failed" in proc.stdout, describe(proc)
    assert "ValueError: boom: bad input" in proc.stdout, describe(proc)
    assert f"task {flows}.total Completed" in proc.stdout, "the independent branch still runs"
    assert " Failed in " in proc.stdout and f"error: task '{flows}.explode' failed" in proc.stdout, describe(proc)


@pytest.mark.parametrize("args, fragment", [
    (["--context", '{"n": 2'], "--context is not valid JSON: Expecting"),
    (["--context", "[1, 2]"], "--context must be a JSON object"),
    (["--context", '"text"'], "--context must be a JSON object"),
    (["--context-file", "missing.json"], "cannot read --context-file missing.json"),
], ids=["truncated", "array", "string", "missing-file"])
def test_run_rejects_a_bad_context(cli, database_url, flows, args, fragment):
    proc = cli("--db", database_url, "run", "flows:pipeline", *args)
    assert_user_error(proc, fragment)
    assert proc.stdout == ""


@pytest.mark.parametrize("target, fragments", [
    ("no_such_module_for_cli:wf", ["cannot import module 'no_such_module_for_cli'"]),
    ("flows:not_a_workflow", ["'flows:not_a_workflow' is not a cloacina.Workflow (it is int)"]),
    ("flows:missing", ["module 'flows' has no attribute 'missing'", "broken, gated, pipeline"]),
    ("flows", ["expected MODULE:WORKFLOW"]),
    ("raises:wf", ["cannot import module 'raises': RuntimeError: refusing to import"]),
    ("exits:wf", ["cannot import module 'exits': it called sys.exit(0) while being imported"]),
    ("flows.py:pipeline", []),
], ids=["unknown-module", "not-a-workflow", "missing-attribute", "no-colon", "raising-module", "exiting-module",
        "py-path"])
def test_run_targets(cli, tmp_path, database_url, flows, target, fragments):
    (tmp_path / "raises.py").write_text("raise RuntimeError('refusing to import')\n")
    (tmp_path / "exits.py").write_text(EXITS)
    proc = cli("--db", database_url, "run", target, "--context", '{"n": 1}')
    if not fragments:  # a path to a .py file works as the module
        assert proc.returncode == 0, describe(proc)
        return
    assert_user_error(proc, *fragments)


@pytest.mark.sqlite_only
def test_run_without_db_uses_cloacina_db_in_the_working_directory(cli, tmp_path, flows):
    proc = cli("run", "flows:pipeline", "--context", '{"n": 1}')
    assert proc.returncode == 0, describe(proc)
    assert (tmp_path / "cloacina.db").is_file()


def test_run_on_a_terminal_draws_a_progress_line(tmp_path, env, database_url, flows):
    """stdout is a pseudo-terminal: the same task lines plus a bar redrawn with \\r and clear-line."""
    primary, secondary = pty.openpty()
    try:
        child = subprocess.Popen([sys.executable, "-m", "cloacina", "--db", database_url, "run", "flows:pipeline",
                                  "--context", '{"n": 2}'], cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL,
                                 stdout=secondary, stderr=subprocess.PIPE)
    finally:
        os.close(secondary)
    output = b""
    try:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif child.poll() is not None:
                break
        code = child.wait(timeout=DEADLINE)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        assert child.stderr is not None
        child.stderr.close()
        os.close(primary)
    text = output.decode()
    assert code == 0, text
    assert "\r\x1b[2K" in text and "] 3/3 done" in text, repr(text)
    assert f"task {flows}.total Completed" in text, repr(text)
    assert final_context_line(text.replace("\r\x1b[2K", "").replace("\r", ""))["total"] == 2


async def test_ctrl_c_cancels_the_execution_run(cli_procs, client, database_url, tmp_path, flows):
    procs = cli_procs
    context = json.dumps({"gate": str(tmp_path / "never")})
    running = procs.start(["-m", "cloacina", "--db", database_url, "run", "flows:gated", "--context", context],
                          name="run")
    await until(lambda: "started: workflow" in running.stdout(), what="the run started", watch=[running])
    execution_id = running.stdout().split()[1]

    async def gate_running() -> bool:
        record = await client.get_execution(execution_id)
        return record is not None and record["task_results"][0]["status"] == "Running"

    await until(gate_running, what="the gate task runs", watch=[running])
    os.kill(running.pid, signal.SIGINT)
    assert await exited(running) == 1, running.describe()
    out = running.stdout()
    assert f"SIGINT: cancelling execution {execution_id}" in out, running.describe()
    assert f"task {flows}.gate Cancelled" in out and f"execution {execution_id} Cancelled in " in out, out
    record = await client.get_execution(execution_id)
    assert record is not None and record["status"] == "Cancelled"


async def test_a_second_ctrl_c_stops_the_run_at_once(cli_procs, database_url, tmp_path, hostile):
    """The first Ctrl-C cancels; the task, sync, keeps its thread, so the process would wait 10 s
    for it at exit and end with status 1. A second Ctrl-C, here during that wait, ends it at once."""
    procs = cli_procs
    started = tmp_path / "started"
    running = procs.start(["-m", "cloacina", "--db", database_url, "run", "hostile:stuck_wf",
                           "--context", json.dumps({"started": str(started)})], name="run")
    await until(started.exists, what="the stuck task runs", watch=[running])
    os.kill(running.pid, signal.SIGINT)
    await until(lambda: " Cancelled in " in running.stdout(), what="the execution ended Cancelled", watch=[running])
    os.kill(running.pid, signal.SIGINT)
    assert await exited(running) == 130, running.describe()
    assert "SIGINT received again: stopping at once" in running.stdout(), running.describe()


# --- executions --------------------------------------------------------------------------------

def test_executions_list_and_show(cli, database_url, flows):
    good = run_json(cli, database_url, "flows:pipeline", '{"n": 2}')
    bad = run_json(cli, database_url, "flows:broken", '{"n": 2}')
    assert (good["status"], bad["status"]) == ("Completed", "Failed")

    table = cli("--db", database_url, "executions", "list")
    assert table.returncode == 0, describe(table)
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "STARTED", "DURATION"]
    assert [r.split()[:3] for r in rows] == [[bad["execution_id"], f"{flows}.broken", "Failed"],
                                             [good["execution_id"], f"{flows}.pipeline", "Completed"]]

    # CLOACINA_DATABASE_URL instead of --db; --json after the command
    listed = cli("executions", "list", "--json", env={"CLOACINA_DATABASE_URL": database_url})
    assert listed.returncode == 0, describe(listed)
    records = json.loads(listed.stdout)
    assert [r["execution_id"] for r in records] == [bad["execution_id"], good["execution_id"]]
    assert records[1]["final_context"] == good["final_context"]

    def ids_listed(*args: str) -> List[str]:
        proc = cli("--db", database_url, "--json", "executions", "list", *args)
        assert proc.returncode == 0, describe(proc)
        return [r["execution_id"] for r in json.loads(proc.stdout)]

    assert ids_listed("--workflow", f"{flows}.pipeline") == [good["execution_id"]]
    assert ids_listed("--status", "failed") == [bad["execution_id"]]
    assert ids_listed("--limit", "1") == [bad["execution_id"]]
    assert ids_listed("--workflow", "no such workflow") == []

    show = cli("--db", database_url, "executions", "show", bad["execution_id"])
    assert show.returncode == 0, describe(show)
    assert f"execution  {bad['execution_id']}" in show.stdout
    assert "status     Failed" in show.stdout
    assert f"error      task '{flows}.explode' failed: ValueError: boom: bad input" in show.stdout
    task_rows = {line.split()[0]: line for line in show.stdout.split("\n\n", 1)[1].splitlines()[1:]}
    assert task_rows[f"{flows}.extract"].split()[1:3] == ["Completed", "1"]
    assert task_rows[f"{flows}.explode"].split()[1:3] == ["Failed", "1"]
    assert task_rows[f"{flows}.explode"].endswith("ValueError: boom: bad input"), "first line of the error only"

    shown = cli("--db", database_url, "executions", "show", good["execution_id"], "--json")
    assert shown.returncode == 0, describe(shown)
    assert json.loads(shown.stdout) == good


def test_unknown_or_malformed_execution_ids_are_user_errors(cli, database_url):
    unknown = str(uuid.uuid4())
    for action in ("show", "cancel", "resume", "wait"):
        assert_user_error(cli("--db", database_url, "executions", action, unknown), unknown)
    assert_user_error(cli("--db", database_url, "executions", "show", "not-an-id"),
                      "not a valid execution id")


def test_executions_with_no_runs(cli, database_url):
    proc = cli("--db", database_url, "executions", "list")
    assert (proc.returncode, proc.stdout) == (0, "no executions\n"), describe(proc)
    proc = cli("--db", database_url, "executions", "list", "--json")
    assert (proc.returncode, json.loads(proc.stdout)) == (0, []), describe(proc)


def test_bad_arguments_exit_2(cli):
    for args in (["executions"], ["executions", "list", "--limit", "many"], ["executions", "list", "--status", "Odd"],
                 [], ["frobnicate"]):
        proc = cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, describe(proc)
        assert "cloacina" in proc.stderr and "error:" in proc.stderr, describe(proc)


async def test_cancel_resume_and_wait(cli_procs, cli, client, database_url, tmp_path, flows):
    """A worker runs a workflow whose first task waits for a file: wait times out, cancel stops it,
    resume runs it again and wait sees it complete once the file is there."""
    procs = cli_procs
    workdir = procs.workdir
    worker = procs.start(["-m", "cloacina", "--db", database_url, "worker", "flows"], name="worker")
    await until(lambda: "worker started" in worker.stderr(), what="worker started", watch=[worker])

    gate_file = tmp_path / "gate"
    gated = load_in_process(workdir / "flows.py")["gated"]
    execution_id = await client.submit(gated, {"gate": str(gate_file)})

    async def gate_running() -> bool:
        record = await client.get_execution(execution_id)
        return record is not None and record["task_results"][0]["status"] == "Running"

    await until(gate_running, what="the gate task runs", watch=[worker])

    async def run(*args: str) -> "subprocess.CompletedProcess[str]":
        return await cli.off_loop("--db", database_url, "executions", *args)

    still = await run("wait", execution_id, "--timeout", "0.3")
    assert still.returncode == 1, describe(still)
    assert still.stderr.strip() == (f"cloacina: error: execution {execution_id} is still Running after 0.3s "
                                    f"(it goes on)"), describe(still)

    cancelled = await run("cancel", execution_id)
    assert (cancelled.returncode, cancelled.stdout) == (0, f"execution {execution_id} cancelled\n"), describe(cancelled)
    waited = await run("wait", execution_id)
    assert waited.returncode == 1, describe(waited)
    assert f"execution {execution_id} Cancelled in " in waited.stdout, describe(waited)
    again = await run("cancel", execution_id)
    assert (again.returncode, again.stdout) == (0, f"execution {execution_id} was already cancelled\n"), describe(again)

    resumed = await run("resume", execution_id)
    assert resumed.returncode == 0 and f"execution {execution_id} resumed" in resumed.stdout, describe(resumed)
    gate_file.write_text("go")
    done = await run("wait", execution_id, "--timeout", str(DEADLINE), "--json")
    assert done.returncode == 0, describe(done) + "\n" + worker.describe()
    record = json.loads(done.stdout)
    assert record["status"] == "Completed" and record["final_context"]["after"] is True
    assert [t["attempts"] for t in record["task_results"]] == [2, 1], "the gate ran again after the resume"

    not_resumable = await run("resume", execution_id)
    assert_user_error(not_resumable, "Completed")
    not_cancellable = await run("cancel", execution_id)
    assert_user_error(not_cancellable, "already ended Completed")

    assert await stopped(worker) == 0, worker.describe()


# --- stored text on a terminal -----------------------------------------------------------------

def assert_printable(proc: "subprocess.CompletedProcess[str]") -> None:
    """No control character but newline and tab in the output; the hostile text shows, escaped."""
    text = proc.stdout + proc.stderr
    assert not CONTROL.search(text), describe(proc)
    assert r"title\x1b]0;pwned\x07 clear\x1b[2J link\x1b]8;;http://evil\x1b\link" in text, describe(proc)


def test_stored_errors_and_reasons_are_printed_escaped(cli, database_url, hostile):
    """Errors and skip reasons holding terminal escapes (a window title, clear screen, an OSC 8
    link, C1, DEL) come out as visible escapes in every text output; JSON keeps the text as is."""
    ran = cli("--db", database_url, "run", "hostile:hostile")
    assert ran.returncode == 1, describe(ran)
    assert_printable(ran)
    assert r"csi\x9b31m del\x7f" in ran.stdout, describe(ran)
    execution_id = ran.stdout.split()[1]
    for args in (["executions", "show", execution_id], ["executions", "wait", execution_id]):
        proc = cli("--db", database_url, *args)
        assert proc.returncode in (0, 1), describe(proc)
        assert_printable(proc)
    show = cli("--db", database_url, "executions", "show", execution_id)
    assert "second\tline\\x1b[0m" in show.stdout, "multi-line errors keep their lines and tabs"

    shown = cli("--db", database_url, "--json", "executions", "show", execution_id)
    assert shown.returncode == 0, describe(shown)
    tasks = {t["task_id"]: t for t in json.loads(shown.stdout)["task_results"]}
    assert "\x1b]0;pwned\x07" in tasks[f"{hostile}.fails"]["error"]
    assert tasks[f"{hostile}.skips"]["reason"].startswith("title\x1b]0;pwned\x07 clear\x1b[2J")


async def test_the_worker_log_escapes_task_errors(cli_procs, client, database_url, hostile):
    procs = cli_procs
    worker = procs.start(["-m", "cloacina", "--db", database_url, "worker", "hostile"], name="worker")
    await until(lambda: "worker started" in worker.stderr(), what="worker started", watch=[worker])
    workflow = load_in_process(procs.workdir / "hostile.py")["hostile"]
    result = await finished(client, await client.submit(workflow), procs=procs)
    assert result["status"] == "Failed", result
    await until(lambda: "attempt 1 Failed" in worker.stderr(), what="the failure logged", watch=[worker])
    assert await stopped(worker) == 0, worker.describe()
    log = worker.stderr()
    assert not CONTROL.search(log), repr(log)
    assert r"title\x1b]0;pwned\x07 clear\x1b[2J" in log, log


# --- worker ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_worker_runs_submitted_executions_until_signalled(cli_procs, client, database_url, flows, sig):
    procs = cli_procs
    workdir = procs.workdir
    worker = procs.start(["-m", "cloacina", "worker", "flows", "--db", database_url, "--log-level", "debug",
                          "--max-concurrency", "4"], name="worker")
    await until(lambda: "worker started" in worker.stderr(), what="worker started", watch=[worker])

    pipeline = load_in_process(workdir / "flows.py")["pipeline"]
    execution_id = await client.submit(pipeline, {"n": 5})
    result = await finished(client, execution_id, procs=procs)
    assert result["status"] == "Completed" and result["final_context"]["total"] == 20, result

    os.kill(worker.pid, sig)
    try:
        code = await exited(worker)
    except AssertionError:
        raise AssertionError(f"no exit within {DEADLINE}s of {sig.name}\n{worker.describe()}") from None
    assert code == 0, worker.describe()
    log = worker.stderr()
    assert f"backend {BACKEND}" in log and "database from --db" in log and "max concurrency 4" in log, log
    assert f"{sig.name} received: stopping" in log, log
    assert log.rstrip().endswith("worker stopped"), log
    assert "Traceback" not in log, log


async def test_a_second_signal_stops_the_worker_at_once_and_the_task_runs_again(cli_procs, client, database_url,
                                                                                tmp_path):
    """The first SIGTERM waits for the running task (blocked here); a second one exits at once
    (130) without cancelling the execution, and the next worker runs the task again."""
    procs = cli_procs
    first = procs.start(["-m", "cloacina", "--db", database_url, "worker", "flows"], name="first")
    await until(lambda: "worker started" in first.stderr(), what="first worker started", watch=[first])
    gate_file = tmp_path / "gate"
    gated = load_in_process(procs.workdir / "flows.py")["gated"]
    execution_id = await client.submit(gated, {"gate": str(gate_file)})

    async def gate_running() -> bool:
        record = await client.get_execution(execution_id)
        return record is not None and record["task_results"][0]["status"] == "Running"

    await until(gate_running, what="the gate task runs", watch=[first])
    os.kill(first.pid, signal.SIGTERM)
    await until(lambda: "SIGTERM received: stopping" in first.stderr(), what="first SIGTERM logged", watch=[first])
    os.kill(first.pid, signal.SIGTERM)
    assert await exited(first) == 130, first.describe()
    assert "SIGTERM received again: stopping at once" in first.stderr(), first.describe()
    record = await client.get_execution(execution_id)
    assert record is not None and record["status"] == "Running", record

    gate_file.write_text("go")
    second = procs.start(["-m", "cloacina", "--db", database_url, "worker", "flows"], name="second")
    result = await finished(client, execution_id, procs=procs)
    assert result["status"] == "Completed" and result["final_context"]["after"] is True, result
    assert await stopped(second) == 0, second.describe()


def test_worker_with_a_bad_module_exits_2(cli, tmp_path, database_url):
    assert_user_error(cli("--db", database_url, "worker", "no_such_tasks_module"),
                      "cannot import module 'no_such_tasks_module'")
    (tmp_path / "exits.py").write_text(EXITS)
    for module in ("exits", "exits.py"):
        assert_user_error(cli("--db", database_url, "worker", module),
                          f"cannot import module '{module}': it called sys.exit(0) while being imported")


# --- graph, version, entry point ----------------------------------------------------------------

def test_graph_in_both_formats(cli, flows):
    mermaid = cli("graph", "flows:broken")
    assert mermaid.returncode == 0, describe(mermaid)
    assert mermaid.stdout.startswith("flowchart TD"), describe(mermaid)
    assert f'["{flows}.explode"]' in mermaid.stdout and "-->" in mermaid.stdout

    dot = cli("graph", "flows:broken", "--format", "dot")
    assert dot.returncode == 0, describe(dot)
    assert dot.stdout.startswith(f'digraph "{flows}.broken"'), describe(dot)
    assert f'"{flows}.extract" -> "{flows}.explode";' in dot.stdout

    assert_user_error(cli("graph", "flows:not_a_workflow"), "not a cloacina.Workflow")


def test_version(cli):
    proc = cli("--version")
    assert proc.returncode == 0, describe(proc)
    version = importlib.metadata.version("cloacina")
    assert proc.stdout.strip() == f"cloacina {version} (backend {BACKEND} {cl.__version__})"


def test_help_describes_every_command(cli):
    proc = cli("--help")
    assert proc.returncode == 0, describe(proc)
    for command in ("run", "executions", "worker", "graph", "CLOACINA_DATABASE_URL"):
        assert command in proc.stdout
    for command in (["run"], ["worker"], ["graph"], ["executions", "wait"]):
        sub = cli(*command, "--help")
        assert sub.returncode == 0 and "usage: cloacina " + " ".join(command) in sub.stdout, describe(sub)


def test_console_script_entry_point(tmp_path, env):
    scripts = [ep for ep in importlib.metadata.entry_points(group="console_scripts")
               if ep.name == "cloacina" and ep.dist is not None and ep.dist.name == "cloacina"]
    assert [ep.value for ep in scripts] == ["cloacina.cli:main"]
    script = Path(sys.executable).parent / "cloacina"
    if not script.is_file():
        pytest.skip(f"console script not installed next to {sys.executable}")
    proc = subprocess.run([str(script), "--version"], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=DEADLINE, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and proc.stdout.startswith("cloacina "), describe(proc)


# --- secrets -----------------------------------------------------------------------------------

def _unreachable_url(free_port: int) -> str:
    """A PostgreSQL URL with a password: refused on the postgres backend, not its URL on sqlite."""
    return f"postgresql://cloacina_cli:{PASSWORD}@127.0.0.1:{free_port}/nowhere"


@pytest.mark.parametrize("command", [
    ["executions", "list"],
    ["executions", "show", "00000000-0000-0000-0000-000000000000"],
    ["run", "flows:pipeline", "--context", '{"n": 1}'],
    ["worker", "flows"],
], ids=["list", "show", "run", "worker"])
@pytest.mark.parametrize("via", ["--db", "env"])
def test_a_password_in_the_url_is_never_printed(cli, flows, free_port, command, via):
    url = _unreachable_url(free_port)
    if via == "--db":
        proc = cli("--db", url, *command)
    else:
        proc = cli(*command, env={"CLOACINA_DATABASE_URL": url})
    assert PASSWORD not in proc.stdout + proc.stderr, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("cloacina: error: ")]
    assert proc.returncode == 2 and len(errors) == 1, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)


@pytest.mark.sqlite_only
def test_a_database_file_that_cannot_be_opened(cli, tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    assert_user_error(cli("--db", f"sqlite:///{missing}", "executions", "list"),
                      "could not open SQLite database")


# --- rendering (no process, no database) --------------------------------------------------------

def _task(task_id: str, status: str, **fields: Any) -> Dict[str, Any]:
    record: Dict[str, Any] = {"task_id": task_id, "status": status, "attempts": 1, "error": None, "reason": None,
                              "started_at": None, "completed_at": None}
    record.update(fields)
    return record


@pytest.fixture
def render(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``cloacina.cli.render``; the dispatcher, if imported here first, binds the backend under test."""
    monkeypatch.setenv("CLOACINA_BACKEND", BACKEND)
    return importlib.import_module("cloacina.cli.render")


def test_progress_line_rendering(render):
    progress_line = render.progress_line

    tasks = [
        _task("extract", "Completed"),
        _task("clean", "Running"),
        _task("rates", "Running"),
        _task("report", "Pending", attempts=0),
    ]
    assert progress_line(tasks, elapsed=1.234) == "[#####---------------] 1/4 done  1.23s  running: clean, rates"
    tasks[1]["status"], tasks[2]["status"] = "Failed", "Completed"
    tasks[3]["status"] = "Skipped"
    assert progress_line(tasks, elapsed=75) == "[####################] 4/4 done, 1 failed  1m15s"
    narrow = progress_line([_task(f"task_{i}", "Running") for i in range(20)], elapsed=0.5, width=40)
    assert len(narrow) == 40 and narrow.startswith("[--------------------] 0/20 done") and narrow.endswith("...")
    assert progress_line([], elapsed=0) == "[####################] 0/0 done  0.00s"


def test_task_lines_and_tables_rendering(render):
    format_duration, task_line, tasks_table = render.format_duration, render.task_line, render.tasks_table

    done = _task("extract", "Completed", started_at="2026-01-01T00:00:00.000000+00:00",
                 completed_at="2026-01-01T00:00:00.012000+00:00")
    assert task_line(done) == "task extract Completed 0.01s"
    failed = _task("load", "Failed", attempts=3, error="ValueError: boom\nmore", started_at="2026-01-01T00:00:00+00:00",
                   completed_at="2026-01-01T00:00:02.5+00:00")
    assert task_line(failed) == "task load Failed 2.50s (3 attempts) ValueError: boom"
    skipped = _task("report", "Skipped", attempts=0, reason="upstream 'load' failed")
    assert task_line(skipped) == "task report Skipped (upstream 'load' failed)"
    assert [format_duration(s) for s in (None, 0.004, 59.999, 60, 3599, 3600 * 2 + 300)] == \
        ["-", "0.00s", "1m00s", "1m00s", "59m59s", "2h05m"]
    long_error = _task("x", "Failed", error="E" * 200)
    row = tasks_table([long_error]).splitlines()[1]
    assert row.endswith("E" * 57 + "...") and len(row.split()[-1]) == 60


def test_printable_rendering(render):
    printable = render.printable
    hostile = "a\x1b]0;t\x07b\x00\r\x7f\x9b\x85\u00a0\u00e9\n\tz"
    assert printable(hostile) == r"a\x1b]0;t\x07b\x00\x0d\x7f\x9b\x85" + "\u00a0\u00e9" + r"\x0a\x09z"
    assert printable(hostile, keep_lines=True) == r"a\x1b]0;t\x07b\x00\x0d\x7f\x9b\x85" + "\u00a0\u00e9\n\tz"
    assert printable(printable(hostile)) == printable(hostile)
    task = _task("t\x1b[2J", "Failed", error="boom \x1b]8;;http://evil\x1b\\x\x1b]8;;\x1b\\")
    assert render.task_line(task) == r"task t\x1b[2J Failed boom \x1b]8;;http://evil\x1b\x\x1b]8;;\x1b" + "\\"
    assert render.tasks_table([task]).splitlines()[1].split()[0] == r"t\x1b[2J"
    summary = render.execution_summary({"execution_id": "e", "status": "Failed", "error": "one\x1b[2J\ntwo",
                                        "reason": "r\x07", "final_context": {"k": "\x1b"}})
    assert summary.splitlines()[1:] == [r"error: one\x1b[2J", "       two", r"reason: r\x07",
                                        'final context: {"k": "\\u001b"}']

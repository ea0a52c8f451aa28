"""Child processes for the durable-execution tests: start them, watch them, kill and reap them.

Test modules import the fixtures they need from here (``from procs import procs, client``):

- ``procs``: a :class:`Procs` group; every process it started is SIGKILLed (if still alive) and
  reaped when the test ends, whatever happened.
- ``client``: a submit-only executor (``worker=False``) of the test process on the test's database.

Workers run ``durable_worker.py``; the tasks they run append one line per event to a shared file
(see :func:`durable_worker.record`), read back with :func:`read_events`.

Waiting is always polling a condition (a file, a process, the database) every 50 ms up to a
generous deadline; nothing here sleeps and then asserts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import pytest

from backend import cl

TESTS_DIR = Path(__file__).resolve().parent
WORKER_SCRIPT = TESTS_DIR / "durable_worker.py"

DEADLINE = 30.0   # seconds allowed for anything we wait for (process start, a line, an execution)
POLL = 0.05       # seconds between two looks

FINAL_STATUSES = ("Completed", "Failed", "Cancelled")


# --- processes ---------------------------------------------------------------------------------

class Proc:
    """One child process; its stdout and stderr go to files (no pipe can fill up and block it)."""

    def __init__(self, name: str, popen: "subprocess.Popen[bytes]", stdout_path: Path, stderr_path: Path,
                 ready_path: Optional[Path]) -> None:
        self.name = name
        self.popen = popen
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.ready_path = ready_path
        self.killed_at: Optional[float] = None  # time.time() of our SIGKILL
        self.ids_path: Optional[Path] = None     # where a submitting worker writes the ids it got

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL (by pid) if still running, then reap."""
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.killed_at = time.time()
            except ProcessLookupError:
                pass
        self.popen.wait()

    def terminate(self, timeout: float = DEADLINE) -> int:
        """SIGTERM, wait for the exit (SIGKILL and fail if it takes longer than ``timeout``); returns the code."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} (pid {self.pid}) did not exit within {timeout}s of SIGTERM\n"
                                 f"{self.describe()}") from None

    def stdout(self) -> str:
        return _read_text(self.stdout_path)

    def stderr(self) -> str:
        return _read_text(self.stderr_path)

    def output(self) -> str:
        return self.stdout() + self.stderr()

    def ready_info(self) -> Optional[Dict[str, Any]]:
        if self.ready_path is None or not self.ready_path.exists():
            return None
        return json.loads(self.ready_path.read_text())

    def describe(self, tail: int = 4000) -> str:
        state = "running" if self.alive() else f"exited {self.returncode}"
        out, err = self.stdout()[-tail:], self.stderr()[-tail:]
        return f"--- {self.name} (pid {self.pid}, {state})\n[stdout]\n{out}\n[stderr]\n{err}"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class Procs:
    """The child processes of one test."""

    def __init__(self, python: str, env: Dict[str, str], workdir: Path) -> None:
        self.python = python
        self.env = dict(env)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.all: List[Proc] = []
        self._count = 0

    def _tag(self, name: str) -> str:
        self._count += 1
        return f"{self._count:02d}_{name}"

    def start(self, argv: Sequence[str], *, name: str, wrapper: Sequence[str] = (),
              ready_path: Optional[Path] = None, tag: Optional[str] = None) -> Proc:
        """Runs ``python -u -X faulthandler argv...`` (optionally behind ``wrapper``, which must exec
        it: same pid); a process that crashes writes every thread's Python stack to its stderr."""
        tag = tag or self._tag(name)
        stdout_path = self.workdir / f"{tag}.stdout"
        stderr_path = self.workdir / f"{tag}.stderr"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            popen = subprocess.Popen([*wrapper, self.python, "-u", "-X", "faulthandler", *argv], env=self.env, cwd=str(self.workdir),
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        proc = Proc(name, popen, stdout_path, stderr_path, ready_path)
        self.all.append(proc)
        return proc

    def start_worker(self, url: str, prefix: str, out: Path, control: Path, *, name: str = "worker",
                     lease_timeout: Optional[float] = None, max_concurrency: int = 8,
                     pool_size: Optional[int] = None, worker: bool = True, width: int = 3,
                     sleep: Optional[Sequence[float]] = None, hang: Iterable[str] = (),
                     fail: Iterable[str] = (), submit: Optional[str] = None, count: int = 1,
                     run_prefix: str = "r", key: Optional[str] = None, go: Optional[Path] = None,
                     exit_after_submit: bool = False, wrapper: Sequence[str] = ()) -> Proc:
        """Starts ``durable_worker.py`` (see its --help); the ready file appears once it is initialized."""
        tag = self._tag(name)
        ready_path = self.workdir / f"{tag}.ready"
        ids_path = self.workdir / f"{tag}.ids.json"
        argv: List[str] = [str(WORKER_SCRIPT), "--url", url, "--prefix", prefix, "--out", str(out),
                           "--control", str(control), "--ready", str(ready_path),
                           "--max-concurrency", str(max_concurrency), "--width", str(width)]
        if lease_timeout is not None:
            argv += ["--lease-timeout", repr(float(lease_timeout))]
        if pool_size is not None:
            argv += ["--pool-size", str(pool_size)]
        if not worker:
            argv.append("--no-worker")
        if sleep is not None:
            argv += ["--sleep", repr(float(sleep[0])), repr(float(sleep[1]))]
        for task in hang:
            argv += ["--hang", task]
        for task in fail:
            argv += ["--fail", task]
        if submit is not None:
            argv += ["--submit", submit, "--count", str(count), "--run-prefix", run_prefix,
                     "--ids-out", str(ids_path)]
            if key is not None:
                argv += ["--key", key]
            if go is not None:
                argv += ["--go", str(go)]
            if exit_after_submit:
                argv.append("--exit-after-submit")
        proc = self.start(argv, name=name, wrapper=wrapper, ready_path=ready_path, tag=tag)
        proc.ids_path = ids_path if submit is not None else None
        return proc

    def alive(self) -> List[Proc]:
        return [p for p in self.all if p.alive()]

    def describe(self) -> str:
        return "\n".join(p.describe() for p in self.all)

    def close(self) -> None:
        """SIGKILL every process still running, by pid, and reap them all."""
        for proc in self.all:
            try:
                proc.kill()
            except Exception:  # keep going: every other process must be reaped too
                pass


def submitted_ids(proc: Proc) -> List[str]:
    """The execution ids a process started with ``submit=`` wrote (the file must exist)."""
    assert proc.ids_path is not None, f"{proc.name} was not started with submit="
    return list(json.loads(proc.ids_path.read_text()))


# --- waiting -----------------------------------------------------------------------------------

Predicate = Callable[[], Union[bool, Awaitable[bool]]]


async def until(predicate: Predicate, *, what: str, timeout: float = DEADLINE,
                watch: Sequence[Proc] = ()) -> float:
    """Polls ``predicate`` (sync or async) every 50 ms until true; returns the seconds it took.

    Fails after ``timeout`` seconds, or as soon as a process in ``watch`` has exited (with its output).
    """
    started = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return time.monotonic() - started
        for proc in watch:
            if not proc.alive():
                raise AssertionError(f"waiting for {what}: {proc.name} exited\n{proc.describe()}")
        if time.monotonic() - started > timeout:
            details = "\n".join(p.describe() for p in watch)
            raise AssertionError(f"{what}: not true after {timeout}s\n{details}")
        await asyncio.sleep(POLL)


async def ready(*workers: Proc, timeout: float = DEADLINE) -> List[Dict[str, Any]]:
    """Waits until every worker has written its ready file; returns their ready infos."""
    for proc in workers:
        await until(lambda p=proc: p.ready_info() is not None, what=f"{proc.name} ready", timeout=timeout,
                    watch=[proc])
    return [p.ready_info() or {} for p in workers]


async def ids_of(proc: Proc, timeout: float = DEADLINE) -> List[str]:
    """Waits until a process started with ``submit=`` has written its execution ids; returns them."""
    assert proc.ids_path is not None, f"{proc.name} was not started with submit="
    path = proc.ids_path
    await until(path.exists, what=f"{proc.name} wrote its execution ids", timeout=timeout, watch=[proc])
    return submitted_ids(proc)


async def exited(proc: Proc, timeout: float = DEADLINE) -> int:
    await until(lambda: not proc.alive(), what=f"{proc.name} exits", timeout=timeout)
    code = proc.returncode
    assert code is not None
    return code


async def stopped(proc: Proc, timeout: float = DEADLINE) -> int:
    """SIGTERM (by pid) and wait for the exit without blocking the event loop; returns the exit code.

    On timeout the process is SIGKILLed and the test fails with its output.
    """
    if proc.alive():
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return await exited(proc, timeout)
    except AssertionError:
        proc.kill()
        raise AssertionError(f"{proc.name} did not exit within {timeout}s of SIGTERM\n{proc.describe()}") from None


async def finished(executor: Any, execution_id: str, *, timeout: float = DEADLINE, what: str = "execution",
                   procs: Optional[Procs] = None) -> Dict[str, Any]:
    """``executor.wait(execution_id, timeout=...)`` with a readable failure when it times out."""
    try:
        return await executor.wait(execution_id, timeout=timeout)
    except TimeoutError:
        record = await executor.get_execution(execution_id)
        details = procs.describe() if procs is not None else ""
        raise AssertionError(f"{what} {execution_id} not finished after {timeout}s: {summary(record)}\n"
                             f"{details}") from None


def summary(record: Optional[Dict[str, Any]]) -> str:
    """One line per task: status, attempts, history statuses, error."""
    if record is None:
        return "<no such execution>"
    lines = [f"status={record.get('status')} reason={record.get('reason')!r} error={record.get('error')!r}"]
    for tr in record.get("task_results", []):
        history = [(h.get("attempt"), h.get("status"), h.get("error")) for h in tr.get("history") or []]
        lines.append(f"  {tr['task_id']}: {tr['status']} attempts={tr['attempts']} reason={tr.get('reason')!r} "
                     f"error={tr.get('error')!r} history={history}")
    return "\n".join(lines)


# --- the side-effect file ----------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One line of the side-effect file: ``<run> <task_id> <pid> <kind> <unix time>``."""

    run: str
    task: str
    pid: int
    kind: str   # started | finished | failed | cancelled
    ts: float


def max_overlap(intervals: Sequence[Tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at the same instant as a start comes first)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = most = 0
    for _, step in points:
        open_now += step
        most = max(most, open_now)
    return most


def read_events(path: Path) -> List[Event]:
    if not path.exists():
        return []
    events = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split(" ")
        assert len(parts) == 5, f"{path}:{number}: malformed (interleaved?) line {line!r}"
        events.append(Event(parts[0], parts[1], int(parts[2]), parts[3], float(parts[4])))
    return events


def select(events: Iterable[Event], *, run: Optional[str] = None, task: Optional[str] = None,
           kind: Optional[str] = None, pid: Optional[int] = None) -> List[Event]:
    return [e for e in events
            if (run is None or e.run == run) and (task is None or e.task == task)
            and (kind is None or e.kind == kind) and (pid is None or e.pid == pid)]


def has_event(path: Path, **criteria: Any) -> Callable[[], bool]:
    """A predicate for :func:`until`: some line of ``path`` matches."""
    return lambda: bool(select(read_events(path), **criteria))


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture
def procs(database_url: str, python: str, subprocess_env: Dict[str, str], tmp_path: Path) -> Iterator[Procs]:
    """Child processes of this test, killed and reaped at teardown (before the database is dropped)."""
    group = Procs(python, subprocess_env, tmp_path / "procs")
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Any]:
    """A submit-only executor of the test process: it never runs a task."""
    ex = cl.UnifiedExecutor()
    await ex.initialize(database_url, worker=False)
    try:
        yield ex
    finally:
        await ex.shutdown()


@pytest.fixture
def effects(tmp_path: Path) -> Path:
    """The side-effect file tasks append to."""
    return tmp_path / "effects.log"


@pytest.fixture
def control(tmp_path: Path) -> Path:
    """A directory of marker files tasks look at (``release_<task>``, ``ok_<task>``)."""
    path = tmp_path / "control"
    path.mkdir()
    return path

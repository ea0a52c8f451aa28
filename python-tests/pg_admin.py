"""Reaching and controlling the PostgreSQL server the postgres run of the suite uses.

The harness (``angreal task python_tests``) passes:

- ``CLOACINA_TEST_POSTGRES_URL``: a superuser URL, e.g. ``postgresql://cloacina@127.0.0.1:5433/postgres``.
- ``CLOACINA_TEST_POSTGRES_CTL`` (only for a server it started): JSON with ``pg_ctl``, ``data_dir``,
  ``run_as`` (a user name or null) and ``start_options``, so tests can stop and restart it.
- ``CLOACINA_TEST_PSQL`` (only for a server it started): the psql to use; else psql on PATH.

A server the harness started also has the roles ``cloacina_tls`` (TLS only) and ``cloacina_pw``
(password ``s3cret-Pw!``); see ``.angreal/postgres_server.py``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
import uuid
from typing import Any, Dict, List, Optional
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

ADMIN_URL: Optional[str] = os.environ.get("CLOACINA_TEST_POSTGRES_URL") or None
_CTL: Optional[Dict[str, Any]] = json.loads(os.environ.get("CLOACINA_TEST_POSTGRES_CTL") or "null")
PSQL: Optional[str] = os.environ.get("CLOACINA_TEST_PSQL") or shutil.which("psql")

# Roles of the harness-managed server (.angreal/postgres_server.py).
MANAGED = _CTL is not None
TLS_USER = "cloacina_tls"
PASSWORD_USER = "cloacina_pw"
TEST_PASSWORD = "s3cret-Pw!"


class PsqlError(AssertionError):
    """psql failed; the message carries its stderr."""


def psql(sql: str, url: Optional[str] = None, timeout: float = 30) -> str:
    """Run ``sql`` (admin URL by default) and return the unaligned, tuples-only output."""
    target = url or ADMIN_URL
    assert target, "CLOACINA_TEST_POSTGRES_URL is not set"
    assert PSQL, "psql not found: install Debian's postgresql-client or set CLOACINA_TEST_PSQL"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    proc = subprocess.run([PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", target, "-c", sql],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise PsqlError(f"psql failed ({proc.returncode}) running {sql!r}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def psql_rows(sql: str, url: Optional[str] = None) -> List[str]:
    out = psql(sql, url)
    return [line for line in out.splitlines() if line]


def url_with(url: str, *, database: Optional[str] = None, user: Optional[str] = None,
             password: Optional[str] = None, host: Optional[str] = None, port: Optional[int] = None,
             scheme: Optional[str] = None, query: Optional[Dict[str, str]] = None, **params: str) -> str:
    """``url`` with some parts replaced and query parameters added (values percent-encoded).

    Parameters come from ``query`` (for names that clash with the keywords, like ``password``)
    and from the remaining keyword arguments.
    """
    params = {**(query or {}), **params}
    parts = urlsplit(url)
    old_user = parts.username or ""
    old_host = parts.hostname or "127.0.0.1"
    old_port = parts.port
    userinfo = quote(user if user is not None else old_user, safe="")
    if password is not None:
        userinfo += ":" + quote(password, safe="")
    elif user is None and parts.password is not None:
        userinfo += ":" + quote(parts.password, safe="")
    netloc = f"{userinfo}@" if userinfo else ""
    netloc += host or old_host
    final_port = port if port is not None else old_port
    if final_port is not None:
        netloc += f":{final_port}"
    path = "/" + database if database is not None else parts.path
    text = parts.query
    if params:
        text = (text + "&" if text else "") + urlencode(params)
    return urlunsplit((scheme or parts.scheme, netloc, path, text, ""))


def server_address() -> Optional[str]:
    """host:port of the admin URL, for messages (never the password)."""
    if not ADMIN_URL:
        return None
    parts = urlsplit(ADMIN_URL)
    return f"{parts.hostname}:{parts.port or 5432}"


def new_database_name() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


def create_database(owner: Optional[str] = None) -> str:
    """A new, empty database (optionally owned by ``owner``); returns its name."""
    name = new_database_name()
    psql(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
    return name


def drop_database(name: str) -> None:
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Spares:
    """New databases made ahead and used ones dropped behind, on one background thread, so a test
    waits for neither (each costs two psql runs, ~0.15 s, on every PostgreSQL test).

    ``take()`` returns a new, empty database; ``give_back(name)`` drops it later; ``close()``
    (at the end of the session) drops what is left and stops the thread. While a test has the
    server stopped (``ServerControl``), the thread waits (``hold``/``release``); a job that still
    fails is tried again a few times.
    """

    AHEAD = 2
    TRIES = 5

    def __init__(self) -> None:
        self._jobs: "queue.Queue[Optional[str]]" = queue.Queue()   # a name to drop, "" to create, None to stop
        self._made: "queue.Queue[object]" = queue.Queue()          # names made, or the error that stopped one
        self._thread: Optional[threading.Thread] = None
        self.drop_errors: List[str] = []
        self._quiet = threading.Lock()   # held by each job, and by a test while the server is down
        self._held = False

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                made = self._run(job)
                if made is not None:
                    self._made.put(made)
            except Exception as exc:
                if job:
                    self.drop_errors.append(f"dropping {job}: {exc}")
                else:
                    self._made.put(exc)  # the test waiting for this database fails with it

    def _run(self, job: str) -> Optional[str]:
        """Drops ``job`` (or, when empty, makes a database and returns its name), trying again
        while the server refuses."""
        for attempt in range(self.TRIES):
            with self._quiet:
                try:
                    if job:
                        drop_database(job)
                        return None
                    return create_database()
                except PsqlError:
                    if attempt == self.TRIES - 1:
                        raise
            time.sleep(1.0)
        return None

    def hold(self) -> None:
        """Waits for the job in progress, then runs no other until ``release``."""
        if not self._held:
            self._quiet.acquire()
            self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._quiet.release()

    def take(self) -> str:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="pg-spares", daemon=True)
            self._thread.start()
            for _ in range(self.AHEAD):
                self._jobs.put("")
        self._jobs.put("")
        made = self._made.get(timeout=120)
        if isinstance(made, BaseException):
            raise made
        assert isinstance(made, str)
        return made

    def give_back(self, name: str) -> None:
        self._jobs.put(name)

    def close(self) -> None:
        if self._thread is None:
            return
        self._jobs.put(None)
        self._thread.join(timeout=120)
        while not self._made.empty():
            made = self._made.get()
            if isinstance(made, str):
                drop_database(made)
        self._thread = None
        if self.drop_errors:
            raise PsqlError("test databases could not be dropped: " + "; ".join(self.drop_errors))


spares = Spares()


def database_url(name: str, **kwargs: Any) -> str:
    assert ADMIN_URL, "CLOACINA_TEST_POSTGRES_URL is not set"
    return url_with(ADMIN_URL, database=name, **kwargs)


class ServerControl:
    """Stops and starts the harness-managed server (CLOACINA_TEST_POSTGRES_CTL)."""

    def __init__(self, ctl: Dict[str, Any]) -> None:
        self.pg_ctl: str = ctl["pg_ctl"]
        self.data_dir: str = ctl["data_dir"]
        self.run_as: Optional[str] = ctl.get("run_as")
        self.start_options: List[str] = list(ctl.get("start_options") or ["-w"])

    def _run(self, args: List[str], timeout: float = 90) -> None:
        cmd = [self.pg_ctl, "-D", self.data_dir, *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=os.path.dirname(self.data_dir))
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")

    def is_running(self) -> bool:
        cmd = [self.pg_ctl, "-D", self.data_dir, "status"]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                              cwd=os.path.dirname(self.data_dir))
        return proc.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        spares.hold()  # no test database is made or dropped while the server is down
        self._run(["-w", "-t", "60", "stop", "-m", mode])

    def start(self) -> None:
        self._run([*self.start_options, "start"])
        spares.release()


def server_control() -> Optional[ServerControl]:
    return ServerControl(_CTL) if _CTL else None


class ConnectionSampler:
    """Counts the server connections carrying one ``application_name``, every ``interval`` seconds.

    One psql session (its own application_name is ``psql``) answers every sample, so sampling
    costs about a millisecond. Use as a context manager; ``peak`` is the highest count seen.
    """

    def __init__(self, application_name: str, interval: float = 0.02) -> None:
        assert "'" not in application_name
        self.application_name = application_name
        self.interval = interval
        self.samples: List[int] = []
        self.error: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._proc: Optional[subprocess.Popen] = None

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)

    def __enter__(self) -> "ConnectionSampler":
        assert ADMIN_URL and PSQL
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self._proc = subprocess.Popen([PSQL, "-X", "-q", "-A", "-t", "-d", ADMIN_URL], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
        self._sample()  # the first answer proves the session is up before the caller goes on
        self._thread = threading.Thread(target=self._run, name="pg-connection-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        assert self._proc and self._proc.stdin and self._proc.stdout
        self._proc.stdin.write(
            f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{self.application_name}';\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            raise AssertionError(f"unexpected psql answer {line!r}")
        self.samples.append(int(line))

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self._sample()
        except Exception as exc:  # reported by __exit__
            self.error = f"{type(exc).__name__}: {exc}"

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self._proc:
            if self._proc.stdin:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream:
                    stream.close()
        if self.error and not any(exc):
            raise AssertionError(f"connection sampling failed: {self.error}")

"""Fixtures shared by every test file.

Registry isolation: the task registry is global to the process and is never
cleared, so every test names its tasks and workflows through the ``ids``
fixture, which prefixes them with the test's name and a random suffix.
Tests that need an empty registry (``Workflow(name, None)``) run in a
subprocess.

Databases: on SQLite each test gets a file in its tmp_path; on PostgreSQL a new
database ``t_<hex>`` created through psql against ``CLOACINA_TEST_POSTGRES_URL``
ahead of the test and dropped (``WITH (FORCE)``) behind it, on a background
thread (``pg_admin.spares``), all dropped by the end of the session.

Markers: ``sqlite_only`` and ``postgres_only`` tests are skipped on the other
backend.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import uuid
from pathlib import Path
from typing import AsyncIterator, Callable, Dict, Iterator, List, Optional

import pytest

from backend import BACKEND, IS_POSTGRES, IS_SQLITE, cl

TESTS_DIR = Path(__file__).resolve().parent
BACKEND_MARKERS = {"sqlite_only": "sqlite", "postgres_only": "postgres"}


def pytest_report_header(config: pytest.Config) -> str:
    where = ""
    if IS_POSTGRES:
        import pg_admin

        where = f", server {pg_admin.server_address() or '(CLOACINA_TEST_POSTGRES_URL not set)'}"
        where += ", managed by the harness" if pg_admin.MANAGED else ""
    return f"cloacina backend under test: {BACKEND} ({cl.__name__} {cl.__version__}{where})"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drops the PostgreSQL test databases made ahead or still to be dropped."""
    if IS_POSTGRES:
        import pg_admin

        pg_admin.spares.close()


# Markers given by what a test uses, for a quick development loop that leaves them out
# (``-m "not processes and not browser and not slow"``; see CONTRIBUTING.md).
USES_MARKERS = {"procs": "processes", "browser": "browser"}
# A test allowed more than the default 60 s (``@pytest.mark.timeout(N)``) is slow.
SLOW_AFTER = 60


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    for item in items:
        for marker, backend in BACKEND_MARKERS.items():
            if item.get_closest_marker(marker) is not None and BACKEND != backend:
                item.add_marker(pytest.mark.skip(reason=f"{backend} only (testing {BACKEND})"))
        for fixture, marker in USES_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
        timeout = item.get_closest_marker("timeout")
        if timeout is not None and timeout.args and timeout.args[0] > SLOW_AFTER:
            item.add_marker("slow")


class Ids:
    """Unique task ids / workflow names for one test."""

    def __init__(self, test_name: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_]+", "_", test_name).strip("_")
        self.prefix = f"{safe}_{uuid.uuid4().hex[:8]}"

    def __call__(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def wf(self, name: str = "wf") -> str:
        return f"{self.prefix}.workflow.{name}"


@pytest.fixture
def ids(request: pytest.FixtureRequest) -> Ids:
    return Ids(request.node.name)


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "cloacina.db"


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """The name of a new, empty PostgreSQL database, dropped after the test."""
    import pg_admin

    if not pg_admin.ADMIN_URL:
        pytest.skip("set CLOACINA_TEST_POSTGRES_URL (a superuser URL) to test the postgres backend")
    name = pg_admin.spares.take()
    try:
        yield name
    finally:
        pg_admin.spares.give_back(name)


@pytest.fixture
def make_postgres_database() -> Iterator[Callable[..., str]]:
    """Creates extra PostgreSQL databases on demand (``make(owner=None) -> name``); drops them after."""
    import pg_admin

    if not pg_admin.ADMIN_URL:
        pytest.skip("set CLOACINA_TEST_POSTGRES_URL (a superuser URL) to test the postgres backend")
    created: List[str] = []

    def make(owner: Optional[str] = None) -> str:
        name = pg_admin.create_database(owner)
        created.append(name)
        return name

    try:
        yield make
    finally:
        for name in created:
            pg_admin.drop_database(name)


@pytest.fixture
def managed_server_roles() -> None:
    """Skips unless the harness started the server, with its roles cloacina_tls and cloacina_pw."""
    import pg_admin

    if not pg_admin.MANAGED:
        pytest.skip("needs the roles of the harness-managed server (CLOACINA_TEST_POSTGRES_CTL)")


@pytest.fixture
def database_url(request: pytest.FixtureRequest, sqlite_file: Path) -> str:
    """A fresh database for one test: a SQLite file, or a new PostgreSQL database."""
    if IS_SQLITE:
        return f"sqlite:///{sqlite_file}"
    import pg_admin

    return pg_admin.database_url(request.getfixturevalue("postgres_database"))


@pytest.fixture
async def executor(database_url: str) -> AsyncIterator[object]:
    ex = cl.UnifiedExecutor()
    await ex.initialize(database_url)
    try:
        yield ex
    finally:
        await ex.shutdown()


@pytest.fixture
def sync_executor(database_url: str) -> Iterator[object]:
    """A working ``cloacina.SyncExecutor`` (the dispatcher's) on the test's database."""
    import cloacina

    executor = cloacina.SyncExecutor()
    executor.initialize(database_url)
    try:
        yield executor
    finally:
        executor.shutdown()


@pytest.fixture
async def memory_executor() -> AsyncIterator[object]:
    if not IS_SQLITE:
        pytest.skip("sqlite://:memory: is SQLite only")
    ex = cl.UnifiedExecutor()
    await ex.initialize("sqlite://:memory:")
    try:
        yield ex
    finally:
        await ex.shutdown()


@pytest.fixture
def pg_server() -> Iterator["pg_admin.ServerControl"]:
    """Stops and starts the PostgreSQL server the harness started; left running after the test."""
    import pg_admin

    control = pg_admin.server_control()
    if control is None:
        pytest.skip("needs a server the harness started (CLOACINA_TEST_POSTGRES_CTL)")
    try:
        yield control
    finally:
        if not control.is_running():
            control.start()


@pytest.fixture
def subprocess_env() -> Dict[str, str]:
    """Environment for child interpreters: no backend override, this test dir importable."""
    env = dict(os.environ)
    env.pop("CLOACINA_BACKEND", None)
    env["PYTHONPATH"] = str(TESTS_DIR)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture
def python() -> str:
    return sys.executable


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.accepted: List[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self._listener.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

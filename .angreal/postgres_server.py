"""A throwaway PostgreSQL server for the Python test suite.

``throwaway_postgres()`` is a context manager: it creates a temporary cluster
with ``initdb``, gives it a self-signed TLS certificate and the test roles,
starts it on a free loopback port and, whatever happens inside the ``with``
block, stops it (``pg_ctl stop -m immediate``) and deletes its directory.

Debian's PostgreSQL refuses to run as root, so when this process is root the
server programs run as the ``postgres`` user through ``runuser`` and the
temporary directory is handed to that user; otherwise they run directly.

Roles (all log in from 127.0.0.1 only):

- ``cloacina``: superuser, trust; the admin URL the tests get.
- ``cloacina_tls``: trust over TLS, rejected without it.
- ``cloacina_pw``: needs the password ``TEST_PASSWORD`` (scram-sha-256).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

SERVER_USER = "postgres"
ADMIN_USER = "cloacina"
TLS_USER = "cloacina_tls"
PASSWORD_USER = "cloacina_pw"
TEST_PASSWORD = "s3cret-Pw!"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, psql) were not found. Install them with "
    "`apt-get install postgresql` (Debian package `postgresql`), or point the tests at a running "
    "server with CLOACINA_TEST_POSTGRES_URL=postgresql://USER@HOST:PORT/postgres (a superuser)."
)

# Durability is pointless for a cluster deleted after the run; speed is not.
SERVER_SETTINGS: Dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "ssl": "on",
    "password_encryption": "'scram-sha-256'",
    "log_min_messages": "warning",
    "log_connections": "off",
}

# First match wins: TLS-only user, password user, then trust for everyone on loopback.
PG_HBA = f"""\
# TYPE   DATABASE  USER           ADDRESS        METHOD
local    all       all                           trust
hostssl  all       {TLS_USER}   127.0.0.1/32   trust
host     all       {TLS_USER}   127.0.0.1/32   reject
host     all       {PASSWORD_USER}    127.0.0.1/32   scram-sha-256
host     all       all            127.0.0.1/32   trust
"""


class PostgresUnavailable(Exception):
    """The server could not be set up; the message says why and what to do."""


@dataclass(frozen=True)
class PostgresBinaries:
    """The server programs of one PostgreSQL installation."""

    bin_dir: Path

    @property
    def initdb(self) -> Path:
        return self.bin_dir / "initdb"

    @property
    def pg_ctl(self) -> Path:
        return self.bin_dir / "pg_ctl"

    @property
    def psql(self) -> Path:
        local = self.bin_dir / "psql"
        if local.is_file():
            return local
        found = shutil.which("psql")
        return Path(found) if found else local

    def missing(self) -> List[str]:
        return [p.name for p in (self.initdb, self.pg_ctl, self.psql) if not p.is_file()]


def find_binaries() -> Optional[PostgresBinaries]:
    """PostgreSQL 15 from Debian if present, else the newest Debian version, else pg_ctl on PATH."""
    candidates: List[Path] = []
    override = os.environ.get("CLOACINA_TEST_POSTGRES_BIN")
    if override:
        candidates.append(Path(override))
    candidates.append(Path("/usr/lib/postgresql/15/bin"))
    versions = Path("/usr/lib/postgresql")
    if versions.is_dir():
        numbered = [p for p in versions.iterdir() if p.name.isdigit()]
        candidates.extend(p / "bin" for p in sorted(numbered, key=lambda p: int(p.name), reverse=True))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bin_dir in candidates:
        binaries = PostgresBinaries(bin_dir)
        if not binaries.missing():
            return binaries
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningPostgres:
    """A started throwaway server and what the tests need to reach and control it."""

    binaries: PostgresBinaries
    base_dir: Path
    port: int
    run_as: Optional[str]
    startup_seconds: float = 0.0
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.base_dir / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sockets"

    @property
    def admin_url(self) -> str:
        return f"postgresql://{ADMIN_USER}@127.0.0.1:{self.port}/postgres"

    @property
    def start_options(self) -> List[str]:
        """Arguments that go between ``pg_ctl -D DATA`` and ``start``."""
        return ["-w", "-t", "60", "-l", str(self.log_file)]

    def test_environment(self) -> Dict[str, str]:
        """What pytest needs: the admin URL, and how to restart the server and reach psql."""
        control = {
            "pg_ctl": str(self.binaries.pg_ctl),
            "data_dir": str(self.data_dir),
            "run_as": self.run_as,
            "start_options": self.start_options,
        }
        return {
            "CLOACINA_TEST_POSTGRES_URL": self.admin_url,
            "CLOACINA_TEST_POSTGRES_CTL": json.dumps(control),
            "CLOACINA_TEST_PSQL": str(self.binaries.psql),
        }

    # --- commands ---------------------------------------------------------------------------

    def _command(self, program: Path, args: Sequence[str]) -> List[str]:
        cmd = [str(program), *args]
        return ["runuser", "-u", self.run_as, "--", *cmd] if self.run_as else cmd

    def run(self, program: Path, args: Sequence[str], timeout: float = 120) -> "subprocess.CompletedProcess[str]":
        """Run a server program as the server user; raise PostgresUnavailable with its output on failure."""
        cmd = self._command(program, args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            proc = subprocess.run(cmd, cwd=str(self.base_dir), env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresUnavailable(f"`{' '.join(cmd)}` did not run: {exc}") from None
        if proc.returncode != 0:
            raise PostgresUnavailable(
                f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}{self._log_tail()}"
            )
        return proc

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-20:]
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(lines) if lines else ""

    def psql(self, sql: str) -> None:
        self.run(self.binaries.psql, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                                      "-p", str(self.port), "-U", ADMIN_USER, "-d", "postgres", "-c", sql])

    # --- lifecycle --------------------------------------------------------------------------

    def init_cluster(self) -> None:
        self.run(self.binaries.initdb, ["-D", str(self.data_dir), "-U", ADMIN_USER, "--auth=trust",
                                        "-E", "UTF8", "--locale=C", "--no-sync"])
        self.socket_dir.mkdir()
        if self.run_as:
            shutil.chown(self.socket_dir, user=self.run_as, group=self.run_as)
        self._write_certificate()
        settings = dict(SERVER_SETTINGS)
        settings["port"] = str(self.port)
        settings["unix_socket_directories"] = f"'{self.socket_dir}'"
        settings["ssl_cert_file"] = f"'{self.base_dir / 'server.crt'}'"
        settings["ssl_key_file"] = f"'{self.base_dir / 'server.key'}'"
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# throwaway test server\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)

    def _write_certificate(self) -> None:
        cert, key = self.base_dir / "server.crt", self.base_dir / "server.key"
        try:
            proc = subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                capture_output=True, text=True, timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresUnavailable(f"openssl could not make a test certificate: {exc}") from None
        if proc.returncode != 0:
            raise PostgresUnavailable(f"openssl could not make a test certificate:\n{proc.stderr}")
        key.chmod(0o600)
        if self.run_as:
            for path in (cert, key):
                shutil.chown(path, user=self.run_as, group=self.run_as)

    def start(self) -> None:
        self.run(self.binaries.pg_ctl, ["-D", str(self.data_dir), *self.start_options, "start"])

    def create_roles(self) -> None:
        password = TEST_PASSWORD.replace("'", "''")
        self.psql(f"CREATE ROLE {TLS_USER} LOGIN; CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{password}';")

    def stop(self) -> None:
        """Stop at once; never raises (it runs in cleanup)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        try:
            self.run(self.binaries.pg_ctl, ["-D", str(self.data_dir), "-w", "-t", "30", "stop", "-m", "immediate"])
        except PostgresUnavailable as exc:
            print(f"==> warning: could not stop the test PostgreSQL server: {exc}", flush=True)


def _server_user() -> Optional[str]:
    """The user the server programs run as: ``postgres`` when we are root, else ourselves."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    try:
        import pwd

        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root, but there is no `{SERVER_USER}` user to run the server as; "
            "install Debian's `postgresql` package, which creates it"
        ) from None
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root, but `runuser` (util-linux) is not installed")
    return SERVER_USER


@contextlib.contextmanager
def throwaway_postgres(binaries: PostgresBinaries) -> Iterator[RunningPostgres]:
    """Start a fresh cluster on a free loopback port; always stop it and delete it afterwards.

    The directory lives under the system temp dir: short enough for a unix socket path and
    reachable by the ``postgres`` user.
    """
    run_as = _server_user()
    base_dir = Path(tempfile.mkdtemp(prefix="cloacina-pg-"))
    server = RunningPostgres(binaries=binaries, base_dir=base_dir, port=free_port(), run_as=run_as)
    previous_handler = _exit_on_sigterm()
    try:
        if run_as:
            shutil.chown(base_dir, user=run_as, group=run_as)
        started = time.monotonic()
        server.init_cluster()
        server.start()
        server.create_roles()
        server.startup_seconds = time.monotonic() - started
        yield server
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
        if previous_handler is not False:
            signal.signal(signal.SIGTERM, previous_handler or signal.SIG_DFL)


def _exit_on_sigterm() -> "signal._HANDLER | bool":
    """Turn SIGTERM (a CI time-out, say) into SystemExit so the server is still stopped.

    Returns the handler to restore (None for one not set from Python), or False where handlers
    cannot be set (not the main thread).
    """

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, terminate)
    except ValueError:
        return False

"""What every command shares: exit codes, the user-error exception, the database URL and the
executor's lifetime, logging, and stop signals."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, NoReturn, Optional, Sequence

import cloacina

from cloacina.cli import render

EXIT_OK = 0
EXIT_NOT_COMPLETED = 1  # the execution run or waited for ended Failed or Cancelled (or did not end)
EXIT_USAGE = 2          # bad arguments, unknown execution, bad URL or module, ...
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # as a shell reports a process killed by SIGPIPE

DATABASE_ENV = "CLOACINA_DATABASE_URL"
POLL_SECONDS = 0.15
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CliError(Exception):
    """A user error: printed as one line (``cloacina: error: ...``) and exit code 2 (or ``code``)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def database_url(args: argparse.Namespace) -> Optional[str]:
    """``--db``, else ``CLOACINA_DATABASE_URL``, else None (the executor's default database)."""
    url: Optional[str] = getattr(args, "db", None) or os.environ.get(DATABASE_ENV) or None
    return url


def database_source(args: argparse.Namespace) -> str:
    """Where the URL came from, for logs: never the URL itself, which may hold a password."""
    if getattr(args, "db", None):
        return "--db"
    if os.environ.get(DATABASE_ENV):
        return DATABASE_ENV
    return "the default database"


@asynccontextmanager
async def open_executor(
    args: argparse.Namespace, *, worker: bool, max_concurrency: int = cloacina.DEFAULT_MAX_CONCURRENCY
) -> AsyncIterator[cloacina.UnifiedExecutor]:
    """An initialized executor on the chosen database, shut down on the way out."""
    executor = cloacina.UnifiedExecutor(max_concurrency)
    await executor.initialize(database_url(args), worker=worker)
    try:
        yield executor
    finally:
        await executor.shutdown()


class PrintableFormatter(logging.Formatter):
    """Log lines with control characters escaped (:func:`render.printable`): the engine's
    messages carry task errors, which may hold terminal escape sequences."""

    def format(self, record: logging.LogRecord) -> str:
        return render.printable(super().format(record), keep_lines=True)


def configure_logging(level: str) -> None:
    """Log records from ``level`` up on stderr, one line each (plus tracebacks), escaped. The
    library never configures logging; the long-running commands (``worker``, ``ui``) do."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def exit_now(code: int = EXIT_INTERRUPTED) -> NoReturn:
    """Ends the process at once with ``code``, once logs and output are flushed: no cleanup, no
    wait for running tasks (as after a crash, their claims are given back)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def one_line(message: str) -> str:
    """A possibly multi-line message (a libpq error, say) folded onto one line."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


class StopSignals:
    """SIGINT and SIGTERM set :attr:`event` (on the running loop) instead of stopping the process.

    A signal the process was started ignoring stays ignored. After the first signal, a repeated
    one calls ``on_repeat(signal name)`` if given, also after the ``with`` block, until the process
    ends (the engine runs signal handlers while it waits for task threads at exit); without
    ``on_repeat`` the first signal puts the default handlers back, so a second Ctrl-C interrupts
    at once (KeyboardInterrupt) and a second SIGTERM terminates. Use as
    ``with StopSignals() as stop:`` inside a coroutine.
    """

    SIGNALS: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_repeat: Optional[Callable[[str], None]] = None) -> None:
        self.event = asyncio.Event()
        self.received: Optional[str] = None
        self._on_repeat = on_repeat
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._restore: list[Callable[[], None]] = []
        self._handled: list[signal.Signals] = []

    def __enter__(self) -> "StopSignals":
        self._loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:  # ignored, e.g. SIGINT of a shell's `&` job
                self._restore.append(self._install(self._loop, sig))
                self._handled.append(sig)
        return self

    def __exit__(self, *exc: object) -> None:
        self._uninstall()
        on_repeat = self._on_repeat
        if self.received is not None and on_repeat is not None:
            for sig in self._handled:  # out of the loop now: plain handlers, for good
                signal.signal(sig, lambda number, frame: on_repeat(signal.Signals(number).name))

    def _install(self, loop: asyncio.AbstractEventLoop, sig: signal.Signals) -> Callable[[], None]:
        """Routes ``sig`` to :meth:`_received`; returns what puts the previous handler back."""
        try:
            loop.add_signal_handler(sig, self._received, sig)
        except (NotImplementedError, RuntimeError):  # no add_signal_handler (Windows)
            previous = signal.signal(sig, lambda number, frame: loop.call_soon_threadsafe(self._received, sig))

            def restore_previous() -> None:
                signal.signal(sig, previous)

            return restore_previous

        def remove() -> None:
            loop.remove_signal_handler(sig)

        return remove

    def _uninstall(self) -> None:
        while self._restore:
            self._restore.pop()()

    def _received(self, sig: signal.Signals) -> None:
        if self.received is not None:
            if self._on_repeat is not None:
                self._on_repeat(sig.name)
            return
        self.received = sig.name
        if self._on_repeat is None:
            self._uninstall()
        self.event.set()

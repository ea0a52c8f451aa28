"""What every command shares: exit codes, the user-error exception, the options more than one
command takes (declared here once, as parent parsers), the database URL and the executor's
lifetime, logging, and stop signals."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Coroutine, NoReturn, Optional, Sequence

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


# --- options more than one command takes -------------------------------------------------------
# Each function returns a parent parser (``add_parser(..., parents=[...])``): a fresh one per call,
# so that a parser never holds an option twice.

def database_options(*, suppress_defaults: bool = True) -> argparse.ArgumentParser:
    """``--db URL`` and ``--json``. They go before or after the command: the top-level parser
    takes them with their defaults (``suppress_defaults=False``), a command's copy defaults to
    SUPPRESS so that it keeps a value given before the command."""
    parser = argparse.ArgumentParser(add_help=False)
    db_default: Optional[str] = argparse.SUPPRESS if suppress_defaults else None
    json_default: object = argparse.SUPPRESS if suppress_defaults else False
    parser.add_argument("--db", metavar="URL", default=db_default,
                        help=f"database URL (default: ${DATABASE_ENV}, else the backend's default)")
    parser.add_argument("--json", action="store_true", default=json_default,
                        help="print the records as JSON, the dicts the Python API returns")
    return parser


def workflow_target() -> argparse.ArgumentParser:
    """The ``MODULE:WORKFLOW`` argument of ``run`` and ``graph``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("target", metavar="MODULE:WORKFLOW", help="e.g. etl:pipeline or jobs/etl.py:pipeline")
    return parser


def concurrency_options() -> argparse.ArgumentParser:
    """``--max-concurrency N`` of the commands that run tasks here (``run``, ``worker``)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--max-concurrency", type=int, default=cloacina.DEFAULT_MAX_CONCURRENCY, metavar="N",
                        help=f"run at most N tasks at once in this process "
                             f"(default {cloacina.DEFAULT_MAX_CONCURRENCY})")
    return parser


def logging_options() -> argparse.ArgumentParser:
    """``--log-level`` of the long-running commands (``worker``, ``ui``); :func:`main` then sets
    up logging (:func:`configure_logging`) before the command runs."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
                        help="log messages from this level up, on stderr (default INFO)")
    return parser


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


def submit_only_command(
    handler: Callable[[Any, argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """A command that runs ``handler`` with a submit-only executor on the chosen database."""

    async def with_executor(args: argparse.Namespace) -> int:
        async with open_executor(args, worker=False) as executor:
            return await handler(executor, args)

    return lambda args: asyncio.run(with_executor(args))


class PrintableFormatter(logging.Formatter):
    """Log lines with control characters escaped (:func:`render.printable`): the engine's
    messages carry task errors, which may hold terminal escape sequences."""

    def format(self, record: logging.LogRecord) -> str:
        return render.printable(super().format(record), keep_lines=True)


_LOG_HANDLER = "cloacina-cli"


def configure_logging(level: str) -> None:
    """Log records from ``level`` up on stderr, one line each (plus tracebacks), escaped. The
    library never configures logging; the commands with ``--log-level`` (``worker``, ``ui``) do,
    for the rest of the process. Called again, it replaces its own handler, no other."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _LOG_HANDLER]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_LOG_HANDLER)
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


def start_logging(args: argparse.Namespace) -> None:
    """Logging for a command that takes ``--log-level`` (:func:`logging_options`); the others
    leave logging alone."""
    level: Optional[str] = getattr(args, "log_level", None)
    if level is not None:
        configure_logging(level)


def exit_now(code: int = EXIT_INTERRUPTED) -> NoReturn:
    """Ends the process at once with ``code``, once logs and output are flushed: no cleanup, no
    wait for running tasks (as after a crash, their claims are given back)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def stop_at_once(log: logging.Logger, consequence: str) -> Callable[[str], None]:
    """The ``on_repeat`` of :class:`StopSignals` for the long-running commands (``worker``,
    ``ui``): logs ``SIGTERM received again: stopping at once; <consequence>`` and exits (130)."""

    def on_repeat(signal_name: str) -> None:
        log.warning("%s received again: stopping at once; %s", signal_name, consequence)
        exit_now(EXIT_INTERRUPTED)

    return on_repeat


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
    ``with StopSignals() as stop:`` inside a coroutine. Off the main thread (the command line
    called from a thread) it handles nothing: Python runs signal handlers on the main thread only.
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
        if threading.current_thread() is not threading.main_thread():
            return self
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

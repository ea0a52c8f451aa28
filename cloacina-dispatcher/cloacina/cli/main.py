"""The ``cloacina`` command: its argument parser, and how any failure becomes an exit code.

Exit codes: 0 success; 1 the execution run or waited for did not complete (Failed, Cancelled, or
still going after ``--timeout``); 2 usage and user errors (bad arguments, unknown execution, bad
URL, module or context); 130 interrupted; 141 stdout closed early (a pipe). Errors are one line
on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

import cloacina

from cloacina.cli import events, executions, graph, limits, render, run, ui, worker
from cloacina.cli.common import (
    DATABASE_ENV,
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    database_options,
    one_line,
    start_logging,
)

PROG = "cloacina"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; ``--db`` and ``--json`` go before or after the command. The
    options more than one command takes are declared once, in :mod:`cloacina.cli.common`."""
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[database_options(suppress_defaults=False)],
        description="Cloacina, an embedded durable workflow engine: run workflows, work as a worker of "
                    "a database, and inspect or manage its executions.",
        epilog=f"The database is --db URL, else ${DATABASE_ENV}, else the backend's default (SQLite: "
               "the file cloacina.db in the working directory). Exit codes: 0 success, 1 the execution "
               "did not complete, 2 usage or user error.")
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {cloacina.__version__} (backend {cloacina.backend} "
                                f"{cloacina.backend_version})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run.add_parser(commands)
    executions.add_parser(commands)
    limits.add_parser(commands)
    events.add_parser(commands)
    worker.add_parser(commands)
    ui.add_parser(commands)
    graph.add_parser(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit code (the console script exits with it)."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        start_logging(args)
        code = handler(args)
        sys.stdout.flush()  # here, so a closed pipe is reported below rather than at exit
        return code
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `cloacina executions list | head -1`: stop quietly, as shell tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (cloacina.CloacinaError, ValueError, TypeError, LookupError, ImportError, RuntimeError,
            OSError) as exc:
        # The engine's messages name the problem and never show a password.
        return _fail(str(exc) or type(exc).__name__, EXIT_USAGE)
    except Exception as exc:  # a bug: still one line, with the type to report
        return _fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_USAGE)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {render.printable(one_line(message))}", file=sys.stderr)
    return code

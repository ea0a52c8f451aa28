"""``cloacina worker MODULE ...``: import task modules and work for the database until stopped.

Its ``--log-level`` sets up logging on stderr (:func:`~cloacina.cli.common.start_logging`); the
library itself never does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket

import cloacina

from cloacina.cli.common import (
    EXIT_OK,
    StopSignals,
    concurrency_options,
    database_options,
    database_source,
    logging_options,
    open_executor,
    stop_at_once,
)
from cloacina.cli.loading import import_module

log = logging.getLogger("cloacina.worker")


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "worker", parents=[database_options(), logging_options(), concurrency_options()],
        help="run the tasks of a database's executions until stopped",
        description="Import the task modules (which register their @task functions), then work as one "
                    "of the database's workers: run the ready tasks of any execution whose task ids "
                    "those modules registered. SIGTERM or Ctrl-C stops it gracefully: running tasks "
                    "finish and are stored, the rest waits for other workers. A second signal stops "
                    "at once (exit code 130): the tasks still running here run again on a live worker.")
    parser.add_argument("modules", nargs="+", metavar="MODULE",
                        help="task module to import: a dotted name (from the working directory first) "
                             "or a .py path")
    parser.set_defaults(handler=_work)


def _work(args: argparse.Namespace) -> int:
    for name in args.modules:
        import_module(name)
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    # A second signal exits without waiting for running tasks. As after a crash, their claims are
    # given back and a live worker runs them again (at once on this host, else after the lease
    # timeout); their executions are not cancelled.
    with StopSignals(on_repeat=stop_at_once(log, "the tasks running here will run again on a live worker")) as stop:
        async with open_executor(args, worker=True, max_concurrency=args.max_concurrency):
            log.info("worker started: pid %d on %s, backend %s %s, database from %s, max concurrency %d, "
                     "modules %s", os.getpid(), socket.gethostname(), cloacina.backend,
                     cloacina.backend_version, database_source(args), args.max_concurrency,
                     ", ".join(args.modules))
            await stop.event.wait()
            log.info("%s received: stopping; running tasks finish and are stored (signal again to stop at once)",
                     stop.received)
    log.info("worker stopped")
    return EXIT_OK

"""``cloacina worker MODULE ...``: import task modules and work for the database until stopped.

It configures logging (:func:`~cloacina.cli.common.configure_logging`, on stderr); the library
itself never does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket

import cloacina

from cloacina.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    LOG_LEVELS,
    StopSignals,
    configure_logging,
    database_source,
    exit_now,
    open_executor,
)
from cloacina.cli.loading import import_module

log = logging.getLogger("cloacina.worker")


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]",
               common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "worker", parents=[common], help="run the tasks of a database's executions until stopped",
        description="Import the task modules (which register their @task functions), then work as one "
                    "of the database's workers: run the ready tasks of any execution whose task ids "
                    "those modules registered. SIGTERM or Ctrl-C stops it gracefully: running tasks "
                    "finish and are stored, the rest waits for other workers. A second signal stops "
                    "at once (exit code 130): the tasks still running here run again on a live worker.")
    parser.add_argument("modules", nargs="+", metavar="MODULE",
                        help="task module to import: a dotted name (from the working directory first) "
                             "or a .py path")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
                        help="log messages from this level up, on stderr (default INFO)")
    parser.add_argument("--max-concurrency", type=int, default=cloacina.DEFAULT_MAX_CONCURRENCY, metavar="N",
                        help="run at most N tasks at once (default 8)")
    parser.set_defaults(handler=_work)


def _work(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    for name in args.modules:
        import_module(name)
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    with StopSignals(on_repeat=_stop_now) as stop:
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


def _stop_now(signal_name: str) -> None:
    """A second signal: exit without waiting for running tasks. As after a crash, their claims
    are given back and a live worker runs them again (at once on this host, else after the lease
    timeout); their executions are not cancelled."""
    log.warning("%s received again: stopping at once; the tasks running here will run again on a live worker",
                signal_name)
    exit_now(EXIT_INTERRUPTED)

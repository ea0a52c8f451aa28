"""``cloacina ui``: serve the read-only dashboard API of a database until Ctrl-C or SIGTERM.

Prints the URL it serves on stdout (never the database URL); logs requests on stderr. It stops
as ``worker`` does (:class:`~cloacina.cli.common.StopSignals`): the first signal stops it
gracefully, a second one at once (exit code 130).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading

from cloacina.cli.common import (
    EXIT_OK,
    POLL_SECONDS,
    CliError,
    StopSignals,
    database_options,
    database_source,
    database_url,
    logging_options,
    stop_at_once,
)
from cloacina.ui.server import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, DashboardServer, UiConfigError, make_server

log = logging.getLogger("cloacina.ui")


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "ui", parents=[database_options(), logging_options()],
        help="serve a read-only dashboard of the database's executions",
        description="Serve the read-only dashboard API (GET /api/ lists its endpoints) until Ctrl-C or "
                    "SIGTERM; a second signal stops it at once (exit code 130). It only reads the "
                    "database and never runs a task, and logs one line per request at INFO. It binds "
                    f"127.0.0.1 by default; any other address needs a token (--token or ${TOKEN_ENV}), "
                    "which every request must then send as 'Authorization: Bearer <token>' or "
                    "?token=<token>.")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}; others need a token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to bind (default {DEFAULT_PORT}; 0 picks a free one, printed on stdout)")
    parser.add_argument("--token", default=None,
                        help=f"require this token on every request (default ${TOKEN_ENV}; prefer the "
                             "variable: a command line is visible to other users)")
    parser.set_defaults(handler=lambda args: asyncio.run(_serve(args)))


async def _serve(args: argparse.Namespace) -> int:
    # The server and its SyncExecutor block: they run on threads, never on this loop's.
    with StopSignals(on_repeat=stop_at_once(log, "requests in flight are cut off")) as stop:
        try:
            server = await asyncio.to_thread(make_server, database_url(args), args.host, args.port, args.token)
        except UiConfigError as exc:
            raise CliError(str(exc)) from None
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="cloacina-ui", daemon=True)
        thread.start()
        try:
            log.info("database from %s", database_source(args))
            print(f"cloacina ui: serving {server.url} (Ctrl-C to stop)", flush=True)
            while not stop.event.is_set() and thread.is_alive():
                await asyncio.sleep(POLL_SECONDS)
            if stop.received is not None:
                log.info("%s received: stopping (signal again to stop at once)", stop.received)
        finally:
            await asyncio.to_thread(_close, server, thread)
    log.info("stopped")
    return EXIT_OK


def _close(server: DashboardServer, thread: threading.Thread) -> None:
    """Stops serving, then closes the socket and the server's executor."""
    server.shutdown()
    thread.join()
    server.server_close()

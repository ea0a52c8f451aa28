"""``cloacina ui``: serve the read-only dashboard API of a database until Ctrl-C or SIGTERM.

Prints the URL it serves on stdout (never the database URL); logs requests on stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType
from typing import Callable, Dict, Optional, Union

from cloacina.cli.common import EXIT_OK, LOG_LEVELS, CliError, configure_logging, database_source, database_url
from cloacina.ui.server import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, UiConfigError, make_server

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
log = logging.getLogger("cloacina.ui")

_Handler = Union[Callable[[int, Optional[FrameType]], object], int, signal.Handlers, None]


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]",
               common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "ui", parents=[common], help="serve a read-only dashboard of the database's executions",
        description="Serve the read-only dashboard API (GET /api/ lists its endpoints) until Ctrl-C or "
                    "SIGTERM. It only reads the database and never runs a task. It binds 127.0.0.1 by "
                    f"default; any other address needs a token (--token or ${TOKEN_ENV}), which every "
                    "request must then send as 'Authorization: Bearer <token>' or ?token=<token>.")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}; others need a token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to bind (default {DEFAULT_PORT}; 0 picks a free one, printed on stdout)")
    parser.add_argument("--token", default=None,
                        help=f"require this token on every request (default ${TOKEN_ENV}; prefer the "
                             "variable: a command line is visible to other users)")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
                        help="log messages (one per request at INFO) from this level up, on stderr")
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    stop = threading.Event()
    previous: Dict[signal.Signals, _Handler] = {}

    def on_signal(number: int, frame: Optional[FrameType]) -> None:
        # The first signal stops gracefully; the defaults come back so a second one stops at once.
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("%s received: stopping", signal.Signals(number).name)
        stop.set()

    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, on_signal)
    try:
        try:
            server = make_server(database_url(args), args.host, args.port, args.token)
        except UiConfigError as exc:
            raise CliError(str(exc)) from None
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="cloacina-ui", daemon=True)
        thread.start()
        try:
            log.info("database from %s", database_source(args))
            print(f"cloacina ui: serving {server.url} (Ctrl-C to stop)", flush=True)
            while not stop.wait(0.5) and thread.is_alive():
                pass
        finally:
            server.shutdown()
            thread.join()
            server.server_close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped")
    return EXIT_OK

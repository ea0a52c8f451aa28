"""The dashboard's HTTP server: binding rules, the token check, read-only methods, JSON responses
and the pages (``static/``: ``/``, ``/executions/<id>`` and ``/workflows/<name>`` all answer
``index.html``, whose script routes on ``location.pathname``).

Standard library only (``http.server.ThreadingHTTPServer``). The server owns a
:class:`cloacina.SyncExecutor` initialized with ``worker=False``: it reads the database and never
runs a task. Nothing it logs or answers contains the database URL.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import socket
import socketserver
from http import HTTPStatus
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, List, Optional, Tuple
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import cloacina

from cloacina.ui import api

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8181
TOKEN_ENV = "CLOACINA_UI_TOKEN"
ALLOWED_METHODS = "GET, HEAD"
# Seconds a connection may stay silent before its thread gives up on it.
REQUEST_TIMEOUT = 30.0

log = logging.getLogger("cloacina.ui")

# Written with every response: JSON only, never sniffed as HTML, never cached.
_HEADERS = (
    ("Content-Type", "application/json; charset=utf-8"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)
_LOOPBACK_NAMES = ("localhost", "localhost.")

# The pages: plain files shipped in the package, no inline script or style, nothing external.
STATIC_DIR = Path(__file__).resolve().parent / "static"
_STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
_PAGE_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)
# Client-side routes: each is answered with index.html, whose script reads location.pathname.
_PAGE_PREFIXES = ("/executions/", "/workflows/")
_PAGE_PATHS = ("/", "/workers", "/schedules", "/limits")


def static_file(path: str) -> Optional[str]:
    """The static file name answering ``path`` (``/``, a page route, or ``/static/<file>``), else None."""
    if path in _PAGE_PATHS or any(path.startswith(p) and len(path) > len(p) for p in _PAGE_PREFIXES):
        return "index.html"
    if path.startswith("/static/"):
        name = path[len("/static/"):]
        if name in _STATIC_TYPES and name != "index.html":
            return name
    return None


class UiConfigError(ValueError):
    """The server was asked to start in a way it refuses (e.g. off loopback without a token)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1 or localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def json_bytes(payload: Any) -> bytes:
    """``payload`` as UTF-8 JSON; ``<``, ``>`` and ``&`` are written as escapes so that no browser
    can read the body as markup (the parsed strings are unchanged)."""
    text = json.dumps(payload, ensure_ascii=False, default=str, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode("utf-8")


class DashboardServer(ThreadingHTTPServer):
    """A threading HTTP server bound to ``host``/``port``, answering the API from ``executor``.

    ``server_close()`` also shuts the executor down.
    """

    daemon_threads = True

    def __init__(self, address: Tuple[str, int], executor: cloacina.SyncExecutor, token: Optional[str]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.executor = executor
        self.token = token
        super().__init__(address, DashboardHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host's FQDN (a DNS lookup); the name is not needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def port(self) -> int:
        """The port actually bound (useful after asking for port 0)."""
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """The base URL of the API, e.g. ``http://127.0.0.1:8181/api/``."""
        host = str(self.server_address[0])
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/api/"

    def server_close(self) -> None:
        try:
            super().server_close()
        finally:
            self.executor.shutdown()


class DashboardHandler(BaseHTTPRequestHandler):
    """Answers GET and HEAD with the API's JSON; every other method gets 405."""

    server: DashboardServer
    server_version = "cloacina-ui"
    timeout = REQUEST_TIMEOUT

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    # --- methods -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _refuse_method(self) -> None:
        self.close_connection = True  # the request body, if any, is never read
        if self._authorized():
            self._send_json(HTTPStatus.METHOD_NOT_ALLOWED,
                            {"error": f"method {self.command} not allowed: this API is read-only "
                                      f"({ALLOWED_METHODS})"},
                            extra_headers=(("Allow", ALLOWED_METHODS),))
        else:
            self._send_unauthorized()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    # --- the request -------------------------------------------------------------------------

    def _answer(self, *, send_body: bool) -> None:
        parts = urlsplit(self.path)
        static = static_file(parts.path)
        # Scripts and styles hold no data: the page's <script src> cannot carry the token, so only
        # they are served without it; pages and the API need it.
        if static is not None and static != "index.html":
            self._send_static(static, send_body=send_body)
            return
        if not self._authorized():
            self._send_unauthorized(send_body=send_body)
            return
        if not self._host_allowed():
            self._send_json(HTTPStatus.FORBIDDEN, {"error": "unexpected Host header"}, send_body=send_body)
            return
        if static is not None:
            self._send_static(static, send_body=send_body)
            return
        query = parse_qs(parts.query, keep_blank_values=True)
        query.pop("token", None)
        if not (parts.path == "/api" or parts.path.startswith("/api/")):
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "no such page; the API is under /api/"},
                            send_body=send_body)
            return
        try:
            payload = api.route(self.server.executor, parts.path, query)
        except api.ApiError as exc:
            self._send_json(exc.status, {"error": exc.message}, send_body=send_body)
        except cloacina.DatabaseError as exc:
            log.error("%s %s: database error (%s)", self.command, parts.path, type(exc).__name__)
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the database did not answer"},
                            send_body=send_body)
        except Exception:
            log.exception("%s %s failed", self.command, parts.path)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR,
                            {"error": "internal server error (details in the server log)"}, send_body=send_body)
        else:
            self._send_json(HTTPStatus.OK, payload, send_body=send_body)

    def _presented_token(self) -> Optional[str]:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        values = parse_qs(urlsplit(self.path).query, keep_blank_values=True).get("token")
        return values[0] if values else None

    def _authorized(self) -> bool:
        expected = self.server.token
        if expected is None:
            return True
        presented = self._presented_token()
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))

    def _host_allowed(self) -> bool:
        """Without a token the server is loopback-only; a foreign Host header then means a page
        of another site reached it through DNS rebinding."""
        if self.server.token is not None:
            return True
        host = self.headers.get("Host")
        if host is None:
            return True  # HTTP/1.0 clients may omit it
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    # --- responses ---------------------------------------------------------------------------

    def _send_unauthorized(self, *, send_body: bool = True) -> None:
        self._send_json(HTTPStatus.UNAUTHORIZED,
                        {"error": "a token is required: send 'Authorization: Bearer <token>' or ?token=<token>"},
                        extra_headers=(("WWW-Authenticate", 'Bearer realm="cloacina"'),), send_body=send_body)

    def _send_static(self, name: str, *, send_body: bool) -> None:
        body = (STATIC_DIR / name).read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", _STATIC_TYPES[name])
        for header, value in _PAGE_HEADERS:
            self.send_header(header, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, *, send_body: bool = True,
                   extra_headers: Tuple[Tuple[str, str], ...] = ()) -> None:
        body = json_bytes(payload)
        self.send_response(status)
        for name, value in _HEADERS + extra_headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """Errors found by http.server itself (malformed request line, unknown method): JSON too."""
        self.close_connection = True
        status = HTTPStatus.METHOD_NOT_ALLOWED if code == HTTPStatus.NOT_IMPLEMENTED else code
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "error"
        extra = (("Allow", ALLOWED_METHODS),) if status == HTTPStatus.METHOD_NOT_ALLOWED else ()
        self._send_json(status, {"error": phrase.lower()}, extra_headers=extra,
                        send_body=getattr(self, "command", None) != "HEAD" and status >= 200 and status not in (204, 304))

    # --- logging: through `logging`, the token never written --------------------------------

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        status = code.value if isinstance(code, HTTPStatus) else code
        log.info("%s %s %s %s", self.address_string(), self.command, self._loggable_path(), status)

    def log_error(self, format: str, *args: Any) -> None:
        log.warning("%s %s", self.address_string(), format % args)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _loggable_path(self) -> str:
        path = getattr(self, "path", "")
        parts = urlsplit(path)
        if not parts.query:
            return parts.path
        # Any case: ?TOKEN= is no credential here, but may well be the token.
        pairs: List[Tuple[str, str]] = [(k, "***" if k.strip().lower() == "token" else v)
                                        for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        return f"{parts.path}?{urlencode(pairs)}"


def resolve_token(token: Optional[str]) -> Optional[str]:
    """``token``, else ``$CLOACINA_UI_TOKEN``, else None (an empty value counts as none)."""
    chosen = token if token is not None else os.environ.get(TOKEN_ENV)
    return chosen or None


def make_server(database_url: Optional[str] = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                token: Optional[str] = None) -> DashboardServer:
    """A bound, not yet serving, dashboard server; run it with ``serve_forever()`` and end it with
    ``shutdown()`` then ``server_close()`` (which also shuts its executor down).

    ``database_url`` as for ``UnifiedExecutor.initialize`` (None: the backend's default). Any ``host`` but a loopback address needs a token
    (``token`` or ``$CLOACINA_UI_TOKEN``): raises :class:`UiConfigError` without one.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise UiConfigError(f"port must be an int from 0 to 65535, got {port!r}")
    token = resolve_token(token)
    if not is_loopback(host) and token is None:
        raise UiConfigError(
            f"refusing to serve on {host or 'all interfaces'!r} without a token: anyone who can reach it "
            f"could read every execution; set {TOKEN_ENV} (or pass a token), or bind {DEFAULT_HOST}")
    executor = cloacina.SyncExecutor()
    executor.initialize(database_url, worker=False)
    try:
        return DashboardServer((host, port), executor, token)
    except BaseException:
        executor.shutdown()
        raise


def serve(database_url: Optional[str] = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          token: Optional[str] = None) -> None:
    """Serve the API until interrupted (KeyboardInterrupt), then close the server and its executor."""
    server = make_server(database_url, host, port, token)
    log.info("serving the Cloacina dashboard API at %s", server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


__all__ = ["DashboardServer", "UiConfigError", "make_server", "serve", "json_bytes", "is_loopback",
           "DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV", "STATIC_DIR", "static_file"]

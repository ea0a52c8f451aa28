"""A dashboard server run in a thread for tests, shared by the API and browser tests.

``from ui_server import serve  # noqa: F401`` brings the fixture ``serve(**kwargs)``: it starts
a server on the test's database (port 0 unless given), every one stopped afterwards. The
``sync_executor`` fixture (conftest.py) makes the executions it shows.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from cloacina.ui import make_server
from cloacina.ui.server import DashboardServer

DEADLINE = 30.0  # seconds allowed for anything a test waits for


class Response:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def request(url: str, *, method: str = "GET", headers: Optional[Dict[str, str]] = None,
            data: Optional[bytes] = None) -> Response:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=DEADLINE) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, error.headers, error.read())


class Running:
    """A dashboard server serving in a thread, and every API response body it sent to the test."""

    def __init__(self, server: DashboardServer) -> None:
        self.server = server
        self.base = server.url
        self.root = f"http://127.0.0.1:{server.port}"
        self.bodies: List[bytes] = []
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ui-test-server", daemon=True)
        self._thread.start()

    def page(self, path: str) -> str:
        """The URL of one of the dashboard's pages."""
        return self.root + path

    def get(self, path: str, **kwargs: Any) -> Response:
        response = request(self.base + path, **kwargs)
        self.bodies.append(response.body)
        return response

    def ok(self, path: str) -> Any:
        response = self.get(path)
        assert response.status == 200, (path, response.status, response.body[:500])
        return response.json()

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join(DEADLINE)
        self.server.server_close()


@pytest.fixture
def serve(database_url: str) -> Iterator[Callable[..., Running]]:
    """Starts a server on the test's database (``serve(token=...)``); all are stopped afterwards."""
    started: List[Running] = []

    def start(**kwargs: Any) -> Running:
        kwargs.setdefault("port", 0)
        running = Running(make_server(database_url, **kwargs))
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop()

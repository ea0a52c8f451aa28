"""``cloacina ui``: a read-only dashboard of a Cloacina database, served over HTTP.

This session's part is its JSON API (``GET /api/`` lists the endpoints). :func:`serve` runs it
until interrupted; :func:`make_server` returns the bound server for embedding and tests.
"""

from __future__ import annotations

from cloacina.ui.api import ENDPOINTS, ApiError
from cloacina.ui.server import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, DashboardServer, UiConfigError, make_server, serve

__all__ = ["serve", "make_server", "DashboardServer", "UiConfigError", "ApiError", "ENDPOINTS", "DEFAULT_HOST",
           "DEFAULT_PORT", "TOKEN_ENV"]

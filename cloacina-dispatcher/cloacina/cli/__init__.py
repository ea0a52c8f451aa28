"""The ``cloacina`` command line (``cloacina ...`` or ``python -m cloacina ...``).

One module per command (``run``, ``executions``, ``limits``, ``events``, ``worker``, ``graph``,
``ui``); ``main`` holds the parser and the exit codes, ``render`` the text formats, ``loading``
module and context loading.
"""

from __future__ import annotations

from cloacina.cli.main import build_parser, main

__all__ = ["build_parser", "main"]

"""pytest plugin of Cloacina: executor fixtures on a throw-away database.

Installing ``cloacina`` registers this plugin with pytest (entry point ``pytest11``, name
``cloacina``), so it loads by itself. With ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, enable it with
``-p cloacina`` (the entry point's name). Use ``-p cloacina.pytest_plugin`` only where the
distribution is not installed (e.g. ``PYTHONPATH`` pointing at a source tree): pytest refuses to
register the module twice under two names, which ``pytest_plugins = ["cloacina.pytest_plugin"]``
in a ``conftest.py`` would also do.

Fixtures (function scope, each shut down after its test):

- ``cloacina_executor``: an initialized :class:`cloacina.UnifiedExecutor`, for ``async def``
  tests. Needs pytest-asyncio (``pip install pytest-asyncio``; in its default strict mode mark
  the test ``@pytest.mark.asyncio``); without it, tests using the fixture are skipped.
- ``cloacina_sync_executor``: an initialized :class:`cloacina.SyncExecutor`, for plain ``def``
  tests; needs nothing else. (Its methods refuse to run inside an ``async def`` test.)

The database: with the SQLite backend bound (``cloacina.backend == "sqlite"``), a private
``sqlite://:memory:`` database per executor, so every test starts empty. With PostgreSQL, the
URL in ``CLOACINA_TEST_DATABASE_URL``; tests using the fixtures are skipped when it is not set.
That database is shared by every test (and kept): give workflows and tasks unique names.

To run one task alone with its options, see :mod:`cloacina.testing`::

    from cloacina.testing import run_task

    @pytest.mark.asyncio
    async def test_total(cloacina_executor):
        result = await run_task(cloacina_executor, total, {"rows": [1, 2, 3]})
        assert result["final_context"]["total"] == 6

Nothing here imports ``cloacina`` (which binds a backend) before a fixture is used, so the
plugin costs nothing in test runs that do not use it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, AsyncIterator, Iterator

import pytest

if TYPE_CHECKING:
    from cloacina._backend import UnifiedExecutor

    from cloacina.sync import SyncExecutor

try:
    import pytest_asyncio
except ImportError:
    _HAVE_PYTEST_ASYNCIO = False
else:
    _HAVE_PYTEST_ASYNCIO = True

DATABASE_URL_VAR = "CLOACINA_TEST_DATABASE_URL"
SQLITE_URL = "sqlite://:memory:"


def _database_url() -> str:
    """The database for a fixture's executor; skips the test when there is none."""
    import cloacina

    if cloacina.backend == "sqlite":
        return SQLITE_URL
    url = os.environ.get(DATABASE_URL_VAR, "").strip()
    if not url:
        pytest.skip(
            f"the cloacina executor fixtures need a database for the {cloacina.backend} backend: "
            f"set {DATABASE_URL_VAR} to its URL"
        )
    return url


if _HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture(name="cloacina_executor")
    async def _cloacina_executor() -> AsyncIterator[UnifiedExecutor]:
        """An initialized ``cloacina.UnifiedExecutor`` on a throw-away database, shut down after
        the test."""
        import cloacina

        url = _database_url()
        executor = cloacina.UnifiedExecutor()
        await executor.initialize(url)
        try:
            yield executor
        finally:
            await executor.shutdown()

else:

    @pytest.fixture(name="cloacina_executor")
    def _cloacina_executor_unavailable() -> Iterator[UnifiedExecutor]:
        """Stands in for ``cloacina_executor`` when pytest-asyncio is missing: skips the test."""
        pytest.skip(
            "the cloacina_executor fixture needs pytest-asyncio (pip install pytest-asyncio); "
            "plain `def` tests can use cloacina_sync_executor instead"
        )
        yield  # pragma: no cover - unreachable, makes this a generator like the real fixture


@pytest.fixture
def cloacina_sync_executor() -> Iterator[SyncExecutor]:
    """An initialized ``cloacina.SyncExecutor`` on a throw-away database, shut down after the
    test."""
    import cloacina

    url = _database_url()
    executor = cloacina.SyncExecutor()
    executor.initialize(url)
    try:
        yield executor
    finally:
        executor.shutdown()

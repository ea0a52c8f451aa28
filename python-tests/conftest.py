"""Fixtures shared by every test file.

Registry isolation: the task registry is global to the process and is never
cleared, so every test names its tasks and workflows through the ``ids``
fixture, which prefixes them with the test's name and a random suffix.
Tests that need an empty registry (``Workflow(name, None)``) run in a
subprocess.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path
from typing import AsyncIterator, Dict

import pytest

from backend import BACKEND, IS_SQLITE, cl

TESTS_DIR = Path(__file__).resolve().parent


class Ids:
    """Unique task ids / workflow names for one test."""

    def __init__(self, test_name: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_]+", "_", test_name).strip("_")
        self.prefix = f"{safe}_{uuid.uuid4().hex[:8]}"

    def __call__(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def wf(self, name: str = "wf") -> str:
        return f"{self.prefix}.workflow.{name}"


@pytest.fixture
def ids(request: pytest.FixtureRequest) -> Ids:
    return Ids(request.node.name)


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "cloacina.db"


@pytest.fixture
def database_url(sqlite_file: Path) -> str:
    """A fresh database for one test. Non-SQLite backends read it from the environment."""
    override = os.environ.get("CLOACINA_TEST_DATABASE_URL")
    if override:
        return override
    if not IS_SQLITE:
        pytest.skip(f"set CLOACINA_TEST_DATABASE_URL to test the {BACKEND} backend")
    return f"sqlite:///{sqlite_file}"


@pytest.fixture
async def executor(database_url: str) -> AsyncIterator[object]:
    ex = cl.UnifiedExecutor()
    await ex.initialize(database_url)
    try:
        yield ex
    finally:
        await ex.shutdown()


@pytest.fixture
async def memory_executor() -> AsyncIterator[object]:
    if not IS_SQLITE:
        pytest.skip("sqlite://:memory: is SQLite only")
    ex = cl.UnifiedExecutor()
    await ex.initialize("sqlite://:memory:")
    try:
        yield ex
    finally:
        await ex.shutdown()


@pytest.fixture
def subprocess_env() -> Dict[str, str]:
    """Environment for child interpreters: no backend override, this test dir importable."""
    env = dict(os.environ)
    env.pop("CLOACINA_BACKEND", None)
    env["PYTHONPATH"] = str(TESTS_DIR)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture
def python() -> str:
    return sys.executable

"""The hand-written .pyi stub matches the compiled module (mypy.stubtest)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backend import cl

pytest.importorskip("mypy")


def test_stub_matches_runtime(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--ignore-disjoint-bases", cl.__name__],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_is_typed():
    from importlib import resources

    assert resources.files(cl.__name__).joinpath("py.typed").is_file()
    assert resources.files("cloacina").joinpath("py.typed").is_file()

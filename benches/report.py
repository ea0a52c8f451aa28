"""What the stand-alone benchmarks share: formatting numbers and tables, a fresh SQLite file."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import List, Sequence


def ms(seconds: float) -> str:
    """Seconds as milliseconds, one decimal."""
    return f"{seconds * 1000:.1f}"


def median_max(values: Sequence[float]) -> List[str]:
    """The median and the largest of ``values`` (seconds) in ms, or dashes when there are none."""
    if not values:
        return ["-", "-"]
    return [ms(statistics.median(values)), ms(max(values))]


def fresh_sqlite(url: str) -> None:
    """Removes the SQLite file of ``url`` (and its WAL files), if ``url`` names one."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        for suffix in ("", "-wal", "-shm"):
            Path(url[len("sqlite:///"):] + suffix).unlink(missing_ok=True)


def table(headers: List[str], rows: List[List[str]]) -> str:
    """``rows`` under ``headers`` in aligned columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)

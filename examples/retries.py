"""Cloacina retries: a flaky task that fails twice and succeeds on its third attempt.

    fetch (retries=4, retry_delay=0.2, retry_backoff=2.0, retry_on=ConnectionError)
    parse (retries=4, retry_on=ConnectionError, but raises ValueError: fails at once)

The engine waits `retry_delay` seconds before the first retry and multiplies the delay by
`retry_backoff` before each later one (0.2 s, then 0.4 s), never more than `retry_max_delay`.
Every attempt is recorded in the task's `history`, which this script prints. An error that is
not in `retry_on` is not retried.

    python examples/retries.py                  # uses sqlite:///retries.db
    python examples/retries.py postgresql://... # any database URL

Exits 0 when `fetch` completed on attempt 3 and `parse` failed after one attempt, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import Any, Mapping

import cloacina

# Attempts made in this process; the executor below is the only worker, so it sees them all.
fetch_calls: list[int] = []


@cloacina.task(task_id="retries.fetch", retries=4, retry_delay=0.2, retry_backoff=2.0,
               retry_max_delay=5.0, retry_on=(ConnectionError,))
def fetch(ctx: dict[str, Any]) -> dict[str, Any]:
    """Stands in for a call to a busy service: refused twice, then answered."""
    fetch_calls.append(1)
    if len(fetch_calls) < 3:
        raise ConnectionError(f"upstream busy (call {len(fetch_calls)})")
    return {"payload": {"rows": 3}}


@cloacina.task(task_id="retries.parse", retries=4, retry_delay=0.2, retry_on=(ConnectionError,))
def parse(ctx: dict[str, Any]) -> dict[str, Any]:
    """A bug, not a flaky dependency: ValueError is not in retry_on, so no retry happens."""
    raise ValueError("unexpected field 'rowz'")


def _seconds_between(earlier: str, later: str) -> float:
    start = datetime.fromisoformat(earlier.replace("Z", "+00:00"))
    end = datetime.fromisoformat(later.replace("Z", "+00:00"))
    return (end - start).total_seconds()


def print_history(task_result: Mapping[str, Any]) -> None:
    print(f"{task_result['task_id']}: {task_result['status']} after {task_result['attempts']} attempt(s)")
    previous_end = None
    for attempt in task_result["history"]:
        waited = ""
        if previous_end is not None:  # the retry delay, as recorded in the database
            waited = f"  (retried {_seconds_between(previous_end, attempt['started_at']):.2f} s later)"
        print(f"  attempt {attempt['attempt']}  {attempt['status']:<9}  {attempt['error'] or '-'}{waited}")
        previous_end = attempt["completed_at"]


async def main(url: str) -> int:
    executor = cloacina.UnifiedExecutor()
    await executor.initialize(url)
    try:
        # timeout= bounds each run, so the example can never hang.
        fetched = await executor.execute(cloacina.Workflow("retries_fetch", [fetch]), timeout=20)
        parsed = await executor.execute(cloacina.Workflow("retries_parse", [parse]), timeout=20)
    finally:
        await executor.shutdown()

    fetch_result = fetched["task_results"][0]
    parse_result = parsed["task_results"][0]
    print_history(fetch_result)
    print(f"  final context: {fetched['final_context']}")
    print_history(parse_result)

    ok = (fetched["status"] == "Completed" and fetch_result["attempts"] == 3
          and parsed["status"] == "Failed" and parse_result["attempts"] == 1)
    return 0 if ok else 1


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///retries.db"
    sys.exit(asyncio.run(main(target)))

"""Helpers for testing tasks: run one registered task alone, with its options, on a given context.

::

    from cloacina.testing import run_task

    async def test_total(cloacina_executor):
        result = await run_task(cloacina_executor, total, {"rows": [1, 2, 3]})
        assert result["status"] == "Completed"
        assert result["final_context"]["total"] == 6

The task runs as the only task of ``Workflow.of_task(task)``: its upstream tasks do not run, so
``context`` stands in for what they would have produced. Its retries, timeout, ``retry_on``
and other options apply as in any workflow. The result is the execution's result dict, as
returned by ``execute``:

- ``result["status"]``: ``"Completed"``, ``"Failed"`` or ``"Cancelled"``. A failing task raises
  nothing here: the status is ``"Failed"`` and ``result["task_results"][0]["error"]`` holds
  the error (e.g. ``"ValueError: boom"``), ``["traceback"]`` its traceback.
- ``result["final_context"]``: what the task returned merged over ``context``.
- ``result["task_results"][0]``: the task's own record, with ``attempts`` and ``history``
  (one entry per attempt).

The ``cloacina_executor`` and ``cloacina_sync_executor`` pytest fixtures (see
:mod:`cloacina.pytest_plugin`) provide executors on a throw-away database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Union

import cloacina

if TYPE_CHECKING:
    from cloacina._backend import ExecutionResult, UnifiedExecutor

    from cloacina.sync import SyncExecutor

__all__ = ["run_task", "run_task_sync"]

_Context = Dict[str, Any]
_TaskRef = Union[str, Callable[..., Any]]


async def run_task(
    executor: UnifiedExecutor,
    task: _TaskRef,
    context: Optional[_Context] = None,
    *,
    timeout: Optional[float] = None,
) -> ExecutionResult:
    """Run the registered ``task`` (its function or its id) alone on ``context``; return the
    execution's result dict.

    ``executor`` is an initialized :class:`cloacina.UnifiedExecutor`. The task's dependencies
    do not run; its options (retries, timeout, ...) apply. ``timeout`` bounds the whole
    execution as in ``execute``. A failing task gives ``status == "Failed"``, it does not raise;
    an unregistered task raises WorkflowError.
    """
    return await executor.execute(cloacina.Workflow.of_task(task), context, timeout=timeout)


def run_task_sync(
    executor: SyncExecutor,
    task: _TaskRef,
    context: Optional[_Context] = None,
    *,
    timeout: Optional[float] = None,
) -> ExecutionResult:
    """:func:`run_task` for a :class:`cloacina.SyncExecutor`: blocks until the result."""
    return executor.execute(cloacina.Workflow.of_task(task), context, timeout=timeout)

"""The shapes of the dicts a Cloacina backend returns, for annotations in users' code.

``from cloacina import ExecutionResult`` (or from a backend package) works at run time too;
they are ``TypedDict`` classes, so a value is an ordinary dict.
"""

from typing import Any, Dict, List, Literal, Optional, TypedDict

__all__ = ["AttemptRecord", "CurrentTask", "ExecutionResult", "MapCounts", "RunningTask", "ScheduleInfo", "LimitInfo",
           "TaskInstance", "TaskResult", "WorkerInfo"]


_Context = Dict[str, Any]


class AttemptRecord(TypedDict):
    """One finished attempt of a task, as ``TaskResult["history"]`` lists them."""

    attempt: int
    status: Literal["Running", "Completed", "Failed", "Skipped", "Cancelled", "Lost", "Snoozed"]
    error: Optional[str]
    started_at: str
    completed_at: str


class MapCounts(TypedDict):
    """How many instances a mapped task has in each status, as ``TaskResult["map"]`` gives them."""

    count: int
    pending: int
    running: int
    completed: int
    failed: int
    skipped: int
    cancelled: int


class TaskResult(TypedDict):
    """One task of an execution, as ``ExecutionResult["task_results"]`` lists them.

    ``reason`` says why a task is Skipped or Cancelled, and why a ``Waiting`` task waits
    ("sleeping until ...", "waiting for event '...'", "snoozed until ...", "retrying at ...")."""

    task_id: str
    dependencies: List[str]
    status: Literal["Pending", "Waiting", "Running", "Completed", "Failed", "Skipped", "Cancelled"]
    attempts: int
    error: Optional[str]
    traceback: Optional[str]
    reason: Optional[str]
    started_at: Optional[str]
    completed_at: Optional[str]
    history: List[AttemptRecord]
    map: Optional[MapCounts]
    """None for an ordinary task; a mapped task's instance counts."""
    child_execution_id: Optional[str]
    """For a ``subworkflow`` task: the child execution it submitted."""


class TaskInstance(TypedDict):
    """One instance of a mapped task, as ``list_task_instances`` pages through them."""

    map_index: int
    status: Literal["Pending", "Waiting", "Running", "Completed", "Failed", "Skipped", "Cancelled"]
    attempts: int
    error: Optional[str]
    started_at: Optional[str]
    completed_at: Optional[str]
    child_execution_id: Optional[str]
    """For an instance of a mapped ``subworkflow`` task: the child execution it submitted."""


class ExecutionResult(TypedDict):
    """An execution as ``execute``, ``wait``, ``get_execution`` and ``list_executions`` return it."""

    execution_id: str
    workflow_name: str
    workflow_version: str
    status: Literal["Pending", "Running", "Completed", "Failed", "Cancelled"]
    input_context: _Context
    final_context: Optional[_Context]
    error: Optional[str]
    reason: Optional[str]
    parent_execution_id: Optional[str]
    """For a child execution: the execution whose ``subworkflow`` task submitted it."""
    parent_task_id: Optional[str]
    """That task's id in the parent (``node[i]`` for an instance of a mapped one)."""
    started_at: str
    completed_at: Optional[str]
    task_results: List[TaskResult]


class RunningTask(TypedDict):
    """A task a worker runs now, as ``WorkerInfo["running"]`` lists them."""

    execution_id: str
    task_id: str


class WorkerInfo(TypedDict):
    """A worker as ``list_workers`` returns it."""

    worker_id: str
    hostname: str
    pid: int
    task_ids: List[str]
    started_at: str
    heartbeat_at: str
    alive: bool
    running: List[RunningTask]


class CurrentTask(TypedDict):
    """The running task attempt, as ``current_task()`` returns it."""

    execution_id: str
    workflow_name: str
    task_id: str
    attempt: int
    map_index: Optional[int]
    """The instance's index in a mapped task's list; None in an ordinary task."""
    snoozes: int
    """How many times this task has raised ``Snooze`` so far (0 on its first attempt)."""


class LimitInfo(TypedDict):
    """A limit as ``list_limits`` returns it: a stored one, or a key in use under a default.

    ``running`` (attempts holding the key now) and ``waiting`` (ready tasks waiting for it)
    are ``None`` for a default (``"prefix*"``).
    """

    name: str
    concurrency: Optional[int]
    rate: Optional[int]
    per: float
    running: Optional[int]
    waiting: Optional[int]


class ScheduleInfo(TypedDict):
    """A cron schedule as ``list_schedules`` returns it."""

    name: str
    workflow_name: str
    cron: str
    timezone: str
    catchup: Literal["none", "latest", "all"]
    context: _Context
    paused: bool
    next_fire_time: Optional[str]
    last_fire_time: Optional[str]
    last_execution_id: Optional[str]
    created_at: str
    updated_at: str

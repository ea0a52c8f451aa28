"""Type stubs for a Cloacina backend module (identical for every backend)."""

from datetime import datetime, timedelta
from typing import Any, Tuple, Type, final, Awaitable, Callable, Dict, List, Literal, Optional, Sequence, TypedDict, TypeVar, Union, overload

__all__ = [
    "AttemptRecord",
    "CurrentTask",
    "ExecutionResult",
    "MapCounts",
    "RunningTask",
    "ScheduleInfo",
    "LimitInfo",
    "TaskInstance",
    "TaskResult",
    "WorkerInfo",
    "DEFAULT_LEASE_TIMEOUT",
    "DEFAULT_LIST_LIMIT",
    "DEFAULT_MAX_CONCURRENCY",
    "EXECUTION_STATUSES",
    "FINAL_EXECUTION_STATUSES",
    "FINAL_TASK_STATUSES",
    "TASK_STATUSES",
    "CloacinaError",
    "ConfigurationError",
    "ContextError",
    "DatabaseError",
    "ExecutionNotFoundError",
    "ExecutionStateError",
    "NotInitializedError",
    "ScheduleNotFoundError",
    "LimitNotFoundError",
    "SkipTask",
    "Snooze",
    "TaskRef",
    "UnifiedExecutor",
    "Workflow",
    "WorkflowError",
    "__version__",
    "backend",
    "current_task",
    "sleep",
    "task",
    "wait_for_event",
    "subworkflow",
]

__version__: str
backend: str

#: Every execution status, in the order an execution moves through them.
EXECUTION_STATUSES: Tuple[str, ...]
#: The statuses of an execution that has ended.
FINAL_EXECUTION_STATUSES: Tuple[str, ...]
#: Every task status (``Lost`` appears only in a task's history).
TASK_STATUSES: Tuple[str, ...]
#: The statuses of a task that will not change again.
FINAL_TASK_STATUSES: Tuple[str, ...]
#: ``UnifiedExecutor(max_concurrency=)`` when not given.
DEFAULT_MAX_CONCURRENCY: int
#: ``initialize(lease_timeout=)`` when not given, in seconds.
DEFAULT_LEASE_TIMEOUT: float
#: ``list_executions(limit=)`` when not given.
DEFAULT_LIST_LIMIT: int

_Context = Dict[str, Any]
_TaskFunction = Callable[[_Context], Union[Optional[_Context], Awaitable[Optional[_Context]]]]
_F = TypeVar("_F", bound=_TaskFunction)
#: A mapped task's function: it may return any JSON value (its instance's value).
_MapFunction = Callable[[_Context], Any]
_MF = TypeVar("_MF", bound=_MapFunction)
#: What ``dependencies=`` and ``Workflow(tasks=)`` take: a task id, a decorated function, or the
#: ``TaskRef`` that ``sleep`` and ``wait_for_event`` return.
_TaskLike = Union[str, Callable[..., Any], "TaskRef"]
#: A duration: seconds (a number) or a ``timedelta``.
_Duration = Union[float, timedelta]
_OnTimeout = Literal["fail", "skip", "continue"]

from ._types import AttemptRecord as AttemptRecord
from ._types import CurrentTask as CurrentTask
from ._types import ExecutionResult as ExecutionResult
from ._types import MapCounts as MapCounts
from ._types import RunningTask as RunningTask
from ._types import ScheduleInfo as ScheduleInfo
from ._types import LimitInfo as LimitInfo
from ._types import TaskInstance as TaskInstance
from ._types import TaskResult as TaskResult
from ._types import WorkerInfo as WorkerInfo
_TriggerRule = Literal["all_success", "all_done", "one_success", "one_failed", "none_failed"]
_Catchup = Literal["none", "latest", "all"]

def current_task() -> CurrentTask:
    """The running task attempt: its ``execution_id``, ``workflow_name``, ``task_id``,
    ``attempt`` (from 1), ``map_index`` (an instance's index in a mapped task, else
    None) and ``snoozes`` (how many times the task has raised ``Snooze`` so far). Call it
    from a task's code, sync or async; outside a running task it raises RuntimeError."""

class CloacinaError(Exception):
    """Base class of every error raised by the Cloacina engine."""

class DatabaseError(CloacinaError):
    """The database failed, refused the connection or could not be reached."""

class WorkflowError(CloacinaError, ValueError):
    """The workflow graph is invalid: empty, unknown or duplicate tasks, or a cycle."""

class ConfigurationError(CloacinaError, ValueError):
    """A database URL or executor setting is invalid."""

class NotInitializedError(CloacinaError, RuntimeError):
    """The executor is not initialized (call `await executor.initialize(url)`) or was shut down."""

class ContextError(CloacinaError, TypeError):
    """A context value cannot be stored as JSON."""

class ExecutionNotFoundError(CloacinaError, LookupError):
    """No execution with the given id is recorded in this database."""

class ExecutionStateError(CloacinaError, ValueError):
    """The execution's status does not allow this, e.g. resuming one that Completed."""

class ScheduleNotFoundError(CloacinaError, LookupError):
    """No schedule with the given name is stored in this database."""

class LimitNotFoundError(CloacinaError, LookupError):
    """No limit with the given name is stored in this database."""

class SkipTask(Exception):
    """Raise inside a task to mark it Skipped with this reason; it is not a failure and is never retried."""

class Snooze(Exception):
    """Raise inside a task (``raise Snooze(60)``) to end the attempt without failing and without
    using a retry: the task waits, status ``Waiting``, holding no worker slot, and runs again after
    ``seconds`` on any worker. Its history shows the attempt as ``Snoozed``; ``current_task()``
    counts the snoozes. ``seconds`` is a number or a ``timedelta``, at least 0 (else ValueError)."""

    seconds: float
    """How long the task waits before it runs again, in seconds."""

    def __init__(self, seconds: _Duration) -> None: ...

@overload
def task(
    task_id: _F,
    *,
        dependencies: Sequence[_TaskLike] = (),
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retry_max_delay: float = 60.0,
        retry_jitter: float = 0.0,
        retry_on: Union[Type[BaseException], Tuple[Type[BaseException], ...]] = (Exception,),
        timeout: Optional[float] = None,
        trigger_rule: _TriggerRule = "all_success",
        limits: Sequence[str] = (),
        priority: int = 0,
) -> _F:
    """Register a ``def`` or ``async def`` function taking the context dict as a task.

    ``task_id`` defaults to the function's name. ``dependencies`` are task ids or decorated
    functions; ids may name tasks registered later. The function is returned unchanged.
    Registering an id again replaces the earlier definition for workflows built afterwards.
    A task returns a dict (merged into the context) or None (keeps the dict it was given,
    including in-place changes).

    Failed attempts whose exception is an instance of ``retry_on`` are retried up to
    ``retries`` times, waiting ``retry_delay * retry_backoff ** (n - 1)`` seconds (capped at
    ``retry_max_delay``, spread by ``± retry_jitter``) before retry ``n``; a wait of 1 s or more
    is stored (the task is ``Waiting``, holding no worker slot) and survives the worker's death.
    ``timeout`` bounds
    each attempt: an async task is cancelled, a sync task's late result is discarded.
    ``trigger_rule`` decides whether the task runs once its upstream tasks have ended.

    ``map_over`` makes a mapped task: it names a context key (a dotted path reaches into nested
    dicts) holding a list when the task becomes ready, and the task runs once per element, in
    parallel across workers, each instance seeing its element as ``context[map_item]`` (and not
    the list). Its output is ``{collect_as or task_id: [values in list order]}``, each value
    whatever an instance returned. ``map_limit`` caps how many instances run at once in one
    execution, across all workers. Each instance retries alone; see docs/map.md.

    ``limits`` are keys of named limits (``set_limit``) each attempt holds while it runs, such as
    ``"openai"`` or ``"tenant:{tenant_id}"`` (``{name}`` parts filled from the task's input when
    it becomes ready; a missing key fails the task). A task waits, Pending, while a key's limit
    is reached. ``priority`` (an int from -1,000,000 to 1,000,000, default 0) orders ready
    tasks: the highest (the execution's plus the task's) is claimed first, then the oldest.

    Options are checked when the decorator runs: a wrong type (``True``/``False`` included)
    raises TypeError, a value out of range ValueError naming the option. ``retries`` is an int
    from 0 to 10000; ``retry_delay`` and ``retry_max_delay`` are seconds from 0 to 31536000 (one
    year); ``timeout`` is seconds above 0 and at most one year, or None; ``retry_backoff`` is from
    1.0 to 100.0 and ``retry_jitter`` from 0.0 to 1.0.
    """

@overload
def task(
    task_id: Optional[str] = None,
    *,
        dependencies: Sequence[_TaskLike] = (),
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retry_max_delay: float = 60.0,
        retry_jitter: float = 0.0,
        retry_on: Union[Type[BaseException], Tuple[Type[BaseException], ...]] = (Exception,),
        timeout: Optional[float] = None,
        trigger_rule: _TriggerRule = "all_success",
        limits: Sequence[str] = (),
        priority: int = 0,
        map_over: None = None,
) -> Callable[[_F], _F]: ...

@overload
def task(
    task_id: Optional[str] = None,
    *,
        map_over: str,
        map_item: str = "item",
        map_limit: Optional[int] = None,
        collect_as: Optional[str] = None,
        dependencies: Sequence[_TaskLike] = (),
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retry_max_delay: float = 60.0,
        retry_jitter: float = 0.0,
        retry_on: Union[Type[BaseException], Tuple[Type[BaseException], ...]] = (Exception,),
        timeout: Optional[float] = None,
        trigger_rule: _TriggerRule = "all_success",
        limits: Sequence[str] = (),
        priority: int = 0,
) -> Callable[[_MF], _MF]: ...

@final
class Workflow:
    """A named DAG of registered tasks, validated when built.

    ``tasks`` are ids or decorated functions; their dependencies join automatically.
    ``tasks=None`` takes every task registered so far. ``limits`` are limit keys (as in
    ``@task(limits=...)``, ``{name}`` parts filled from the input) that each execution holds
    from its first task's start to its end. Raises WorkflowError for an empty workflow, an
    unknown task or dependency, or a cycle, and for a workflow that contains itself through
    ``subworkflow`` or nests sub-workflows more than 16 levels deep.

    ``on_success`` and ``on_failure`` are hooks: each an ``@task`` function or its id, run once
    the execution's outcome is decided, ``on_success`` after it Completed, ``on_failure`` after
    it Failed or was Cancelled (the other is Skipped). A hook runs durably like any task (on any
    worker, with its own retries, also when the worker that ran the failing task was killed); it
    sees the final context plus ``ctx["execution"]`` (``execution_id``, ``workflow_name``,
    ``status``, ``error``, ``failed_tasks``); it never changes the execution's status or error,
    and ``wait()`` returns after it ended. Its dependencies are not run. A hook that is also one
    of the workflow's tasks (or both hooks) or unknown raises WorkflowError; a mapped or
    sub-workflow task ValueError.
    """

    def __new__(
        cls,
        name: str,
        tasks: Optional[Sequence[_TaskLike]] = None,
        *,
        limits: Optional[Sequence[str]] = None,
        on_success: Optional[_TaskLike] = None,
        on_failure: Optional[_TaskLike] = None,
    ) -> Workflow: ...
    @property
    def name(self) -> str:
        """The workflow's name."""
    @property
    def limits(self) -> List[str]:
        """Limit keys each execution holds from its first task's start to its end."""
    @property
    def task_ids(self) -> List[str]:
        """Task ids in topological order, then the hooks (``on_success``, ``on_failure``)."""
    @property
    def version(self) -> str:
        """A digest of the graph: the same tasks and edges give the same version."""
    def __len__(self) -> int: ...
    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart (``flowchart TD``), one node per task."""
    def to_dot(self) -> str:
        """The graph in Graphviz DOT."""
    @staticmethod
    def of_task(task: _TaskLike, *, name: Optional[str] = None) -> Workflow:
        """A workflow of one registered task alone, its dependencies left out.

        Runs the task, with its retries, timeout and other options, on a context its upstream
        tasks would have produced: for testing one task. ``name`` defaults to
        ``"<task id> (alone)"``.
        """

@final
class TaskRef:
    """The task ``sleep``, ``wait_for_event`` or ``subworkflow`` registered: use it in
    ``dependencies=`` and ``Workflow(tasks=)`` as a decorated function is used."""

    @property
    def task_id(self) -> str:
        """The registered task's id."""
    @property
    def __cloacina_task_id__(self) -> str:
        """The registered task's id, as a decorated function carries it."""

def sleep(
    task_id: str,
    seconds: Optional[_Duration] = None,
    *,
    until: Optional[Union[datetime, str]] = None,
    dependencies: Sequence[_TaskLike] = (),
) -> TaskRef:
    """Register a task ``task_id`` that completes ``seconds`` after it becomes ready, or at
    ``until``, and return a reference to it. Its output is ``{}``.

    ``until`` is a timezone-aware ``datetime``, an ISO 8601 string with an offset or ``Z``, or
    ``"{name}"`` naming a context value that holds such a string when the task becomes ready (a
    missing or unreadable value fails the task, naming the key). While it waits the task is
    ``Waiting`` (``reason`` "sleeping until ...") and holds no worker slot and no limit; the time is
    stored, so it wakes on time whichever worker is alive then.

    Raises ValueError for neither or both of ``seconds`` and ``until``, negative or NaN seconds,
    a naive datetime, an unreadable ISO string or an empty ``task_id``; TypeError for a
    ``seconds`` of another type.
    """

def subworkflow(
    workflow: Workflow,
    *,
    task_id: Optional[str] = None,
    dependencies: Sequence[_TaskLike] = (),
    input_keys: Optional[Sequence[str]] = None,
    map_over: Optional[str] = None,
    map_item: str = "item",
    retries: int = 0,
    timeout: Optional[_Duration] = None,
) -> TaskRef:
    """Register a task that runs ``workflow`` as a child execution and completes when the
    child ends, with output ``{task_id: child_final_context}`` (``task_id`` defaults to the
    workflow's name), and return a reference to it.

    The child's input is the task's input context (only ``input_keys`` when given). A Failed or
    Cancelled child fails the task, its error naming the child execution. ``map_over`` runs one
    child per element of that list, collecting their final contexts in order. Each node has
    exactly one child, whatever crashes and retries happen; ``retries`` resumes a failed child;
    ``timeout`` cancels a child still running after that many seconds. The task holds no worker
    slot while its child runs (it is ``Waiting``). Cancelling the parent cancels every live
    descendant.
    """
    ...


def wait_for_event(
    task_id: str,
    *,
    key: str,
    timeout: Optional[_Duration] = None,
    on_timeout: _OnTimeout = "fail",
    dependencies: Sequence[_TaskLike] = (),
) -> TaskRef:
    """Register a task ``task_id`` that completes when an event ``key`` is sent
    (``UnifiedExecutor.send_event``), and return a reference to it. Its output is
    ``{task_id: payload}``.

    ``key`` may hold ``{name}`` parts filled from the task's input context
    (``"approve:{order_id}"``). An event sent after the execution was submitted counts even if
    it came before the wait started (events are kept 7 days). While it waits the task is
    ``Waiting`` (``reason`` "waiting for event '...'") and holds no worker slot.

    After ``timeout`` (seconds or a ``timedelta``; None waits for ever) ``on_timeout`` decides:
    ``"fail"`` fails the task (``TimeoutError: no event 'KEY' arrived within N s``), ``"skip"``
    skips it, ``"continue"`` completes it with the payload ``None``.

    Raises ValueError for an empty key, unbalanced braces, a ``timeout`` not above 0 or an
    unknown ``on_timeout``.
    """

@final
class UnifiedExecutor:
    """Submits workflows to a database and, unless submit-only, works as one of its workers.

    Every initialized executor runs ready tasks of any execution in its database (and schema)
    whose task ids are registered in this process, so processes importing the same task
    module share the work. Completed tasks never run again; a task interrupted by a worker's
    death runs again (at least once), so its side effects should be idempotent.

    The methods are awaited. Called where an event loop runs, they start their work at once;
    called from a thread without one (a sync task's), all but ``initialize`` return a coroutine
    that starts once a loop runs it, e.g. in a sync task
    ``asyncio.run_coroutine_threadsafe(executor.execute(wf), loop).result()``.
    """

    def __new__(cls, max_concurrency: int = 8) -> UnifiedExecutor:
        """``max_concurrency`` (an int from 1 to 100000) is the most tasks this executor runs at once."""
    @property
    def max_concurrency(self) -> int:
        """The most tasks this executor runs at once."""
    async def initialize(
        self,
        database_url: Optional[str] = None,
        *,
        schema: Optional[str] = None,
        pool_size: Optional[int] = None,
        lease_timeout: Optional[float] = None,
        worker: bool = True,
    ) -> None:
        """Connect to and migrate the database; call once before anything else.

        Without ``database_url``, the ``CLOACINA_DATABASE_URL`` environment variable is used,
        else (SQLite backend only) the file ``cloacina.db`` in the working directory.

        ``schema`` (PostgreSQL only) keeps every table in that schema, created if missing.
        ``pool_size`` (an int from 1 to 1000) caps the connections this executor opens (default
        10 on PostgreSQL, 4 on a SQLite file). ``lease_timeout`` (seconds above 0 and at most one
        year, default 30) is how long after its last heartbeat a worker in another process or on
        another machine is presumed dead and its tasks are run again; a dead process on this
        machine is noticed at once.
        ``worker=False`` makes the executor submit-only: it never runs tasks. Async tasks run
        on the event loop that called ``initialize``.
        """
    async def submit(
        self,
        workflow: Workflow,
        context: Optional[_Context] = None,
        *,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        priority: Optional[int] = None,
    ) -> str:
        """Record a new execution and return its id at once; a worker of the database runs it.

        Submitting again with the same ``idempotency_key`` (from any process) returns the first
        execution's id and starts nothing. Past ``timeout`` seconds (above 0 and at most one
        year) the execution is cancelled. ``priority`` (an int from -1,000,000 to 1,000,000,
        default 0) is added to each task's: ready tasks are claimed highest first.
        """
    async def wait(self, execution_id: str, *, timeout: Optional[float] = None) -> ExecutionResult:
        """Wait for any execution in the database to end and return its result dict.

        Raises TimeoutError once ``timeout`` seconds (above 0 and at most one year) pass (the
        execution goes on), and ExecutionNotFoundError for an unknown id.
        """
    async def execute(
        self, workflow: Workflow, context: Optional[_Context] = None, *, timeout: Optional[float] = None
    ) -> ExecutionResult:
        """Submit ``workflow`` and wait for its result; a failing task gives a Failed result.

        Past ``timeout`` seconds (above 0 and at most one year) the execution is cancelled and its
        result is "Cancelled".
        Cancelling the awaiting coroutine cancels the execution too.
        """
    async def cancel(self, execution_id: str) -> bool:
        """Cancel a Pending or Running execution wherever it runs; False if it had already ended
        or is unknown. Its unstarted and Waiting tasks end Cancelled, running async tasks see
        CancelledError."""
    async def resume(self, execution_id: str) -> str:
        """Run a Failed or Cancelled execution again from where it stopped; returns its id.

        Completed tasks keep their outputs and are not re-run; the others run again, with their
        history kept. Raises ExecutionStateError for an execution in another status.
        """
    async def get_execution(self, execution_id: str) -> Optional[ExecutionResult]:
        """Read a recorded execution back; None if the id is unknown."""
    async def list_task_instances(
        self, execution_id: str, task_id: str, *, offset: int = 0, limit: int = 100
    ) -> List[TaskInstance]:
        """A page of the instances of the mapped task ``task_id``, in ``map_index`` order; empty
        for an ordinary task or one not expanded yet. ``limit`` is an int from 1 to 10000."""
    async def list_executions(
        self, workflow: Optional[str] = None, status: Optional[str] = None, limit: int = 50, offset: int = 0
    ) -> List[ExecutionResult]:
        """List recorded executions, newest first, filtered by workflow name and status;
        ``limit`` is an int from 1 to 10000; ``offset`` skips that many of the newest (pages)."""
    async def schedule(
        self,
        workflow: Workflow,
        cron: str,
        *,
        name: Optional[str] = None,
        timezone: str = "UTC",
        context: Optional[_Context] = None,
        catchup: _Catchup = "latest",
    ) -> str:
        """Store a schedule that submits ``workflow`` at each fire of ``cron``; return its name.

        ``cron`` has 5 fields (minute hour day-of-month month day-of-week), 6 with seconds
        first, or is an alias such as ``"@hourly"``; it is read in the IANA ``timezone``. Any
        worker of the database makes each fire once, submitting one execution whose input is
        ``context`` plus ``"fire_time"`` (ISO 8601, UTC). ``name`` (default: the workflow's name)
        is unique per database: scheduling it again updates that schedule, keeping its next
        fire unless ``cron`` or ``timezone`` changed, and keeping it paused if it was.
        ``catchup`` says which of the fires missed while no worker ran still run: ``"none"``,
        ``"latest"`` (the most recent, once) or ``"all"`` (each, oldest first, at most 100).
        Raises ConfigurationError (a ValueError) for a bad expression, time zone, name or
        catch-up mode, and ContextError for a context that is not JSON; nothing is stored then.
        """
    async def list_workers(self) -> List[WorkerInfo]:
        """Every worker registered in the database, most recent heartbeat first: its host and
        pid, its task ids, its heartbeat, whether it is alive (heartbeat younger than the
        lease) and the tasks it is running. Workers that stopped cleanly are not listed."""
    async def set_limit(
        self, name: str, *, concurrency: Optional[int] = None, rate: Optional[int] = None, per: float = 1.0
    ) -> None:
        """Create or change the limit ``name`` for every worker on the database: at most
        ``concurrency`` attempts holding it run at once, at most ``rate`` start in any ``per``
        seconds (evenly spaced). A name ending in ``*`` is the default of every key with that
        prefix. Raises ValueError for a count below 1 or ``per`` not above 0, TypeError for a
        wrong type; nothing is stored then. Waiting tasks are tried again at once."""
    async def delete_limit(self, name: str) -> None:
        """Delete the limit ``name``; raises LimitNotFoundError (a LookupError) if there is none."""
    async def list_limits(self) -> List[LimitInfo]:
        """Every limit in the database and every key in use under a ``*`` default, by name,
        with ``running`` (attempts and executions holding the key now) and ``waiting`` (ready
        tasks waiting for it); both None for a ``*`` default itself."""
    async def send_event(self, key: str, payload: Any = None) -> int:
        """Send the event ``key`` with ``payload`` (any JSON value): every task waiting for it
        (``wait_for_event``), in any process on the database, completes with the payload as its
        output. Returns how many waiting tasks it completed now. A wait that starts later still
        sees the event if it came after the wait's execution was submitted; events are kept 7
        days. Works on a submit-only executor too. Raises ValueError for an empty key, TypeError
        for a payload that is not JSON."""
    async def list_schedules(self) -> List[ScheduleInfo]:
        """Every schedule in the database, by name, with its next and last fire."""
    async def pause_schedule(self, name: str) -> None:
        """Stop ``name`` firing, in every worker, until ``resume_schedule``; raises
        ScheduleNotFoundError for an unknown name."""
    async def resume_schedule(self, name: str) -> None:
        """Let a paused schedule fire again from its next fire after now (fires that fell due
        while it was paused are skipped); raises ScheduleNotFoundError for an unknown name."""
    async def unschedule(self, name: str) -> None:
        """Delete a schedule (its executions stay); raises ScheduleNotFoundError for an unknown
        name."""
    async def shutdown(self, *, cancel: bool = False) -> None:
        """Stop claiming work and wait for running tasks to end and be stored.

        Unfinished executions stay in the database, never marked Failed, for the next worker.
        ``cancel=True`` first cancels the executions this executor submitted.
        """

"""A blocking face of :class:`cloacina.UnifiedExecutor`, for scripts and notebooks without asyncio.

:class:`SyncExecutor` owns a private event loop running in a daemon thread. ``initialize``
starts that thread and initializes a ``UnifiedExecutor`` on its loop, so ``async def`` tasks
run there; every other method hands its coroutine to that loop and blocks until the result
(or the exception, unchanged) comes back.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, Type, TypeVar

import cloacina

if TYPE_CHECKING:
    from cloacina._backend import ExecutionResult, LimitInfo, ScheduleInfo, TaskInstance, WorkerInfo, Workflow, _Catchup

__all__ = ["SyncExecutor"]

_T = TypeVar("_T")
_Context = Dict[str, Any]

# States of a SyncExecutor.
_NEW = "not initialized"
_STARTING = "initializing"
_READY = "ready"
_SHUT_DOWN = "shut down"

# Seconds the interpreter's exit waits for a forgotten executor's running tasks.
_EXIT_SHUTDOWN_TIMEOUT = 10.0
# Seconds between two checks for a KeyboardInterrupt while a call blocks.
_POLL_INTERVAL = 0.1
# Seconds a shutdown waits for the calls still running on the loop to end once cancelled.
_STOP_TASKS_TIMEOUT = 10.0
# Seconds an interrupted execute() waits for its execution to be recorded as cancelled.
_INTERRUPT_CANCEL_TIMEOUT = 10.0


def _refuse_running_loop(method: str) -> None:
    """Raises RuntimeError when the calling thread runs an event loop: blocking it would stall
    that loop, and deadlock if it is the loop the executor's work needs."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"SyncExecutor.{method}() blocks, so it cannot be called while an event loop runs in "
        f"this thread (it would stall the loop or deadlock); in async code use "
        f"cloacina.UnifiedExecutor and `await executor.{method}(...)` instead"
    )


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Body of the executor's thread: runs ``loop`` until it is stopped, then closes it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


async def _await(make: Callable[[], Awaitable[_T]]) -> _T:
    """Calls ``make`` on the loop's thread (the executor's awaitables need a running loop)."""
    return await make()


def _wait(future: concurrent.futures.Future[_T], timeout: Optional[float] = None) -> _T:
    """``future.result(timeout)``, waiting in short slices so that a KeyboardInterrupt is
    raised promptly even when the signal was delivered to another thread."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    deadline = None if timeout is None else time.monotonic() + timeout
    while not done.wait(_POLL_INTERVAL):
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout} s")
    return future.result()


async def _stop_tasks() -> None:
    """Cancels whatever else still runs on the loop and waits for it, so no caller hangs."""
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current]
    for t in others:
        t.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()


class SyncExecutor:
    """The methods of :class:`cloacina.UnifiedExecutor`, blocking instead of awaitable.

    For scripts, notebooks and other code without an event loop::

        with cloacina.SyncExecutor() as executor:
            executor.initialize("sqlite:///etl.db")
            result = executor.execute(cloacina.Workflow("etl", tasks=[extract, total]))

    ``initialize`` starts a daemon thread running a private event loop and initializes a
    ``UnifiedExecutor`` on it: ``async def`` tasks run on that loop, sync tasks on worker
    threads, as with ``UnifiedExecutor``. Each method then blocks until its result is ready
    and raises the same exceptions (same types) as the ``UnifiedExecutor`` method. Methods may
    be called from several threads at once.

    - Called from a thread that runs an event loop (``async`` code, or an async task), every
      blocking method raises RuntimeError: there, await a ``UnifiedExecutor`` instead.
    - Before ``initialize`` and after ``shutdown`` the methods raise NotInitializedError.
    - A sync task waiting on this executor (``execute``/``wait``) keeps its concurrency slot,
      unlike one awaiting a ``UnifiedExecutor``: nested executions belong on the latter.
    - Ctrl-C (KeyboardInterrupt) while ``execute`` blocks cancels that execution, then
      re-raises; while ``wait`` blocks it only stops waiting (the execution goes on).
    - ``with SyncExecutor() as executor:`` shuts the executor down when the block ends. An
      executor never shut down is shut down when the interpreter exits, waiting at most 10 s
      for its running tasks (unfinished executions stay in the database for the next worker).
    """

    def __init__(self, max_concurrency: int = cloacina.DEFAULT_MAX_CONCURRENCY) -> None:
        """``max_concurrency`` (an int from 1 to 100000) is the most tasks this executor runs at once."""
        self._executor = cloacina.UnifiedExecutor(max_concurrency)
        self._lock = threading.Lock()
        self._state = _NEW
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        return f"SyncExecutor(max_concurrency={self.max_concurrency}, state={self._state!r})"

    def __enter__(self) -> SyncExecutor:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.shutdown()

    @property
    def max_concurrency(self) -> int:
        """The most tasks this executor runs at once."""
        return self._executor.max_concurrency

    # --- the loop thread ---------------------------------------------------------------------

    def _not_ready(self) -> BaseException:
        if self._state == _SHUT_DOWN:
            return cloacina.NotInitializedError(
                "this executor was shut down; create a new SyncExecutor and initialize it"
            )
        return cloacina.NotInitializedError(
            "the executor is not initialized; call `executor.initialize(database_url)` first"
        )

    def _submit(self, method: str, make: Callable[[], Awaitable[_T]]) -> concurrent.futures.Future[_T]:
        """Starts ``make()`` on the loop; raises at once when called from a running loop or when
        the executor is not ready."""
        _refuse_running_loop(method)
        with self._lock:
            if self._state != _READY or self._loop is None:
                raise self._not_ready()
            return asyncio.run_coroutine_threadsafe(_await(make), self._loop)

    def _result(self, future: concurrent.futures.Future[_T]) -> _T:
        """Blocks for ``future``'s result. Interrupted, stops the coroutine and re-raises."""
        try:
            return _wait(future)
        except concurrent.futures.CancelledError:
            # The loop was stopped under the call by a shutdown from another thread.
            if self._state != _READY:
                raise self._not_ready() from None
            raise
        except KeyboardInterrupt:
            future.cancel()
            raise

    def _call(self, method: str, make: Callable[[], Awaitable[_T]]) -> _T:
        return self._result(self._submit(method, make))

    @staticmethod
    def _stop_loop(
        loop: asyncio.AbstractEventLoop, thread: threading.Thread, timeout: Optional[float] = None
    ) -> None:
        """Cancels what still runs on ``loop``, stops it and joins its thread (waiting at most
        ``timeout`` seconds for the thread when given)."""
        try:
            if not loop.is_closed():
                _wait(asyncio.run_coroutine_threadsafe(_stop_tasks(), loop), _STOP_TASKS_TIMEOUT)
        except Exception:
            pass  # best effort: the loop is stopped below regardless
        finally:
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass  # already closed
            if thread is not threading.current_thread():
                thread.join(timeout)

    # --- the API -----------------------------------------------------------------------------

    def initialize(
        self,
        database_url: Optional[str] = None,
        *,
        schema: Optional[str] = None,
        pool_size: Optional[int] = None,
        lease_timeout: Optional[float] = None,
        worker: bool = True,
    ) -> None:
        """Start the executor's event loop thread, then connect to and migrate the database.

        Takes the arguments of ``UnifiedExecutor.initialize``. If it fails, the executor is
        left not initialized (and its thread stopped), ready for another ``initialize``.
        Raises CloacinaError if already initialized, NotInitializedError after ``shutdown``.
        """
        _refuse_running_loop("initialize")
        with self._lock:
            if self._state == _SHUT_DOWN:
                raise self._not_ready()
            if self._state != _NEW:
                raise cloacina.CloacinaError("this executor is already initialized")
            self._state = _STARTING
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_run_loop, args=(loop,), name="cloacina-sync-executor", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread

        executor = self._executor
        future = asyncio.run_coroutine_threadsafe(
            _await(
                lambda: executor.initialize(
                    database_url,
                    schema=schema,
                    pool_size=pool_size,
                    lease_timeout=lease_timeout,
                    worker=worker,
                )
            ),
            loop,
        )
        try:
            _wait(future)
        except BaseException:
            future.cancel()  # interrupted: a cancelled initialize leaves the executor New
            with self._lock:
                if self._state == _STARTING:  # else shut down meanwhile: it stays so
                    self._state = _NEW
                    self._loop = self._thread = None
            self._stop_loop(loop, thread)
            raise
        with self._lock:
            ready = self._state == _STARTING
            if ready:
                self._state = _READY
        if ready:
            atexit.register(self._shutdown_at_exit)
            return
        # shutdown() was called by another thread while this one initialized.
        try:
            _wait(asyncio.run_coroutine_threadsafe(_await(lambda: executor.shutdown()), loop))
        finally:
            self._stop_loop(loop, thread)
        raise self._not_ready()

    def submit(
        self,
        workflow: Workflow,
        context: Optional[_Context] = None,
        *,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> str:
        """Record a new execution and return its id at once; a worker of the database runs it.

        Same rules as ``UnifiedExecutor.submit`` (idempotency key, timeout).
        """
        executor = self._executor
        return self._call(
            "submit",
            lambda: executor.submit(workflow, context, idempotency_key=idempotency_key, timeout=timeout),
        )

    def wait(self, execution_id: str, *, timeout: Optional[float] = None) -> ExecutionResult:
        """Block until any execution in the database ends and return its result dict.

        Raises TimeoutError once ``timeout`` seconds pass (the execution goes on), and
        ExecutionNotFoundError for an unknown id. KeyboardInterrupt stops waiting only.
        """
        executor = self._executor
        return self._call("wait", lambda: executor.wait(execution_id, timeout=timeout))

    def execute(
        self, workflow: Workflow, context: Optional[_Context] = None, *, timeout: Optional[float] = None
    ) -> ExecutionResult:
        """Submit ``workflow`` and block until its result; a failing task gives a Failed result.

        Past ``timeout`` seconds the execution is cancelled and its result is "Cancelled".
        A KeyboardInterrupt (Ctrl-C) while it blocks cancels the execution and waits (at most
        10 s) until it has ended Cancelled, then propagates.
        """
        executor = self._executor
        # The submission, kept apart from the waiting so that an interrupt can still cancel an
        # execution whose submission was under way.
        submissions: List[asyncio.Future[str]] = []

        async def submit_and_wait() -> ExecutionResult:
            submission = asyncio.ensure_future(executor.submit(workflow, context, timeout=timeout))
            submissions.append(submission)
            execution_id = await asyncio.shield(submission)
            return await executor.wait(execution_id)

        future = self._submit("execute", submit_and_wait)
        try:
            return self._result(future)
        except KeyboardInterrupt:
            self._cancel_interrupted(submissions)
            raise

    def _cancel_interrupted(self, submissions: List[asyncio.Future[str]]) -> None:
        """Cancels the execution an interrupted ``execute`` submitted, if it got that far."""
        executor = self._executor

        async def cancel_submitted() -> None:
            # Runs after the interrupted coroutine's first step, so `submissions` is final.
            if not submissions:
                return
            try:
                execution_id = await submissions[0]
            except BaseException:
                return  # nothing was recorded
            if await executor.cancel(execution_id):
                await executor.wait(execution_id)  # until it is recorded as Cancelled

        try:
            future = self._submit("cancel", cancel_submitted)
        except Exception:
            return  # shut down meanwhile
        try:
            _wait(future, _INTERRUPT_CANCEL_TIMEOUT)
        except Exception:
            future.cancel()  # best effort: the interrupt propagates whatever happens here

    def cancel(self, execution_id: str) -> bool:
        """Cancel a Pending or Running execution wherever it runs; False if it had already
        ended or is unknown."""
        executor = self._executor
        return self._call("cancel", lambda: executor.cancel(execution_id))

    def resume(self, execution_id: str) -> str:
        """Run a Failed or Cancelled execution again from where it stopped; returns its id.

        Raises ExecutionStateError for an execution in another status.
        """
        executor = self._executor
        return self._call("resume", lambda: executor.resume(execution_id))

    def get_execution(self, execution_id: str) -> Optional[ExecutionResult]:
        """Read a recorded execution back; None if the id is unknown."""
        executor = self._executor
        return self._call("get_execution", lambda: executor.get_execution(execution_id))

    def list_task_instances(
        self, execution_id: str, task_id: str, *, offset: int = 0, limit: int = 100
    ) -> List[TaskInstance]:
        """A page of the instances of the mapped task ``task_id``, in ``map_index`` order; empty
        for an ordinary task or one not expanded yet. ``limit`` is an int from 1 to 10000;
        ValueError for an ``offset`` below 0 or a ``limit`` out of range."""
        executor = self._executor
        return self._call(
            "list_task_instances",
            lambda: executor.list_task_instances(execution_id, task_id, offset=offset, limit=limit),
        )

    def list_executions(
        self, workflow: Optional[str] = None, status: Optional[str] = None, limit: int = cloacina.DEFAULT_LIST_LIMIT, offset: int = 0
    ) -> List[ExecutionResult]:
        """List recorded executions, newest first, filtered by workflow name and status;
        ``offset`` skips that many of the newest (pages)."""
        executor = self._executor
        return self._call("list_executions", lambda: executor.list_executions(workflow, status, limit, offset))

    def schedule(
        self,
        workflow: Workflow,
        cron: str,
        *,
        name: Optional[str] = None,
        timezone: str = "UTC",
        context: Optional[_Context] = None,
        catchup: _Catchup = "latest",
    ) -> str:
        """Store a cron schedule that submits ``workflow`` at each fire; return its name.

        Same rules as ``UnifiedExecutor.schedule``.
        """
        executor = self._executor
        return self._call(
            "schedule",
            lambda: executor.schedule(
                workflow, cron, name=name, timezone=timezone, context=context, catchup=catchup
            ),
        )

    def list_workers(self) -> List[WorkerInfo]:
        """Every worker registered in the database: its heartbeat and the tasks it runs."""
        executor = self._executor
        return self._call("list_workers", lambda: executor.list_workers())

    def list_schedules(self) -> List[ScheduleInfo]:
        """Every schedule in the database, by name, with its next and last fire."""
        executor = self._executor
        return self._call("list_schedules", lambda: executor.list_schedules())

    def pause_schedule(self, name: str) -> None:
        """Stop ``name`` firing until ``resume_schedule``; ScheduleNotFoundError if unknown."""
        executor = self._executor
        self._call("pause_schedule", lambda: executor.pause_schedule(name))

    def resume_schedule(self, name: str) -> None:
        """Let a paused schedule fire again from its next fire after now."""
        executor = self._executor
        self._call("resume_schedule", lambda: executor.resume_schedule(name))

    def unschedule(self, name: str) -> None:
        """Delete a schedule (its executions stay); ScheduleNotFoundError if unknown."""
        executor = self._executor
        self._call("unschedule", lambda: executor.unschedule(name))

    def set_limit(
        self, name: str, *, concurrency: Optional[int] = None, rate: Optional[int] = None, per: float = 1.0
    ) -> None:
        """Create or change the limit ``name`` for every worker on the database.

        Same rules as ``UnifiedExecutor.set_limit`` (a name ending in ``*`` is a default).
        """
        executor = self._executor
        self._call("set_limit", lambda: executor.set_limit(name, concurrency=concurrency, rate=rate, per=per))

    def delete_limit(self, name: str) -> None:
        """Delete the limit ``name``; LimitNotFoundError if there is none."""
        executor = self._executor
        self._call("delete_limit", lambda: executor.delete_limit(name))

    def list_limits(self) -> List[LimitInfo]:
        """Every limit in the database and the keys in use under a ``*`` default, by name, with
        the attempts holding each key and the tasks waiting for it (None for a default)."""
        executor = self._executor
        return self._call("list_limits", lambda: executor.list_limits())

    def send_event(self, key: str, payload: Any = None) -> int:
        """Send the event ``key`` with ``payload`` (any JSON value) to every task waiting for it
        (``wait_for_event``) in any process on the database; returns how many it completed now.

        Same rules as ``UnifiedExecutor.send_event`` (events are kept 7 days).
        """
        executor = self._executor
        return self._call("send_event", lambda: executor.send_event(key, payload))

    def shutdown(self, *, cancel: bool = False) -> None:
        """Stop claiming work, wait for running tasks to end and be stored, then stop the
        executor's thread.

        Unfinished executions stay in the database for the next worker; ``cancel=True`` first
        cancels the executions this executor submitted. Calls still blocked in another thread
        raise NotInitializedError. Shutting down again does nothing; afterwards every method
        raises NotInitializedError.
        """
        _refuse_running_loop("shutdown")
        self._shutdown(cancel=cancel, timeout=None)

    def _shutdown(self, *, cancel: bool, timeout: Optional[float]) -> None:
        with self._lock:
            was_ready = self._state == _READY
            loop, thread = self._loop, self._thread
            self._state = _SHUT_DOWN
        if not was_ready or loop is None or thread is None:
            if thread is not None and thread is not threading.current_thread():
                thread.join()  # another thread is shutting it down: wait for it to finish
            return
        atexit.unregister(self._shutdown_at_exit)
        executor = self._executor
        future = asyncio.run_coroutine_threadsafe(_await(lambda: executor.shutdown(cancel=cancel)), loop)
        try:
            _wait(future, timeout)
        except BaseException:
            future.cancel()
            raise
        finally:
            self._stop_loop(loop, thread, timeout)

    def _shutdown_at_exit(self) -> None:
        """atexit hook: shuts down an executor the program forgot, waiting at most 10 s."""
        try:
            self._shutdown(cancel=False, timeout=_EXIT_SHUTDOWN_TIMEOUT)
        except Exception:
            pass  # the interpreter is exiting; nothing left to report to

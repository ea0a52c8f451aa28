"""``cloacina run MODULE:WORKFLOW``: submit a workflow, run it in this process and show progress.

The executor here is a worker of the database, so it runs the tasks itself (other workers of the
same database may take some). Progress comes from polling ``get_execution``: on a terminal one
line redrawn in place, otherwise one plain line per task as it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from typing import Any, Dict, Mapping, Optional, Set, TextIO

import cloacina

from cloacina.cli import render
from cloacina.cli.common import (
    EXIT_NOT_COMPLETED,
    EXIT_OK,
    POLL_SECONDS,
    CliError,
    StopSignals,
    concurrency_options,
    database_options,
    exit_now,
    open_executor,
    workflow_target,
)
from cloacina.cli.loading import load_workflow, parse_context


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "run", parents=[workflow_target(), database_options(), concurrency_options()], help="run a workflow here and show its progress",
        description="Import MODULE (from the working directory first, like `python -m`; a path "
                    "ending in .py works too), submit its Workflow named WORKFLOW and run it in "
                    "this process, showing each task as it ends. Exit code 0 if the execution "
                    "Completed, 1 if it ended Failed or Cancelled. Ctrl-C (or SIGTERM) cancels the "
                    "execution; a second one stops at once (exit code 130).")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--context", metavar="JSON", help="the input context, a JSON object")
    source.add_argument("--context-file", metavar="FILE", help="read the input context from FILE (- for stdin)")
    parser.set_defaults(handler=lambda args: asyncio.run(_run(args)))


class Progress:
    """Shows an execution's tasks as its record changes.

    ``live`` (a terminal): a line ending each task, above a bar redrawn in place with ``\\r``.
    Otherwise only the lines. A task that starts to wait (``Waiting``: a sleep, an event, a snooze,
    a retry's delay) gets a line too, with its reason, once per reason. ``stream=None`` shows
    nothing.
    """

    def __init__(self, stream: Optional[TextIO], *, live: bool) -> None:
        self.stream = stream
        self.live = live and stream is not None
        self.started = time.monotonic()
        self._reported: Set[str] = set()
        self._waiting: Dict[str, Optional[str]] = {}  # task id -> the reason last shown

    def update(self, record: Mapping[str, Any]) -> None:
        if self.stream is None:
            return
        tasks = record["task_results"]
        out = render.CLEAR_LINE if self.live else ""
        for task in tasks:
            if task["status"] in cloacina.FINAL_TASK_STATUSES and task["task_id"] not in self._reported:
                self._reported.add(task["task_id"])
                out += render.task_line(task) + "\n"
            elif task["status"] == "Waiting" and self._waiting.get(task["task_id"], "") != task.get("reason"):
                self._waiting[task["task_id"]] = task.get("reason")
                out += render.task_line(task) + "\n"
        if self.live:
            width = shutil.get_terminal_size().columns - 1
            out += render.progress_line(tasks, elapsed=time.monotonic() - self.started, width=width)
        if out:
            self.stream.write(out)
            self.stream.flush()

    def note(self, message: str) -> None:
        if self.stream is not None:
            self.stream.write((render.CLEAR_LINE if self.live else "") + render.printable(message) + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.live and self.stream is not None:
            self.stream.write(render.CLEAR_LINE)
            self.stream.flush()


async def _run(args: argparse.Namespace) -> int:
    context = parse_context(args.context, args.context_file)
    workflow = load_workflow(args.target)
    if args.json:  # stdout carries only the JSON; progress goes to a terminal on stderr, if any
        progress = Progress(sys.stderr if sys.stderr.isatty() else None, live=True)
    else:
        progress = Progress(sys.stdout, live=sys.stdout.isatty())
    try:
        async with open_executor(args, worker=True, max_concurrency=args.max_concurrency) as executor:
            execution_id = await executor.submit(workflow, context)
            progress.note(f"execution {execution_id} started: workflow {workflow.name}, {len(workflow)} tasks")
            with StopSignals(on_repeat=lambda name: _stop_now(progress, name)) as stop:
                record = await _follow(executor, execution_id, progress, stop)
    finally:
        progress.finish()
    print(render.to_json(record) if args.json else render.execution_summary(record))
    return EXIT_OK if record["status"] == "Completed" else EXIT_NOT_COMPLETED


async def _follow(executor: cloacina.UnifiedExecutor, execution_id: str, progress: Progress,
                  stop: StopSignals) -> Mapping[str, Any]:
    """Polls the execution until it ends; the first Ctrl-C or SIGTERM cancels it."""
    cancel_sent = False
    while True:
        record: Optional[Mapping[str, Any]] = await executor.get_execution(execution_id)
        if record is None:
            raise CliError(f"execution {execution_id} disappeared from the database")
        progress.update(record)
        if record["status"] in cloacina.FINAL_EXECUTION_STATUSES:
            return record
        if stop.event.is_set() and not cancel_sent:
            cancel_sent = True
            progress.note(f"{stop.received}: cancelling execution {execution_id} (again to stop at once)")
            await executor.cancel(execution_id)
            continue
        await asyncio.sleep(POLL_SECONDS)


def _stop_now(progress: Progress, signal_name: str) -> None:
    """A second signal: exit at once (130), without waiting for the execution's cancelled tasks
    or for the task threads still running."""
    progress.note(f"{signal_name} received again: stopping at once")
    exit_now()

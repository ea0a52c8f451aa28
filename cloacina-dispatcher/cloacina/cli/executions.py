"""``cloacina executions ...``: list, show, cancel, resume and wait for recorded executions, and
page through the instances of a mapped task.

These commands only read and change records: their executor is submit-only (``worker=False``)
and never runs a task.
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping

import cloacina

from cloacina.cli import render
from cloacina.cli.common import (EXIT_NOT_COMPLETED, EXIT_OK, CliError, database_options,
                                 submit_only_command)


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "executions", help="list, inspect, cancel, resume or wait for executions",
        description="Read and manage the executions recorded in the database. These commands never "
                    "run tasks: a worker (`cloacina worker`) or a `cloacina run` does.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = database_options()

    listing = actions.add_parser("list", parents=[common], help="list executions, newest first",
                                 description="List executions, newest first.")
    listing.add_argument("--workflow", metavar="NAME", help="only executions of this workflow")
    listing.add_argument("--status", type=_status, metavar="STATUS",
                         help=f"only executions in this status ({', '.join(cloacina.EXECUTION_STATUSES)})")
    listing.add_argument("--limit", type=int, default=cloacina.DEFAULT_LIST_LIMIT, metavar="N",
                         help=f"at most N executions (1 to 10000; default {cloacina.DEFAULT_LIST_LIMIT})")
    listing.set_defaults(handler=submit_only_command(_list))

    show = actions.add_parser("show", parents=[common], help="one execution and its tasks",
                              description="Show one execution: its fields, then a table of its tasks. A "
                                          "mapped task (map_over=) is one row, with a bar and the counts "
                                          "of its instances; `cloacina executions instances ID TASK` "
                                          "pages through them. A child execution (of a subworkflow "
                                          "task) names its parent and that task; a parent lists the "
                                          "child execution of each of its subworkflow tasks.")
    show.add_argument("execution_id", metavar="ID")
    show.set_defaults(handler=submit_only_command(_show))

    instances = actions.add_parser(
        "instances", parents=[common], help="page through the instances of a mapped task",
        description="List the instances of a mapped task (map_over=) in map_index order, one page at a "
                    "time: index, status, attempts, duration and error. With --json, prints the dicts "
                    "list_task_instances returns.")
    instances.add_argument("execution_id", metavar="ID")
    instances.add_argument("task_id", metavar="TASK", help="the mapped task's id")
    instances.add_argument("--offset", type=int, default=0, metavar="N",
                           help="start at map_index N (default 0)")
    instances.add_argument("--limit", type=int, default=None, metavar="N",
                           help="at most N instances (1 to 10000; default 100)")
    instances.set_defaults(handler=submit_only_command(_instances))

    cancel = actions.add_parser(
        "cancel", parents=[common], help="cancel a Pending or Running execution",
        description="Cancel a Pending or Running execution wherever it runs. With --json, prints the "
                    "execution as read after the cancel.")
    cancel.add_argument("execution_id", metavar="ID")
    cancel.set_defaults(handler=submit_only_command(_cancel))

    resume = actions.add_parser(
        "resume", parents=[common], help="run a Failed or Cancelled execution again",
        description="Run a Failed or Cancelled execution again from where it stopped: Completed tasks "
                    "keep their outputs. A worker of the database runs it; follow it with "
                    "`cloacina executions wait ID`. With --json, prints the execution as read after "
                    "the resume.")
    resume.add_argument("execution_id", metavar="ID")
    resume.set_defaults(handler=submit_only_command(_resume))

    wait = actions.add_parser(
        "wait", parents=[common], help="wait for an execution to end and print its result",
        description="Wait for an execution to end, whoever runs it, and print its result. Exit code "
                    "0 if it Completed, 1 if it ended Failed or Cancelled or is still running after "
                    "--timeout.")
    wait.add_argument("execution_id", metavar="ID")
    wait.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="give up after this many seconds (the execution goes on)")
    wait.set_defaults(handler=submit_only_command(_wait))


def _status(text: str) -> str:
    for status in cloacina.EXECUTION_STATUSES:
        if text.lower() == status.lower():
            return status
    raise argparse.ArgumentTypeError(f"unknown status {text!r}; choose from {', '.join(cloacina.EXECUTION_STATUSES)}")


async def _list(executor: cloacina.UnifiedExecutor, args: argparse.Namespace) -> int:
    records = await executor.list_executions(workflow=args.workflow, status=args.status, limit=args.limit)
    if args.json:
        print(render.to_json(records))
    elif records:
        print(render.executions_table(records))
    else:
        print("no executions")
    return EXIT_OK


async def _show(executor: cloacina.UnifiedExecutor, args: argparse.Namespace) -> int:
    record = await _get(executor, args.execution_id)
    if args.json:
        print(render.to_json(record))
    else:
        print(render.execution_header(record))
        print()
        print(render.tasks_table(record["task_results"]))
        children = render.children_table(record["task_results"])
        if children:
            print()
            print(children)
        if any(t.get("map") is not None for t in record["task_results"]):
            print()
            print(f"a mapped task's instances: cloacina executions instances {record['execution_id']} TASK")
    return EXIT_OK


async def _instances(executor: cloacina.UnifiedExecutor, args: argparse.Namespace) -> int:
    record = await _get(executor, args.execution_id)
    tasks = record["task_results"]
    task = next((t for t in tasks if t["task_id"] == args.task_id), None)
    if task is None:
        raise CliError(f"execution {args.execution_id} has no task {args.task_id!r}; its tasks: "
                       f"{', '.join(str(t['task_id']) for t in tasks)}")
    counts = task.get("map")
    if counts is None:
        raise CliError(f"task {args.task_id!r} is not a mapped task (it has no map_over), so it has no instances")
    page_size = {} if args.limit is None else {"limit": args.limit}  # else the engine's default
    page = await executor.list_task_instances(args.execution_id, args.task_id, offset=args.offset, **page_size)
    if args.json:
        print(render.to_json(page))
        return EXIT_OK
    print(render.printable(f"task {task['task_id']} {task['status']} {render.map_progress(counts)}"))
    if task.get("error"):
        print("error: " + render.first_line(task["error"], 200))
    print()
    if page:
        print(render.instances_table(page))
        print()
    print(render.instances_page_note(args.offset, len(page), int(counts.get("count") or 0)))
    return EXIT_OK


async def _cancel(executor: cloacina.UnifiedExecutor, args: argparse.Namespace) -> int:
    cancelled = await executor.cancel(args.execution_id)
    record = await _get(executor, args.execution_id)
    if not cancelled and record["status"] != "Cancelled":
        raise CliError(f"execution {args.execution_id} has already ended {record['status']}; nothing to cancel")
    if args.json:
        print(render.to_json(record))
    elif cancelled:
        print(f"execution {args.execution_id} cancelled")
    else:
        print(f"execution {args.execution_id} was already cancelled")
    return EXIT_OK


async def _resume(executor: cloacina.UnifiedExecutor, args: argparse.Namespace) -> int:
    execution_id = await executor.resume(args.execution_id)
    record = await _get(executor, execution_id)
    if args.json:
        print(render.to_json(record))
    else:
        print(f"execution {execution_id} resumed ({record['status']}); a worker of the database runs it")
    return EXIT_OK


async def _wait(executor: cloacina.UnifiedExecutor, args: argparse.Namespace) -> int:
    try:
        record: Mapping[str, Any] = await executor.wait(args.execution_id, timeout=args.timeout)
    except TimeoutError:
        status = (await _get(executor, args.execution_id))["status"]
        raise CliError(f"execution {args.execution_id} is still {status} after {args.timeout:g}s "
                       f"(it goes on)", EXIT_NOT_COMPLETED) from None
    print(render.to_json(record) if args.json else render.execution_summary(record))
    return EXIT_OK if record["status"] == "Completed" else EXIT_NOT_COMPLETED


async def _get(executor: cloacina.UnifiedExecutor, execution_id: str) -> Mapping[str, Any]:
    record = await executor.get_execution(execution_id)
    if record is None:
        raise CliError(f"no execution with id {execution_id} in this database")
    return record

"""``cloacina events send KEY [--payload JSON]``: send an event to the tasks waiting for it
(``wait_for_event``), in any process on the database.

The command only writes the event: its executor is submit-only (``worker=False``); the workers
of the database run what the completed waits unblock.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cloacina.cli import render
from cloacina.cli.common import EXIT_OK, CliError, database_options, submit_only_command


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "events", help="send events to waiting tasks",
        description="Events complete the tasks made by wait_for_event(key=...) that wait for their key, "
                    "in every process on the database.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = database_options()

    sending = actions.add_parser(
        "send", parents=[common], help="send an event and print how many waiting tasks it completed",
        description="Send the event KEY: every task waiting for it completes, its output the payload. "
                    "A wait that starts later still sees the event if its execution was submitted "
                    "before the event was sent; events are kept 7 days.")
    sending.add_argument("key", metavar="KEY", help="the event's key, e.g. approve:42")
    sending.add_argument("--payload", metavar="JSON", default=None,
                         help="the payload, any JSON value (default null)")
    sending.set_defaults(handler=_send_command)


def parse_payload(text: Any) -> Any:
    """``--payload``'s JSON (None when not given); a CliError (exit 2) saying where it is wrong."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--payload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _send_command(args: argparse.Namespace) -> int:
    payload = parse_payload(args.payload)  # before the database is opened: a typo costs nothing

    async def send(executor: Any, args: argparse.Namespace) -> int:
        completed: int = await executor.send_event(args.key, payload)
        if args.json:
            print(render.to_json({"key": args.key, "payload": payload, "completed": completed}))
        else:
            tasks = "task" if completed == 1 else "tasks"
            print(render.printable(f"event {args.key} sent: {completed} waiting {tasks} completed"))
        return EXIT_OK

    return submit_only_command(send)(args)

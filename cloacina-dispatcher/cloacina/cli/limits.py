"""``cloacina limits ...``: list, set and delete the named limits every worker of the database
shares (concurrency and rate caps on the tasks that hold their keys).

These commands only read and change records: their executor is submit-only (``worker=False``).
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

from cloacina.cli import render
from cloacina.cli.common import EXIT_OK, database_options, submit_only_command


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "limits", help="list, set or delete named limits",
        description="Named limits are shared by every worker of the database: at most --concurrency "
                    "attempts holding a key run at once, at most --rate start in any --per seconds. A "
                    "name ending in '*' is the default of every key with that prefix.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = database_options()

    listing = actions.add_parser("list", parents=[common], help="every limit, by name",
                                 description="List every limit, by name, and the keys in use under a '*' default, "
                                             "with the attempts holding each key now and the tasks waiting for it.")
    listing.set_defaults(handler=submit_only_command(_list))

    setting = actions.add_parser("set", parents=[common], help="create or change a limit",
                                 description="Create or change a limit; waiting tasks are tried again at once.")
    setting.add_argument("name", metavar="NAME")
    setting.add_argument("--concurrency", type=int, metavar="N", help="most attempts holding it at once")
    setting.add_argument("--rate", type=int, metavar="N", help="most attempts starting in any --per seconds")
    setting.add_argument("--per", type=float, default=1.0, metavar="SECONDS",
                         help="the rate's window in seconds (default 1)")
    setting.set_defaults(handler=submit_only_command(_set))

    deleting = actions.add_parser("delete", parents=[common], help="delete a limit",
                                  description="Delete a limit; its keys are unlimited from then on (or "
                                              "governed by a '*' default).")
    deleting.add_argument("name", metavar="NAME")
    deleting.set_defaults(handler=submit_only_command(_delete))


def _cell(value: Optional[Any]) -> str:
    return "-" if value is None else str(value)


async def _list(executor: Any, args: argparse.Namespace) -> int:
    limits = await executor.list_limits()
    if args.json:
        print(render.to_json(limits))
    elif limits:
        rows = [[limit["name"], _cell(limit["concurrency"]),
                 "-" if limit["rate"] is None else f"{limit['rate']} per {limit['per']:g} s",
                 _cell(limit["running"]), _cell(limit["waiting"])] for limit in limits]
        print(render.table(["NAME", "CONCURRENCY", "RATE", "RUNNING", "WAITING"], rows))
    else:
        print("no limits")
    return EXIT_OK


async def _set(executor: Any, args: argparse.Namespace) -> int:
    await executor.set_limit(args.name, concurrency=args.concurrency, rate=args.rate, per=args.per)
    if args.json:
        print(render.to_json({"name": args.name, "concurrency": args.concurrency, "rate": args.rate,
                              "per": args.per}))
    else:
        print(f"limit {args.name} set")
    return EXIT_OK


async def _delete(executor: Any, args: argparse.Namespace) -> int:
    await executor.delete_limit(args.name)
    if not args.json:
        print(f"limit {args.name} deleted")
    return EXIT_OK

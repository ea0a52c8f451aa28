"""Text the command line prints: durations, times, tables, task lines, the live progress line and
the progress of a mapped task's instances.

Every function here is pure (records in, text out), so the output formats are tested without a
terminal or a database. Records are the dicts the Python API returns (``get_execution`` etc.).

Stored text (errors, reasons, names) may hold terminal control sequences: every text format
passes through :func:`printable`, which writes control characters as visible escapes. JSON
output needs nothing: ``json.dumps`` escapes them.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional, Sequence

import cloacina
from cloacina._records import parse_timestamp

# Statuses after which an execution or a task changes no more (until a resume).

# ANSI: carriage return then "erase the whole line", so the progress line redraws in place.
CLEAR_LINE = "\r\x1b[2K"

BAR_WIDTH = 20
MAP_BAR_WIDTH = 10
ERROR_WIDTH = 60
REASON_WIDTH = 200  # a Waiting task's reason, which ends with what it waits for

# Characters a terminal acts on rather than shows: C0 (ESC among them), DEL and C1.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The same but newline and tab, which multi-line text keeps.
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str, *, keep_lines: bool = False) -> str:
    """``text`` with each control character written as a visible escape (``\\x1b``, ``\\x9b``),
    so stored text cannot retitle a terminal, clear it or plant a link; with ``keep_lines``,
    newlines and tabs stay. Already printable text comes back unchanged."""
    pattern = _CONTROL_BUT_LINES if keep_lines else _CONTROL
    return pattern.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def to_json(value: Any) -> str:
    """The JSON printed for ``--json`` and for contexts: indented, keys in the engine's order."""
    return json.dumps(value, indent=2)


def format_time(value: Optional[str]) -> str:
    """A record's time in the local time zone, to the second; ``-`` when there is none."""
    parsed = parse_timestamp(value)
    if parsed is None:
        return "-"
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: Optional[float]) -> str:
    """``0.01s``, ``12.35s``, ``3m07s``, ``2h05m``; ``-`` for an unknown duration."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if round(seconds, 2) < 60:
        return f"{seconds:.2f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def duration_of(record: Mapping[str, Any]) -> Optional[float]:
    """Seconds from ``started_at`` to ``completed_at`` of an execution or task; None if unfinished."""
    started, completed = parse_timestamp(record.get("started_at")), parse_timestamp(record.get("completed_at"))
    if started is None or completed is None:
        return None
    return (completed - started).total_seconds()


def first_line(text: Optional[str], width: int = ERROR_WIDTH) -> str:
    """The first non-empty line of ``text``, :func:`printable`, cut to ``width`` characters (ending
    ``...`` if cut)."""
    if not text:
        return ""
    line = printable(next((part.strip() for part in text.splitlines() if part.strip()), ""))
    return line if len(line) <= width else line[: max(width - 3, 0)] + "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns left-aligned, two spaces apart; the last column is not padded. Cells are
    :func:`printable`."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def executions_table(records: Sequence[Mapping[str, Any]]) -> str:
    """``executions list``: one row per execution."""
    rows = [
        [
            str(r["execution_id"]),
            str(r["workflow_name"]),
            str(r["status"]),
            format_time(r.get("started_at")),
            format_duration(duration_of(r)),
        ]
        for r in records
    ]
    return table(["ID", "WORKFLOW", "STATUS", "STARTED", "DURATION"], rows)


def tasks_table(tasks: Sequence[Mapping[str, Any]]) -> str:
    """``executions show``: one row per task, the error (or the reason: why it was skipped or
    cancelled, or why it is Waiting) on one short line; a Waiting task's reason is shown whole
    (up to :data:`REASON_WIDTH`): it says what the task waits for (an instant, an event's key,
    a child execution's id).
    When a task is mapped (``map_over``), an INSTANCES column shows each mapped task's
    :func:`map_progress` (``-`` for the ordinary tasks)."""
    mapped = any(t.get("map") is not None for t in tasks)
    rows = []
    for t in tasks:
        row = [
            str(t["task_id"]),
            str(t["status"]),
            str(t.get("attempts", 0)),
            format_duration(duration_of(t)),
        ]
        if mapped:
            row.append(map_progress(t.get("map")) or "-")
        width = REASON_WIDTH if t.get("status") == "Waiting" and not t.get("error") else ERROR_WIDTH
        row.append(first_line(t.get("error") or t.get("reason"), width))
        rows.append(row)
    headers = ["TASK", "STATUS", "ATTEMPTS", "DURATION", *(["INSTANCES"] if mapped else []), "ERROR"]
    return table(headers, rows)


def children_table(tasks: Sequence[Mapping[str, Any]]) -> str:
    """``executions show``: each ``subworkflow`` task that has submitted its child execution,
    with the child's id (``TASK``, ``CHILD EXECUTION``); ``""`` when no task has a child. The
    children of a mapped sub-workflow task are not listed (its instances do not record them):
    each child names its parent instead."""
    rows = [[str(t["task_id"]), str(t["child_execution_id"])] for t in tasks if t.get("child_execution_id")]
    if not rows:
        return ""
    return table(["TASK", "CHILD EXECUTION"], rows)


def map_counts_text(counts: Optional[Mapping[str, Any]]) -> str:
    """A mapped task's instance counts in words: ``150/300 completed, 2 running, 1 failed``
    (the statuses but Pending and Completed only when some instance has them); ``no instances``
    before its list is expanded, or for an empty list; ``""`` for an ordinary task (None)."""
    if counts is None:
        return ""
    total = int(counts.get("count") or 0)
    if total == 0:
        return "no instances"
    text = f"{int(counts.get('completed') or 0)}/{total} completed"
    for status in cloacina.TASK_STATUSES:
        key = status.lower()
        if key in ("pending", "completed"):  # the rest of the count; said above
            continue
        number = int(counts.get(key) or 0)
        if number:
            text += f", {number} {key}"
    return text


def map_ended(counts: Mapping[str, Any]) -> int:
    """How many of a mapped task's instances have ended (a final status)."""
    return sum(int(counts.get(status.lower()) or 0) for status in cloacina.FINAL_TASK_STATUSES)


def map_progress(counts: Optional[Mapping[str, Any]], *, width: int = MAP_BAR_WIDTH) -> str:
    """A mapped task's instances as a bar of ``width`` filled by the instances that ended, then
    :func:`map_counts_text`: ``[#####-----] 150/300 completed, 2 failed``; ``""`` for an
    ordinary task (``counts`` None)."""
    if counts is None:
        return ""
    total = int(counts.get("count") or 0)
    if total == 0:
        return map_counts_text(counts)
    filled = min(width, width * map_ended(counts) // total)
    return f"[{'#' * filled}{'-' * (width - filled)}] {map_counts_text(counts)}"


def instances_table(instances: Sequence[Mapping[str, Any]]) -> str:
    """``executions instances``: one row per instance of a mapped task, by ``map_index``."""
    rows = [
        [
            str(i["map_index"]),
            str(i["status"]),
            str(i.get("attempts", 0)),
            format_duration(duration_of(i)),
            first_line(i.get("error")),
        ]
        for i in instances
    ]
    return table(["INDEX", "STATUS", "ATTEMPTS", "DURATION", "ERROR"], rows)


def instances_page_note(offset: int, shown: int, total: int) -> str:
    """Under a page of instances: which indices it held and the option giving the next page."""
    if total == 0:
        return "the task has no instances"
    if shown == 0:
        return f"no instances from index {offset}: the task has {total}"
    text = f"instances {offset} to {offset + shown - 1} of {total}"
    if offset + shown < total:
        text += f"; the next page: --offset {offset + shown}"
    return text


def execution_header(record: Mapping[str, Any]) -> str:
    """``executions show``: the execution's fields, one per line; a child execution (of a
    ``subworkflow`` task) names its parent and the task there: ``parent     <id> (task <task
    id>)``, ``<task id>[i]`` for an instance of a mapped one."""
    fields = [
        ("execution", str(record["execution_id"])),
        ("workflow", f"{record['workflow_name']} (version {record.get('workflow_version', '?')})"),
        ("status", str(record["status"])),
    ]
    if record.get("parent_execution_id"):
        fields.append(("parent", f"{record['parent_execution_id']} (task {record.get('parent_task_id') or '?'})"))
    fields += [
        ("started", format_time(record.get("started_at"))),
        ("completed", format_time(record.get("completed_at"))),
        ("duration", format_duration(duration_of(record))),
    ]
    if record.get("error"):
        fields.append(("error", _indented(str(record["error"]), 11)))
    if record.get("reason"):
        fields.append(("reason", str(record["reason"])))
    fields.append(("input", json.dumps(record.get("input_context"))))
    if record.get("final_context") is not None:
        fields.append(("final", json.dumps(record.get("final_context"))))
    return printable("\n".join(f"{name:<10} {value}" for name, value in fields), keep_lines=True)


def execution_summary(record: Mapping[str, Any]) -> str:
    """What ``run`` and ``executions wait`` print at the end: status, error, final context."""
    lines = [f"execution {record['execution_id']} {record['status']} in {format_duration(duration_of(record))}"]
    if record.get("error"):
        lines.append("error: " + _indented(str(record["error"]), 7))
    if record.get("reason"):
        lines.append(f"reason: {record['reason']}")
    lines.append("final context: " + json.dumps(record.get("final_context")))
    return printable("\n".join(lines), keep_lines=True)


def task_line(task: Mapping[str, Any]) -> str:
    """One task that reached a final status: ``task extract Completed 0.01s``, then the attempt
    count when it took more than one, a mapped task's instance counts (``(300/300 completed)``),
    and the error or reason. A Waiting task has no duration yet: ``task nap Waiting (sleeping
    until 2026-12-05T18:00:00.000Z)``."""
    parts = [printable(f"task {task['task_id']} {task['status']}")]
    duration = duration_of(task)
    if duration is not None:
        parts.append(format_duration(duration))
    attempts = task.get("attempts") or 0
    if attempts > 1:
        parts.append(f"({attempts} attempts)")
    if task.get("map") is not None:
        parts.append(f"({map_counts_text(task['map'])})")
    if task.get("error"):
        parts.append(first_line(task["error"], 200))
    elif task.get("reason"):
        parts.append(f"({first_line(task['reason'], 200)})")
    return " ".join(parts)


def progress_line(tasks: Sequence[Mapping[str, Any]], *, elapsed: float, width: int = 80) -> str:
    """The live line ``run`` draws on a terminal, at most ``width`` characters:

    ``[##########----------] 1/2 done  0.42s  running: load, process 150/300  waiting: approve``

    A running mapped task shows how many of its instances have ended; Waiting tasks (sleeping,
    waiting for an event, snoozed, or waiting out a retry's delay) are named after the running.
    """
    total = len(tasks)
    done = sum(1 for t in tasks if t.get("status") in cloacina.FINAL_TASK_STATUSES)
    failed = sum(1 for t in tasks if t.get("status") == "Failed")
    running = [_running_name(t) for t in tasks if t.get("status") == "Running"]
    waiting = [printable(str(t["task_id"])) for t in tasks if t.get("status") == "Waiting"]
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    text = f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done}/{total} done"
    if failed:
        text += f", {failed} failed"
    text += f"  {format_duration(elapsed)}"
    if running:
        text += "  running: " + ", ".join(running)
    if waiting:
        text += "  waiting: " + ", ".join(waiting)
    width = max(width, 10)
    return text if len(text) <= width else text[: width - 3] + "..."


def _running_name(task: Mapping[str, Any]) -> str:
    """A running task in the progress line: its id, and ``ended/count`` for a mapped task."""
    name = printable(str(task["task_id"]))
    counts = task.get("map")
    if counts is not None and counts.get("count"):
        name += f" {map_ended(counts)}/{counts['count']}"
    return name


def _indented(text: str, indent: int) -> str:
    """Continuation lines of a multi-line value, aligned under its first line."""
    return ("\n" + " " * indent).join(text.splitlines() or [""])

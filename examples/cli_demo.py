"""The `cloacina` command line, driven from Python: draw, run and inspect the quickstart workflow.

It runs these commands one after another in this directory (where `quickstart.py` is
importable as `quickstart`) and prints each command and its output:

    cloacina graph quickstart:workflow                      # the task graph, as Mermaid
    cloacina --db $DB run quickstart:workflow --context '{"requested_by": "cli_demo"}'
    cloacina --db $DB executions list --workflow quickstart --limit 3
    cloacina --db $DB executions show <id of the run>

`cloacina ...` here is `python -m cloacina ...` with this interpreter (the `cloacina` script that
`pip install cloacina` puts on PATH does the same). `$DB` is the database URL; the command line
also reads it from the CLOACINA_DATABASE_URL environment variable.

    python examples/cli_demo.py                  # uses sqlite:///cli_demo.db (in the working directory)
    python examples/cli_demo.py postgresql://... # any database URL but sqlite://:memory:

Exits 0 when every command succeeded and the run Completed, 1 otherwise. If this installation
has no command line yet (`python -m cloacina --help` fails), it says so and exits 0.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent  # where quickstart.py lives
CLI = [sys.executable, "-m", "cloacina"]
SECONDS = 60  # no command may take longer than this


def absolute_url(url: str) -> Optional[str]:
    """The same database seen from another directory: relative SQLite paths made absolute."""
    if url.startswith("sqlite://:memory:"):
        return None  # private to one process: the commands below could not share it
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url[len("sqlite:///"):]).resolve())
    if "://" not in url:  # a plain file path
        return str(Path(url).resolve())
    return url


def cloacina(*args: str, db: Optional[str] = None, show: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs `python -m cloacina [--db DB] ARGS...` in this directory and prints what it said."""
    command = [*CLI, *(["--db", db] if db else []), *args]
    if show:
        # Show the command as a user types it; the URL may hold a password, so print $DB.
        print("$ cloacina " + ('--db "$DB" ' if db else "") + shlex.join(args))
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # keep __pycache__ out of examples/
    proc = subprocess.run(command, cwd=HERE, env=env, capture_output=True, text=True, timeout=SECONDS)
    if show:
        for line in (proc.stdout + proc.stderr).rstrip().splitlines():
            print(f"    {line}".rstrip())
        print()
    return proc


def main(url: str) -> int:
    db = absolute_url(url)
    if db is None:
        print("cli_demo: needs a database several processes can open, not sqlite://:memory:")
        return 1

    probe = cloacina("--help", show=False)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"cli_demo: skipped: the cloacina command line is not available here ({reason})")
        return 0

    failed = []
    for step in (
        ["graph", "quickstart:workflow"],
        ["run", "quickstart:workflow", "--context", json.dumps({"requested_by": "cli_demo"})],
        ["executions", "list", "--workflow", "quickstart", "--limit", "3"],
    ):
        if cloacina(*step, db=None if step[0] == "graph" else db).returncode != 0:
            failed.append(step[0])

    # --json prints the same dicts the Python API returns: the easy way to script the CLI.
    newest = cloacina("--json", "executions", "list", "--workflow", "quickstart", "--limit", "1",
                      db=db, show=False)
    records = json.loads(newest.stdout) if newest.returncode == 0 else []
    if not records:
        print("cli_demo: no quickstart execution recorded")
        return 1
    execution_id = records[0]["execution_id"]
    if cloacina("executions", "show", execution_id, db=db).returncode != 0:
        failed.append("show")

    print(f"cli_demo: execution {execution_id} {records[0]['status']}"
          + (f"; failed commands: {', '.join(failed)}" if failed else ""))
    return 0 if not failed and records[0]["status"] == "Completed" else 1


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///cli_demo.db"
    try:
        sys.exit(main(target))
    except subprocess.TimeoutExpired as exc:
        print(f"cli_demo: a command took longer than {SECONDS} s: {exc.cmd[3:]}")
        sys.exit(1)

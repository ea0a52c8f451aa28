"""``cloacina limits list | set | delete`` against the test's database."""

from __future__ import annotations

import json

from test_cli import Cli, assert_user_error, cli, describe, env  # noqa: F401 (fixtures)


def test_set_list_and_delete_a_limit(cli: Cli, database_url: str) -> None:
    made = cli("--db", database_url, "limits", "set", "openai", "--concurrency", "8", "--rate", "500",
               "--per", "60")
    assert made.returncode == 0, describe(made)
    assert "limit openai set" in made.stdout
    assert cli("--db", database_url, "limits", "set", "tenant:*", "--concurrency", "2").returncode == 0

    listed = cli("--db", database_url, "limits", "list")
    assert listed.returncode == 0, describe(listed)
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CONCURRENCY", "RATE", "RUNNING", "WAITING"], describe(listed)
    assert lines[1].split() == ["openai", "8", "500", "per", "60", "s", "0", "0"], describe(listed)
    assert lines[2].split() == ["tenant:*", "2", "-", "-", "-"], describe(listed)

    as_json = cli("--db", database_url, "--json", "limits", "list")
    assert json.loads(as_json.stdout) == [
        {"name": "openai", "concurrency": 8, "rate": 500, "per": 60.0, "running": 0, "waiting": 0},
        {"name": "tenant:*", "concurrency": 2, "rate": None, "per": 1.0, "running": None, "waiting": None},
    ]

    gone = cli("--db", database_url, "limits", "delete", "openai")
    assert gone.returncode == 0 and "limit openai deleted" in gone.stdout, describe(gone)
    assert "openai" not in cli("--db", database_url, "limits", "list").stdout


def test_bad_limits_are_user_errors(cli: Cli, database_url: str) -> None:
    assert_user_error(cli("--db", database_url, "limits", "delete", "nothing"), 'no limit named "nothing"')
    assert_user_error(cli("--db", database_url, "limits", "set", "x", "--concurrency", "0"), "concurrency=0")
    assert_user_error(cli("--db", database_url, "limits", "set", "x", "--rate", "5", "--per", "0"), "per=0")

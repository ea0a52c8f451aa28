"""initialize() without a URL, and one task run alone with Workflow.of_task."""

from __future__ import annotations

import asyncio

import pytest

from backend import IS_SQLITE, cl, run_snippet


DEFAULT_URL_CHILD = """
import asyncio, json, os
from backend import cl

@cl.task(task_id="defaults.one")
def one(ctx):
    return {"x": 1}

async def main():
    ex = cl.UnifiedExecutor()
    await ex.initialize()
    result = await ex.execute(cl.Workflow("defaults", tasks=[one]))
    await ex.shutdown()
    print(json.dumps(result["status"]))

asyncio.run(main())
"""


@pytest.mark.skipif(not IS_SQLITE, reason="the cloacina.db default is the SQLite backend's")
def test_no_url_means_cloacina_db_in_the_working_directory(tmp_path, subprocess_env):
    env = {k: v for k, v in subprocess_env.items() if k != "CLOACINA_DATABASE_URL"}
    proc = run_snippet(DEFAULT_URL_CHILD, env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '"Completed"'
    assert (tmp_path / "cloacina.db").is_file()


def test_no_url_reads_cloacina_database_url(tmp_path, subprocess_env, database_url):
    env = dict(subprocess_env, CLOACINA_DATABASE_URL=database_url)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    proc = run_snippet(DEFAULT_URL_CHILD, env, cwd=str(workdir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '"Completed"'
    assert not (workdir / "cloacina.db").exists()


@pytest.mark.skipif(IS_SQLITE, reason="PostgreSQL has no default database")
def test_postgres_without_any_url_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv("CLOACINA_DATABASE_URL", raising=False)

    async def go() -> None:
        await cl.UnifiedExecutor().initialize()

    with pytest.raises(cl.ConfigurationError, match="CLOACINA_DATABASE_URL"):
        asyncio.run(go())


async def test_of_task_runs_one_task_alone_with_its_options(executor, ids):
    attempts = []

    @cl.task(task_id=ids("upstream"))
    def upstream(ctx):
        raise AssertionError("never runs: of_task leaves dependencies out")

    @cl.task(task_id=ids("flaky"), dependencies=[upstream], retries=2, retry_delay=0)
    def flaky(ctx):
        attempts.append(ctx["rows"])
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return {"total": sum(ctx["rows"])}

    alone = cl.Workflow.of_task(flaky)
    assert alone.task_ids == [ids("flaky")] and alone.name == f"{ids('flaky')} (alone)"
    result = await executor.execute(alone, {"rows": [1, 2, 3]})
    assert result["status"] == "Completed", result
    assert result["final_context"]["total"] == 6
    assert [h["status"] for h in result["task_results"][0]["history"]] == ["Failed", "Failed", "Completed"]
    assert cl.Workflow.of_task(ids("flaky"), name="custom").name == "custom"
    with pytest.raises(cl.WorkflowError, match="unknown task"):
        cl.Workflow.of_task(ids("never-registered"))


# --- the facts the native module exports for every consumer -------------------------------------

def test_status_names_and_defaults_come_from_the_native_module():
    import inspect

    import cloacina

    assert cl.EXECUTION_STATUSES == ("Pending", "Running", "Completed", "Failed", "Cancelled")
    assert cl.FINAL_EXECUTION_STATUSES == ("Completed", "Failed", "Cancelled")
    assert cl.TASK_STATUSES == ("Pending", "Running", "Completed", "Failed", "Skipped", "Cancelled", "Lost",
                                "Waiting", "Snoozed")
    assert cl.FINAL_TASK_STATUSES == ("Completed", "Failed", "Skipped", "Cancelled")
    assert cl.UnifiedExecutor().max_concurrency == cl.DEFAULT_MAX_CONCURRENCY == 8
    assert cl.DEFAULT_LEASE_TIMEOUT == 30.0
    assert cl.DEFAULT_LIST_LIMIT == 50
    # The pure-Python layer reads them from there instead of repeating them.
    limit = inspect.signature(cloacina.SyncExecutor.list_executions).parameters["limit"].default
    assert limit == cl.DEFAULT_LIST_LIMIT
    concurrency = inspect.signature(cloacina.SyncExecutor.__init__).parameters["max_concurrency"].default
    assert concurrency == cl.DEFAULT_MAX_CONCURRENCY

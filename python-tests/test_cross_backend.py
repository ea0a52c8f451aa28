"""Both backend wheels in one process: ``cloacina_sqlite`` and ``cloacina_postgres`` are separate
engines with separate task registries, and both run workflows side by side on one event loop.

Runs in a child interpreter (the suite's own process has one backend imported as ``cl``) in the
postgres venv, which holds both wheels.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def both_wheels() -> None:
    missing = [m for m in ("cloacina_sqlite", "cloacina_postgres") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs both backend wheels installed; missing {missing}")

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys

    import cloacina_postgres as pg
    import cloacina_sqlite as lite

    sqlite_url, postgres_url = sys.argv[1], sys.argv[2]
    out = {"backends": [lite.backend, pg.backend],
           "distinct_errors": lite.WorkflowError is not pg.WorkflowError}

    @lite.task("only_in_sqlite")
    def only_in_sqlite(ctx):
        return {"where": "sqlite"}

    @pg.task("only_in_postgres")
    def only_in_postgres(ctx):
        return {"where": "postgres"}

    def invisible(module, task_id):
        try:
            module.Workflow("probe", [task_id])
        except module.WorkflowError as exc:
            return task_id in str(exc)
        return False

    out["sqlite_task_invisible_to_postgres"] = invisible(pg, "only_in_sqlite")
    out["postgres_task_invisible_to_sqlite"] = invisible(lite, "only_in_postgres")

    # The same task id in both registries: each engine runs its own function.
    @lite.task("shared_id")
    async def shared_lite(ctx):
        await asyncio.sleep(0.05)
        return {"engine": "sqlite", "n": ctx["n"] * 2}

    @pg.task("shared_id")
    async def shared_pg(ctx):
        await asyncio.sleep(0.05)
        return {"engine": "postgres", "n": ctx["n"] * 3}

    @lite.task("after_lite", dependencies=["shared_id"])
    def after_lite(ctx):
        return {"done": ctx["engine"]}

    @pg.task("after_pg", dependencies=["shared_id"])
    def after_pg(ctx):
        return {"done": ctx["engine"]}

    async def main():
        lite_ex, pg_ex = lite.UnifiedExecutor(), pg.UnifiedExecutor()
        await asyncio.gather(lite_ex.initialize(sqlite_url), pg_ex.initialize(postgres_url))
        try:
            lite_wf = lite.Workflow("side-by-side", [after_lite])
            pg_wf = pg.Workflow("side-by-side", [after_pg])
            results = await asyncio.gather(*[lite_ex.execute(lite_wf, {"n": i}) for i in range(3)],
                                           *[pg_ex.execute(pg_wf, {"n": i}) for i in range(3)])
            lite_results, pg_results = results[:3], results[3:]
            out["sqlite"] = [[r["status"], r["final_context"]] for r in lite_results]
            out["postgres"] = [[r["status"], r["final_context"]] for r in pg_results]
            out["sqlite_listed"] = len(await lite_ex.list_executions())
            out["postgres_listed"] = len(await pg_ex.list_executions())
            out["cross_lookup"] = [
                await lite_ex.get_execution(pg_results[0]["execution_id"]),
                await pg_ex.get_execution(lite_results[0]["execution_id"]),
            ]
        finally:
            await asyncio.gather(lite_ex.shutdown(), pg_ex.shutdown())

    asyncio.run(main())
    print(json.dumps(out))
    """
)


def test_both_backends_in_one_process(both_wheels, tmp_path, database_url, subprocess_env):
    sqlite_url = f"sqlite:///{tmp_path / 'side.db'}"
    proc = subprocess.run([sys.executable, "-c", CHILD, sqlite_url, database_url], env=subprocess_env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backends"] == ["sqlite", "postgres"]
    assert out["distinct_errors"] is True
    assert out["sqlite_task_invisible_to_postgres"] is True
    assert out["postgres_task_invisible_to_sqlite"] is True
    assert out["sqlite"] == [["Completed", {"n": i * 2, "engine": "sqlite", "done": "sqlite"}] for i in range(3)]
    assert out["postgres"] == [["Completed", {"n": i * 3, "engine": "postgres", "done": "postgres"}]
                               for i in range(3)]
    assert out["sqlite_listed"] == 3 and out["postgres_listed"] == 3
    assert out["cross_lookup"] == [None, None]
    assert (tmp_path / "side.db").is_file()

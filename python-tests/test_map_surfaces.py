"""A mapped task (``map_over=``) on the command line and the dashboard: one row or node with its
instance counts and a progress bar, and its instances paged through, never all read at once.

The map runs for real on the test's database, in a working :class:`cloacina.SyncExecutor`
(``sync_executor`` fixture); the command line runs in this process (``cli`` fixture of
test_cli.py), the dashboard's API on a free loopback port (``serve`` fixture of ui_server.py).
Plain ``def`` tests: no event loop runs in the test's thread (SyncExecutor needs that).

The mapped task's id holds a ``/``, so the dashboard's route must take it percent-encoded. Its
instances wait for a gate file when asked (``free``), to look at a map while it runs.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional
from urllib.parse import quote

import pytest

import cloacina
from backend import BACKEND
from test_cli import Cli, assert_user_error, cli, describe, env, render  # noqa: F401 (fixtures)
from test_ui_api import wait_until
from ui_server import DEADLINE, Running, serve  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(
    cloacina.backend != BACKEND,
    reason=f"the cloacina dispatcher binds {cloacina.backend}, the suite tests {BACKEND} (set CLOACINA_BACKEND)",
)

COUNT_KEYS = {"count", "pending", "running", "completed", "failed", "skipped", "cancelled"}
INSTANCE_KEYS = {"map_index", "status", "attempts", "error", "started_at", "completed_at", "child_execution_id"}


class MapFlow(NamedTuple):
    workflow: cloacina.Workflow
    listing: str   # task ids
    node: str
    combine: str
    gate: Path     # instances at index >= context["free"] wait until this file exists


@pytest.fixture
def mapped(ids: Any, tmp_path: Path) -> Iterator[MapFlow]:
    """``listing`` -> ``each/file`` mapped over ``files`` (collected as ``sizes``; the indices in
    ``context["bad"]`` raise) -> ``combine`` (``all_done``: sums the sizes)."""
    gate = tmp_path / "gate"

    @cloacina.task(ids("listing"))
    def listing(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"files": [f"f{i}" for i in range(ctx["n"])]}

    @cloacina.task(ids("each/file"), dependencies=[listing], map_over="files", map_item="file", collect_as="sizes")
    async def each_file(ctx: Dict[str, Any]) -> int:
        index = cloacina.current_task()["map_index"]
        if index in ctx.get("bad", ()):
            raise ValueError(f"boom at {index}")
        while index >= ctx.get("free", index + 1) and not gate.exists():
            await asyncio.sleep(0.02)
        return len(ctx["file"])

    @cloacina.task(ids("combine"), dependencies=[each_file], trigger_rule="all_done")
    def combine(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"total": sum(size for size in ctx["sizes"] if size is not None)}

    try:
        yield MapFlow(cloacina.Workflow(ids.wf("map"), [combine]), ids("listing"), ids("each/file"),
                      ids("combine"), gate)
    finally:
        gate.touch()  # no instance is left waiting when the executor shuts down


def task_of(record: Dict[str, Any], task_id: str) -> Dict[str, Any]:
    return next(t for t in record["task_results"] if t["task_id"] == task_id)


def counts(**given: int) -> Dict[str, int]:
    """A MapCounts dict: ``count`` and the given statuses, the others 0."""
    return {key: given.get(key, 0) for key in COUNT_KEYS}


def table_rows(text: str, first_header: str) -> Dict[str, str]:
    """The rows of the table whose header starts with ``first_header``, by their first cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header + " "))
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows[line.split()[0]] = line
    return rows


def start_gated(sync_executor: cloacina.SyncExecutor, mapped: MapFlow) -> str:
    """Submits a map of 6 whose instances 0 and 1 complete and 2 to 5 wait for the gate;
    returns the execution id once the record shows exactly that."""
    execution_id = sync_executor.submit(mapped.workflow, {"n": 6, "free": 2})

    def waiting() -> bool:
        record = sync_executor.get_execution(execution_id)
        return record is not None and task_of(record, mapped.node)["map"] == counts(count=6, completed=2, running=4)

    wait_until(waiting, "instances 0 and 1 Completed, 2 to 5 Running")
    return execution_id


# --- the command line --------------------------------------------------------------------------

def test_show_prints_a_mapped_task_as_one_row_with_its_bar(cli: Cli, database_url: str,
                                                           sync_executor: cloacina.SyncExecutor,
                                                           mapped: MapFlow) -> None:
    result = sync_executor.execute(mapped.workflow, {"n": 12, "bad": [3, 7]}, timeout=DEADLINE)
    assert result["status"] == "Failed", result
    assert [t["task_id"] for t in result["task_results"]] == [mapped.listing, mapped.node, mapped.combine], \
        "instances never appear among the task results"
    assert result["final_context"]["total"] == sum(len(f"f{i}") for i in range(12) if i not in (3, 7))

    show = cli("--db", database_url, "executions", "show", result["execution_id"])
    assert show.returncode == 0, describe(show)
    header = next(line for line in show.stdout.splitlines() if line.startswith("TASK "))
    assert header.split() == ["TASK", "STATUS", "ATTEMPTS", "DURATION", "INSTANCES", "ERROR"], describe(show)
    rows = table_rows(show.stdout, "TASK")
    assert list(rows) == [mapped.listing, mapped.node, mapped.combine], describe(show)
    assert rows[mapped.node].split()[1:3] == ["Failed", "0"], describe(show)
    assert "  [##########] 10/12 completed, 2 failed  2 of 12 map instances failed (indices 3, 7)" \
        in rows[mapped.node], describe(show)
    listing = rows[mapped.listing].split()
    assert listing[1:3] == ["Completed", "1"] and listing[4:] == ["-"], describe(show)
    assert f"a mapped task's instances: cloacina executions instances {result['execution_id']} TASK" \
        in show.stdout, describe(show)

    shown = cli("--db", database_url, "--json", "executions", "show", result["execution_id"])
    assert shown.returncode == 0, describe(shown)
    record = json.loads(shown.stdout)
    assert task_of(record, mapped.node)["map"] == counts(count=12, completed=10, failed=2)
    assert task_of(record, mapped.listing)["map"] is None and task_of(record, mapped.combine)["map"] is None


def test_an_execution_without_a_mapped_task_has_no_instances_column(cli: Cli, database_url: str,
                                                                    sync_executor: cloacina.SyncExecutor,
                                                                    ids: Any) -> None:
    @cloacina.task(ids("plain"))
    def plain(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"plain": True}

    result = sync_executor.execute(cloacina.Workflow(ids.wf("plain"), [plain]), timeout=DEADLINE)
    show = cli("--db", database_url, "executions", "show", result["execution_id"])
    assert show.returncode == 0, describe(show)
    assert "INSTANCES" not in show.stdout and "mapped task" not in show.stdout, describe(show)


def test_show_and_instances_while_the_map_runs(cli: Cli, database_url: str, sync_executor: cloacina.SyncExecutor,
                                               mapped: MapFlow) -> None:
    execution_id = start_gated(sync_executor, mapped)
    show = cli("--db", database_url, "executions", "show", execution_id)
    assert show.returncode == 0, describe(show)
    row = table_rows(show.stdout, "TASK")[mapped.node]
    assert row.split()[1] == "Running" and "[###-------] 2/6 completed, 4 running" in row, describe(show)

    listed = cli("--db", database_url, "executions", "instances", execution_id, mapped.node)
    assert listed.returncode == 0, describe(listed)
    assert listed.stdout.startswith(f"task {mapped.node} Running [###-------] 2/6 completed, 4 running\n")
    rows = table_rows(listed.stdout, "INDEX")
    assert {index: row.split()[1] for index, row in rows.items()} == {
        "0": "Completed", "1": "Completed", "2": "Running", "3": "Running", "4": "Running", "5": "Running"}
    assert listed.stdout.rstrip().endswith("instances 0 to 5 of 6"), describe(listed)

    mapped.gate.touch()
    result = sync_executor.wait(execution_id, timeout=DEADLINE)
    assert result["status"] == "Completed" and result["final_context"]["sizes"] == [2] * 6, result
    done = cli("--db", database_url, "executions", "show", execution_id)
    assert "[##########] 6/6 completed" in table_rows(done.stdout, "TASK")[mapped.node], describe(done)


def test_instances_pages_through_a_mapped_task(cli: Cli, database_url: str, sync_executor: cloacina.SyncExecutor,
                                               mapped: MapFlow) -> None:
    result = sync_executor.execute(mapped.workflow, {"n": 250}, timeout=DEADLINE)
    assert result["status"] == "Completed", result
    execution_id = result["execution_id"]

    first = cli("--db", database_url, "executions", "instances", execution_id, mapped.node)
    assert first.returncode == 0, describe(first)
    lines = first.stdout.splitlines()
    assert lines[0] == f"task {mapped.node} Completed [##########] 250/250 completed", describe(first)
    assert list(table_rows(first.stdout, "INDEX")) == [str(i) for i in range(100)], "the engine's default page: 100"
    assert lines[-1] == "instances 0 to 99 of 250; the next page: --offset 100", describe(first)

    last = cli("--db", database_url, "executions", "instances", execution_id, mapped.node,
               "--offset", "200", "--limit", "100")
    assert last.returncode == 0, describe(last)
    rows = table_rows(last.stdout, "INDEX")
    assert list(rows) == [str(i) for i in range(200, 250)], describe(last)
    assert all(row.split()[1:3] == ["Completed", "1"] for row in rows.values()), describe(last)
    assert last.stdout.splitlines()[-1] == "instances 200 to 249 of 250", describe(last)

    page = cli("--db", database_url, "--json", "executions", "instances", execution_id, mapped.node,
               "--offset", "5", "--limit", "3")
    assert page.returncode == 0, describe(page)
    instances = json.loads(page.stdout)
    assert instances == json.loads(json.dumps(
        sync_executor.list_task_instances(execution_id, mapped.node, offset=5, limit=3)))
    assert [i["map_index"] for i in instances] == [5, 6, 7] and all(set(i) == INSTANCE_KEYS for i in instances)

    beyond = cli("--db", database_url, "executions", "instances", execution_id, mapped.node, "--offset", "300")
    assert beyond.returncode == 0, describe(beyond)
    assert beyond.stdout.splitlines()[-1] == "no instances from index 300: the task has 250", describe(beyond)


def test_instances_of_a_failed_map_show_each_error(cli: Cli, database_url: str,
                                                    sync_executor: cloacina.SyncExecutor, mapped: MapFlow) -> None:
    result = sync_executor.execute(mapped.workflow, {"n": 5, "bad": [1, 4]}, timeout=DEADLINE)
    listed = cli("--db", database_url, "executions", "instances", result["execution_id"], mapped.node)
    assert listed.returncode == 0, describe(listed)
    assert listed.stdout.splitlines()[1] == \
        "error: 2 of 5 map instances failed (indices 1, 4); first, index 1: ValueError: boom at 1", describe(listed)
    rows = table_rows(listed.stdout, "INDEX")
    assert rows["1"].split()[1] == "Failed" and rows["1"].endswith("ValueError: boom at 1"), describe(listed)
    assert rows["4"].endswith("ValueError: boom at 4"), describe(listed)
    assert rows["0"].split()[1:3] == ["Completed", "1"] and len(rows["0"].split()) == 4, describe(listed)


def test_an_empty_list_has_no_instances(cli: Cli, database_url: str, sync_executor: cloacina.SyncExecutor,
                                        mapped: MapFlow) -> None:
    result = sync_executor.execute(mapped.workflow, {"n": 0}, timeout=DEADLINE)
    assert result["status"] == "Completed" and result["final_context"]["sizes"] == [], result
    show = cli("--db", database_url, "executions", "show", result["execution_id"])
    assert "  no instances" in table_rows(show.stdout, "TASK")[mapped.node], describe(show)
    listed = cli("--db", database_url, "executions", "instances", result["execution_id"], mapped.node)
    assert listed.returncode == 0 and listed.stdout.splitlines()[-1] == "the task has no instances", describe(listed)
    as_json = cli("--db", database_url, "--json", "executions", "instances", result["execution_id"], mapped.node)
    assert json.loads(as_json.stdout) == [], describe(as_json)


def test_instances_refuses_what_has_no_instances(cli: Cli, database_url: str,
                                                 sync_executor: cloacina.SyncExecutor, mapped: MapFlow) -> None:
    execution_id = sync_executor.execute(mapped.workflow, {"n": 3}, timeout=DEADLINE)["execution_id"]

    def instances(*args: str) -> Any:
        return cli("--db", database_url, "executions", "instances", *args)

    assert_user_error(instances(execution_id, mapped.listing), f"task '{mapped.listing}' is not a mapped task")
    assert_user_error(instances(execution_id, "no.such.task"), "has no task 'no.such.task'", mapped.node)
    assert_user_error(instances("00000000-0000-0000-0000-000000000000", mapped.node), "no execution with id")
    assert_user_error(instances(execution_id, mapped.node, "--limit", "0"), "limit=0 is out of range")
    assert_user_error(instances(execution_id, mapped.node, "--limit", "10001"), "limit=10001 is out of range")
    assert_user_error(instances(execution_id, mapped.node, "--offset", "-1"), "offset=-1 is out of range")
    helped = cli("executions", "instances", "--help")
    assert helped.returncode == 0 and "usage: cloacina executions instances" in helped.stdout, describe(helped)


# --- what the command line prints (no process, no database) ------------------------------------

def test_map_rendering(render: Any) -> None:
    running = counts(count=300, completed=150, running=8, failed=2)
    assert render.map_progress(running) == "[#####-----] 150/300 completed, 8 running, 2 failed"
    assert render.map_progress(counts(count=3, completed=2, skipped=1)) == "[##########] 2/3 completed, 1 skipped"
    assert render.map_progress(counts(count=7, pending=7)) == "[----------] 0/7 completed"
    assert render.map_progress(counts(count=0)) == "no instances"
    assert render.map_progress(None) == ""
    assert render.map_progress(running, width=20) == "[##########----------] 150/300 completed, 8 running, 2 failed"

    def task(task_id: str, status: str, **fields: Any) -> Dict[str, Any]:
        return {"task_id": task_id, "status": status, "attempts": 1, "error": None, "reason": None,
                "started_at": None, "completed_at": None, "map": None, **fields}

    node = task("process", "Failed", attempts=0, map=counts(count=4, completed=3, failed=1),
                error="1 of 4 map instances failed (indices 2); first, index 2: ValueError: x",
                started_at="2026-01-01T00:00:00+00:00", completed_at="2026-01-01T00:00:01.5+00:00")
    assert render.task_line(node) == ("task process Failed 1.50s (3/4 completed, 1 failed) "
                                      "1 of 4 map instances failed (indices 2); first, index 2: ValueError: x")
    header, first, second = render.tasks_table([task("list", "Completed"), node]).splitlines()
    assert header.split() == ["TASK", "STATUS", "ATTEMPTS", "DURATION", "INSTANCES", "ERROR"]
    assert first.split() == ["list", "Completed", "1", "-", "-"]
    assert "  [##########] 3/4 completed, 1 failed  1 of 4 map" in second
    assert "INSTANCES" not in render.tasks_table([task("list", "Completed")])

    live = [task("list", "Completed"), task("process", "Running", attempts=0, map=running)]
    assert render.progress_line(live, elapsed=2) == "[##########----------] 1/2 done  2.00s  running: process 152/300"

    rows = render.instances_table([
        {"map_index": 0, "status": "Completed", "attempts": 1, "error": None,
         "started_at": "2026-01-01T00:00:00+00:00", "completed_at": "2026-01-01T00:00:00.25+00:00"},
        {"map_index": 1, "status": "Failed", "attempts": 3, "error": "ValueError: \x1b[2Jboom\nmore",
         "started_at": None, "completed_at": None},
    ]).splitlines()
    assert rows[0].split() == ["INDEX", "STATUS", "ATTEMPTS", "DURATION", "ERROR"]
    assert rows[1].split() == ["0", "Completed", "1", "0.25s"]
    assert rows[2].split() == ["1", "Failed", "3", "-", "ValueError:", r"\x1b[2Jboom"], "escaped, first line only"
    assert render.instances_page_note(100, 100, 250) == "instances 100 to 199 of 250; the next page: --offset 200"
    assert render.instances_page_note(200, 50, 250) == "instances 200 to 249 of 250"
    assert render.instances_page_note(0, 0, 0) == "the task has no instances"


# --- the dashboard's API -----------------------------------------------------------------------

def instances_path(execution_id: str, task_id: str, query: str = "") -> str:
    return f"executions/{execution_id}/tasks/{quote(task_id, safe='')}/instances" + (f"?{query}" if query else "")


def test_api_execution_holds_the_counts(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                        mapped: MapFlow) -> None:
    result = sync_executor.execute(mapped.workflow, {"n": 12, "bad": [3, 7]}, timeout=DEADLINE)
    ui = serve()
    detail = ui.ok(f"executions/{result['execution_id']}")
    assert detail == {**json.loads(json.dumps(sync_executor.get_execution(result["execution_id"]))),
                      "duration_seconds": detail["duration_seconds"]}
    assert task_of(detail, mapped.node)["map"] == counts(count=12, completed=10, failed=2)
    assert task_of(detail, mapped.listing)["map"] is None
    listed = ui.ok("executions")["executions"][0]
    assert listed["task_counts"] == {"Completed": 2, "Failed": 1}, "a mapped task counts once"
    endpoints = {e["path"]: e for e in ui.ok("")["endpoints"]}
    assert set(endpoints["/api/executions/<execution_id>/tasks/<task_id>/instances"]["params"]) == {"limit", "offset"}
    health = ui.ok("health")
    assert health["task_statuses"] == list(cloacina.TASK_STATUSES)
    assert health["final_task_statuses"] == list(cloacina.FINAL_TASK_STATUSES)


def test_api_pages_through_instances(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                     mapped: MapFlow) -> None:
    result = sync_executor.execute(mapped.workflow, {"n": 250, "bad": [7]}, timeout=DEADLINE)
    execution_id = result["execution_id"]
    ui = serve()
    first = ui.ok(instances_path(execution_id, mapped.node))
    assert (first["execution_id"], first["task_id"]) == (execution_id, mapped.node)
    assert (first["limit"], first["offset"], first["next_offset"]) == (100, 0, 100)
    assert first["instances"] == json.loads(json.dumps(sync_executor.list_task_instances(execution_id, mapped.node)))
    assert first["instances"][7]["status"] == "Failed" and first["instances"][7]["error"] == "ValueError: boom at 7"

    seen: List[int] = []
    offset: Optional[int] = 0
    pages = 0
    while offset is not None:
        page = ui.ok(instances_path(execution_id, mapped.node, f"limit=60&offset={offset}"))
        assert page["offset"] == offset and len(page["instances"]) <= 60
        assert all(set(i) == INSTANCE_KEYS for i in page["instances"])
        seen += [i["map_index"] for i in page["instances"]]
        offset = page["next_offset"]
        pages += 1
    assert pages == 5 and seen == list(range(250))

    whole = ui.ok(instances_path(execution_id, mapped.node, "limit=1000"))
    assert len(whole["instances"]) == 250 and whole["next_offset"] is None
    exact = ui.ok(instances_path(execution_id, mapped.node, "offset=200&limit=50"))
    assert [i["map_index"] for i in exact["instances"]] == list(range(200, 250)) and exact["next_offset"] is None
    past = ui.ok(instances_path(execution_id, mapped.node, "offset=250"))
    assert past["instances"] == [] and past["next_offset"] is None
    # A client that does not encode the '/' of the task id reaches the same page.
    raw = ui.ok(f"executions/{execution_id}/tasks/{mapped.node}/instances?limit=2")
    assert [i["map_index"] for i in raw["instances"]] == [0, 1]


@pytest.mark.parametrize("query, status, fragment", [
    ("limit=0", 400, "limit"), ("limit=1001", 400, "limit"), ("limit=ten", 400, "limit"),
    ("offset=-1", 400, "offset"), ("offset=1.5", 400, "offset"), ("limit=5&limit=6", 400, "limit"),
    ("offset=1000000001", 400, "parameter offset=1000000001 is out of range"),
])
def test_api_instances_refuses_bad_parameters(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                              mapped: MapFlow, query: str, status: int, fragment: str) -> None:
    execution_id = sync_executor.execute(mapped.workflow, {"n": 2}, timeout=DEADLINE)["execution_id"]
    response = serve().get(instances_path(execution_id, mapped.node, query))
    assert response.status == status and fragment in response.json()["error"], response.body


def test_api_instances_of_what_has_none(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                        mapped: MapFlow) -> None:
    execution_id = sync_executor.execute(mapped.workflow, {"n": 2}, timeout=DEADLINE)["execution_id"]
    empty = sync_executor.execute(mapped.workflow, {"n": 0}, timeout=DEADLINE)["execution_id"]
    ui = serve()
    for path, status, fragment in (
        (instances_path("00000000-0000-0000-0000-000000000000", mapped.node), 404, "no execution"),
        (instances_path("nope", mapped.node), 400, "not an execution id"),
        (instances_path(execution_id, "no.such.task"), 404, "has no task 'no.such.task'"),
        (instances_path(execution_id, mapped.listing), 400, "is not a mapped task"),
    ):
        response = ui.get(path)
        assert response.status == status and fragment in response.json()["error"], (path, response.body)
    none = ui.ok(instances_path(empty, mapped.node))
    assert none["instances"] == [] and none["next_offset"] is None


def test_api_while_the_map_runs(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                mapped: MapFlow) -> None:
    execution_id = start_gated(sync_executor, mapped)
    ui = serve()
    detail = ui.ok(f"executions/{execution_id}")
    node = task_of(detail, mapped.node)
    assert node["status"] == "Running" and node["map"] == counts(count=6, completed=2, running=4)
    page = ui.ok(instances_path(execution_id, mapped.node))
    assert [i["status"] for i in page["instances"]] == ["Completed"] * 2 + ["Running"] * 4
    assert all(i["completed_at"] is None and i["started_at"] for i in page["instances"][2:])
    mapped.gate.touch()
    assert sync_executor.wait(execution_id, timeout=DEADLINE)["status"] == "Completed"
    after = ui.ok(instances_path(execution_id, mapped.node))
    assert [i["status"] for i in after["instances"]] == ["Completed"] * 6


# --- the dashboard's page, in headless Chromium -------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium as test_ui_browser.py drives it; skips where it is missing."""
    chromium = os.environ.get("CLOACINA_TEST_CHROMIUM", "/usr/bin/chromium")
    chromedriver = os.environ.get("CLOACINA_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    if not (os.access(chromium, os.X_OK) and os.access(chromedriver, os.X_OK)):
        pytest.skip(f"needs {chromium} and {chromedriver} (Debian: apt-get install chromium chromium-driver)")
    service = importlib.import_module("selenium.webdriver.chrome.service")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=service.Service(executable_path=chromedriver), options=options)
    try:
        driver.set_page_load_timeout(DEADLINE)
        yield driver
    finally:
        driver.quit()


def test_the_execution_page_pages_through_instances(serve: Callable[..., Running],
                                                     sync_executor: cloacina.SyncExecutor,
                                                     mapped: MapFlow, browser: Any) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    result = sync_executor.execute(mapped.workflow, {"n": 120, "bad": [4, 117]}, timeout=DEADLINE)
    ui = serve()
    browser.get(ui.page(f"/executions/{result['execution_id']}"))

    def wait(script: str, what: str, *args: Any) -> Any:
        return WebDriverWait(browser, DEADLINE, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: d.execute_script(script, *args), message=f"waiting for {what}")

    node = wait("const n = document.querySelector(`#graph g.node[data-task-id='${arguments[0]}']`);"
                " return n && {status: n.getAttribute('data-status'), tally: n.querySelector('.map-tally').textContent,"
                " parts: [...n.querySelectorAll('.map-part')].map((p) => p.getAttribute('data-status'))};",
                "the mapped task's node", mapped.node)
    assert node == {"status": "Failed", "tally": "120/120", "parts": ["Completed", "Failed"]}
    cell = wait("const r = document.querySelector(`#tasks tr[data-task-id='${arguments[0]}'] td.instances`);"
                " return r && r.textContent;", "the Instances cell", mapped.node)
    assert cell.strip() == "118/120 completed, 2 failed"

    browser.execute_script("document.querySelector(`#tasks tr[data-task-id='${arguments[0]}']`).click();",
                           mapped.node)
    shown = ("const rows = [...document.querySelectorAll('#instances tr[data-map-index]')];"
             " if (!rows.length || rows[0].getAttribute('data-map-index') !== arguments[0]) return null;"
             " return {first: rows[0].getAttribute('data-map-index'), last: rows[rows.length - 1].getAttribute('data-map-index'),"
             " n: rows.length, info: document.getElementById('instances-info').textContent,"
             " next: document.getElementById('instances-next').disabled,"
             " selected: [...document.querySelectorAll('#instances tr.selected')].map((r) => r.getAttribute('data-map-index')),"
             " failed: rows.filter((r) => r.getAttribute('data-status') === 'Failed').map((r) => r.getAttribute('data-map-index'))};")
    first = wait(shown, "the first page of instances", "0")
    assert first == {"first": "0", "last": "49", "n": 50, "info": "0–49 of 120", "next": False, "selected": [],
                     "failed": ["4"]}
    browser.find_element("id", "instances-next").click()
    assert wait(shown, "the second page", "50")["last"] == "99"
    browser.find_element("id", "instances-last").click()
    last = wait(shown, "the last page", "100")
    assert (last["last"], last["n"], last["next"], last["failed"]) == ("119", 20, True, ["117"])
    browser.find_element("id", "instances-first").click()
    wait(shown, "the first page again", "0")
    browser.find_element("id", "instances-goto").send_keys("117")
    browser.find_element("css selector", "#instances-goto-form button").click()
    assert wait(shown, "the page of index 117", "100")["selected"] == ["117"]
    errors = browser.execute_script(
        "return [...document.querySelectorAll('#instances tr[data-map-index=\"117\"] td.error')].map((e) => e.textContent);")
    assert errors == ["ValueError: boom at 117"]

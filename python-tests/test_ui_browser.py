"""``cloacina ui``'s pages, driven in headless Chromium through Selenium.

The server runs for real in a thread over the test's database; executions are made by a working
:class:`cloacina.SyncExecutor`. Assertions are about what a person sees: rows, badges, graph nodes,
timeline bars. Skipped when selenium, ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` is missing
(Debian: ``apt-get install chromium chromium-driver``; ``pip install selenium``).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

import cloacina
from backend import BACKEND
from ui_server import Running, serve  # noqa: F401

CHROMIUM = os.environ.get("CLOACINA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CLOACINA_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER} "
                "(Debian: apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.skipif(
    cloacina.backend != BACKEND,
    reason=f"the cloacina dispatcher binds {cloacina.backend}, the suite tests {BACKEND} (set CLOACINA_BACKEND)",
)

DEADLINE = 30.0
REPO = Path(__file__).resolve().parent.parent
XSS = '<img src=x onerror="window.__xss=1">'


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(DEADLINE)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"\ndashboard screenshots: {folder}")
    return folder


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """``condition``'s first truthy value; the pages redraw themselves, so a stale element retries."""
    return WebDriverWait(driver, DEADLINE, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(
        condition, message=f"waiting for {what}")


def click(driver: WebDriver, css: str, what: str) -> None:
    """Clicks the first element matching ``css`` (again if a redraw replaced it meanwhile)."""
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True, what)


def nodes(driver: WebDriver) -> Dict[str, str]:
    """The graph's nodes: task id -> data-status (read in one script, so never half redrawn)."""
    return driver.execute_script(
        "const m = {}; for (const n of document.querySelectorAll('#graph g.node'))"
        " m[n.getAttribute('data-task-id')] = n.getAttribute('data-status'); return m;")


def attempts(driver: WebDriver, task_id: str) -> List[Dict[str, str]]:
    bars = driver.execute_script(
        "return [...document.querySelectorAll('#timeline .attempt')].map((b) => ({task: b.getAttribute('data-task-id'),"
        " attempt: b.getAttribute('data-attempt'), status: b.getAttribute('data-status')}));")
    return [{"attempt": b["attempt"], "status": b["status"]} for b in bars if b["task"] == task_id]


def listed(driver: WebDriver) -> List[List[str]]:
    """The executions table: [execution id, status badge text, id link href] per row, top to bottom."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#executions tr[data-execution-id]')].map((r) =>"
        " [r.getAttribute('data-execution-id'), r.querySelector('.badge').textContent, r.querySelector('a').href]);")


def badge_text(driver: WebDriver, selector: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


# --- tests -------------------------------------------------------------------------------------

def test_executions_page_lists_executions_with_statuses(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                                        browser: WebDriver, ids: Any, shots: Path) -> None:
    @cloacina.task(ids("fine"))
    def fine(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"fine": True}

    @cloacina.task(ids("explode"))
    def explode(ctx: Dict[str, Any]) -> Dict[str, Any]:
        raise ValueError("boom")

    good = sync_executor.execute(cloacina.Workflow(ids.wf("good"), [fine]), timeout=DEADLINE)["execution_id"]
    bad = sync_executor.execute(cloacina.Workflow(ids.wf("bad"), [explode]), timeout=DEADLINE)["execution_id"]
    ui = serve()
    browser.get(ui.page("/"))

    def rows(driver: WebDriver) -> Dict[str, str]:
        return {row[0]: row[1] for row in listed(driver)}

    seen = wait(browser, lambda d: listed(d) if len(listed(d)) == 2 else None, "two executions listed")
    assert seen == [[bad, "Failed", ui.page(f"/executions/{bad}")],  # newest first
                    [good, "Completed", ui.page(f"/executions/{good}")]]
    browser.save_screenshot(str(shots / "executions.png"))

    # Filter by status: only the failed one stays.
    click(browser, "#filter-status option[value=Failed]", "the Failed status option")
    wait(browser, lambda d: list(rows(d)) == [bad], "the status filter")
    assert "status=Failed" in browser.current_url

    # Find by id navigates to the execution page.
    browser.find_element(By.ID, "find-id").send_keys(good)
    click(browser, "#find-form button", "the Open button")
    wait(browser, lambda d: badge_text(d, "#execution-status .badge") == "Completed", "the execution page")
    assert browser.current_url == ui.page(f"/executions/{good}")

    # The workflow page: success rate and the durations chart.
    browser.get(ui.page(f"/workflows/{ids.wf('good')}"))
    wait(browser, lambda d: badge_text(d, "#success-rate") == "100.0 %", "the success rate")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#durations circle.point")) == 1
    assert browser.find_element(By.ID, "workflow-name").text == ids.wf("good")
    browser.save_screenshot(str(shots / "workflow.png"))


def test_graph_has_one_node_per_task_and_details_on_click(serve: Callable[..., Running],
                                                          sync_executor: cloacina.SyncExecutor, browser: WebDriver,
                                                          ids: Any, shots: Path) -> None:
    @cloacina.task(ids("extract"))
    def extract(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"rows": [1, 2, 3], "big": "x" * 20_000}

    @cloacina.task(ids("clean"), dependencies=[ids("extract")])
    def clean(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"clean": len(ctx["rows"])}

    @cloacina.task(ids("stats"), dependencies=[ids("extract")])
    def stats(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"stats": {"n": 3}}

    @cloacina.task(ids("load"), dependencies=[ids("clean"), ids("stats")])
    def load(ctx: Dict[str, Any]) -> Dict[str, Any]:
        raise RuntimeError("disk full")

    result = sync_executor.execute(cloacina.Workflow(ids.wf(), [load]), timeout=DEADLINE)
    assert result["status"] == "Failed"
    ui = serve()
    browser.get(ui.page(f"/executions/{result['execution_id']}"))
    wait(browser, lambda d: len(nodes(d)) == 4, "four graph nodes")
    assert nodes(browser) == {ids("extract"): "Completed", ids("clean"): "Completed",
                              ids("stats"): "Completed", ids("load"): "Failed"}
    assert badge_text(browser, "#execution-status .badge") == "Failed"
    # Layered layout: extract in the first column, clean/stats in the second, load in the third.
    xs = {n.get_attribute("data-task-id"): n.rect["x"] for n in browser.find_elements(By.CSS_SELECTOR, "#graph g.node")}
    assert xs[ids("extract")] < xs[ids("clean")] == xs[ids("stats")] < xs[ids("load")]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#graph path.edge")) == 4
    fills = {n.get_attribute("data-status"): n.find_element(By.TAG_NAME, "rect").get_attribute("fill")
             for n in browser.find_elements(By.CSS_SELECTOR, "#graph g.node")}
    assert fills["Completed"] != fills["Failed"]

    node = next(n for n in browser.find_elements(By.CSS_SELECTOR, "#graph g.node")
                if n.get_attribute("data-task-id") == ids("load"))
    node.click()
    wait(browser, lambda d: d.find_elements(By.ID, "task-error"), "the task's details")
    assert "disk full" in browser.find_element(By.ID, "task-error").text
    assert "RuntimeError" in browser.find_element(By.ID, "task-traceback").get_attribute("textContent")
    output = browser.find_element(By.ID, "task-output")
    assert "truncated (" in output.text and "characters)" in output.text
    browser.execute_script("window.scrollTo(0, 0);")
    browser.save_screenshot(str(shots / "execution.png"))


def test_running_execution_turns_completed_without_reload(serve: Callable[..., Running],
                                                          sync_executor: cloacina.SyncExecutor, browser: WebDriver,
                                                          ids: Any, tmp_path: Path, shots: Path) -> None:
    gate = tmp_path / "go"

    @cloacina.task(ids("waits"))
    def waits(ctx: Dict[str, Any]) -> Dict[str, Any]:
        import time

        deadline = time.monotonic() + 4 * DEADLINE
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"waited": gate.exists()}

    @cloacina.task(ids("after"), dependencies=[ids("waits")])
    def after(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"after": True}

    execution_id = sync_executor.submit(cloacina.Workflow(ids.wf(), [after]))
    try:
        ui = serve()
        browser.get(ui.page(f"/executions/{execution_id}"))
        wait(browser, lambda d: nodes(d).get(ids("waits")) == "Running", "the waiting task shown Running")
        assert badge_text(browser, "#execution-status .badge") == "Running"
        wait(browser, lambda d: attempts(d, ids("waits")), "the running attempt's bar")
        browser.save_screenshot(str(shots / "execution-running.png"))
        browser.execute_script("window.__sameDocument = true;")
    finally:
        gate.touch()
    wait(browser, lambda d: nodes(d) == {ids("waits"): "Completed", ids("after"): "Completed"},
         "both tasks shown Completed")
    wait(browser, lambda d: badge_text(d, "#execution-status .badge") == "Completed", "the execution Completed")
    assert browser.execute_script("return window.__sameDocument === true;")  # no reload happened


def test_timeline_shows_each_attempt_of_a_retried_task(serve: Callable[..., Running],
                                                       sync_executor: cloacina.SyncExecutor, browser: WebDriver,
                                                       ids: Any, shots: Path) -> None:
    calls: List[int] = []

    @cloacina.task(ids("flaky"), retries=1, retry_delay=0)
    def flaky(ctx: Dict[str, Any]) -> Dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("first try fails")
        return {"ok": True}

    result = sync_executor.execute(cloacina.Workflow(ids.wf(), [flaky]), timeout=DEADLINE)
    assert result["status"] == "Completed"
    ui = serve()
    browser.get(ui.page(f"/executions/{result['execution_id']}"))
    bars = wait(browser, lambda d: attempts(d, ids("flaky")) if len(attempts(d, ids("flaky"))) == 2 else None,
                "two attempt bars")
    assert sorted(b["attempt"] for b in bars) == ["1", "2"]
    assert {b["attempt"]: b["status"] for b in bars}["2"] == "Completed"
    assert {b["attempt"]: b["status"] for b in bars}["1"] != "Completed"
    browser.save_screenshot(str(shots / "execution-retried.png"))


def test_a_parent_and_its_child_execution_link_to_each_other(serve: Callable[..., Running],
                                                             sync_executor: cloacina.SyncExecutor, browser: WebDriver,
                                                             ids: Any, shots: Path) -> None:
    @cloacina.task(ids("enrich"))
    def enrich(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"enriched": True}

    child = cloacina.Workflow(ids.wf("child"), [enrich])
    node = cloacina.subworkflow(child, task_id=ids("node"))
    result = sync_executor.execute(cloacina.Workflow(ids.wf(), [node]), timeout=DEADLINE)
    assert result["status"] == "Completed"
    parent_id = result["execution_id"]
    child_id = result["task_results"][0]["child_execution_id"]
    ui = serve()

    browser.get(ui.page(f"/executions/{parent_id}"))
    link = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#tasks a[data-child-execution-id]"),
                "the node's child link")[0]
    assert link.get_attribute("href") == ui.page(f"/executions/{child_id}") and link.text == child_id
    assert not browser.find_elements(By.ID, "parent-execution")
    browser.save_screenshot(str(shots / "execution-parent.png"))
    link.click()
    parent = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#parent-execution a"), "the parent link")[0]
    assert browser.current_url == ui.page(f"/executions/{child_id}")
    assert parent.get_attribute("href") == ui.page(f"/executions/{parent_id}")
    assert browser.find_element(By.ID, "parent-execution").text == f"{parent_id} (task {ids('node')})"

    # The executions page says which rows are children, linking to the parent.
    browser.get(ui.page("/"))
    wait(browser, lambda d: len(listed(d)) == 2, "two executions listed")
    marks = browser.execute_script(
        "return [...document.querySelectorAll('#executions tr[data-execution-id]')].map((r) =>"
        " [r.getAttribute('data-execution-id'), (r.querySelector('.parent a') || {}).href || null]);")
    assert dict(marks) == {parent_id: None, child_id: ui.page(f"/executions/{parent_id}")}


def test_markup_in_task_ids_and_values_is_shown_as_text(serve: Callable[..., Running],
                                                        sync_executor: cloacina.SyncExecutor, browser: WebDriver,
                                                        ids: Any, shots: Path) -> None:
    task_id = XSS + ids("t")

    @cloacina.task(task_id)
    def markup(ctx: Dict[str, Any]) -> Dict[str, Any]:
        raise ValueError(XSS)

    name = XSS + ids.wf()
    result = sync_executor.execute(cloacina.Workflow(name, [markup]), {"label": XSS}, timeout=DEADLINE)
    ui = serve()
    browser.get(ui.page("/"))
    wait(browser, lambda d: XSS in d.find_element(By.TAG_NAME, "body").text, "the workflow name as text")
    browser.get(ui.page(f"/executions/{result['execution_id']}"))
    wait(browser, lambda d: task_id in nodes(d), "the node of the markup task")
    click(browser, "#tasks tr.clickable", "the task row")
    wait(browser, lambda d: d.find_elements(By.ID, "task-details"), "the task's details")
    # The id, the error and the context value, shown as text.
    assert browser.find_element(By.CSS_SELECTOR, "#tasks td.id").text == task_id
    assert browser.find_element(By.ID, "task-error").text == f"ValueError: {XSS}"
    assert browser.find_element(By.CSS_SELECTOR, "#task-output .str").text == json.dumps(XSS)
    browser.save_screenshot(str(shots / "execution-markup.png"))
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.execute_script("return typeof window.__xss;") == "undefined"
    browser.get(ui.page(f"/workflows/{name}"))
    wait(browser, lambda d: d.find_element(By.ID, "workflow-name").text == name, "the workflow page")
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.execute_script("return typeof window.__xss;") == "undefined"
    browser.save_screenshot(str(shots / "workflow-markup.png"))


def nav(driver: WebDriver) -> Dict[str, str]:
    """The header's navigation: link text -> href."""
    return driver.execute_script(
        "const m = {}; for (const a of document.querySelectorAll('#nav a')) m[a.textContent] = a.href; return m;")


def test_workers_page_shows_the_worker_alive_with_its_pid(serve: Callable[..., Running],
                                                         sync_executor: cloacina.SyncExecutor, browser: WebDriver,
                                                         shots: Path) -> None:
    ui = serve()
    browser.get(ui.page("/workers"))
    row = wait(browser, lambda d: d.execute_script(
        "const pid = arguments[0]; for (const r of document.querySelectorAll('#workers tr[data-worker-id]'))"
        " if (r.querySelector('td.pid').textContent === pid) return {alive: r.querySelector('td.alive').textContent,"
        " value: r.querySelector('td.alive .badge').getAttribute('data-value'),"
        " ago: r.querySelector('td.heartbeat span').textContent,"
        " title: r.querySelector('td.heartbeat span').getAttribute('title')}; return null;", str(os.getpid())),
        "the worker fixture's row")
    assert row["alive"] == "alive" and row["value"] == "true"
    assert row["ago"].endswith(" ago") and row["title"]
    assert nav(browser) == {"Executions": ui.page("/"), "Workers": ui.page("/workers"),
                            "Schedules": ui.page("/schedules"), "Limits": ui.page("/limits")}
    browser.save_screenshot(str(shots / "workers.png"))


def test_schedules_page_lists_schedules_and_shows_markup_as_text(serve: Callable[..., Running],
                                                                 sync_executor: cloacina.SyncExecutor,
                                                                 browser: WebDriver, ids: Any, shots: Path) -> None:
    @cloacina.task(ids("tick"))
    def tick(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {}

    flow = cloacina.Workflow(ids.wf(), [tick])
    sync_executor.schedule(flow, "0 3 * * *", name=ids("nightly"))
    marked = XSS + ids("m")
    sync_executor.schedule(flow, "*/5 * * * *", name=marked)
    ui = serve()
    browser.get(ui.page("/schedules"))

    def rows(driver: WebDriver) -> Dict[str, Dict[str, str]]:
        return driver.execute_script(
            "const m = {}; for (const r of document.querySelectorAll('#schedules tr[data-schedule]'))"
            " m[r.getAttribute('data-schedule')] = {name: r.querySelector('td.name').textContent,"
            " cron: r.querySelector('td.cron').textContent, next: r.querySelector('td.next-fire').textContent,"
            " workflow: r.querySelector('td.workflow a').href}; return m;")

    seen = wait(browser, lambda d: rows(d) if len(rows(d)) == 2 else None, "two schedules listed")
    nightly = seen[ids("nightly")]
    assert nightly["name"] == ids("nightly") and nightly["cron"] == "0 3 * * *"
    assert nightly["next"] not in ("", "—")
    assert nightly["workflow"] == ui.page(f"/workflows/{ids.wf()}")
    assert seen[marked]["name"] == marked and seen[marked]["cron"] == "*/5 * * * *"
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.execute_script("return typeof window.__xss;") == "undefined"
    browser.save_screenshot(str(shots / "schedules.png"))


def test_limits_page_shows_a_set_limit_without_reload(serve: Callable[..., Running],
                                                     sync_executor: cloacina.SyncExecutor, browser: WebDriver,
                                                     ids: Any, shots: Path) -> None:
    ui = serve()
    browser.get(ui.page("/limits"))
    wait(browser, lambda d: d.find_element(By.ID, "limits").text == "No limits.", "the empty state")
    browser.execute_script("window.__sameDocument = true;")
    sync_executor.set_limit(ids("x"), concurrency=2)
    sync_executor.set_limit(ids("tenant:*"), rate=500, per=60)

    def rows(driver: WebDriver) -> Dict[str, List[str]]:
        """The limits table: name -> the text of each cell, left to right."""
        return driver.execute_script(
            "const m = {}; for (const r of document.querySelectorAll('#limits tr[data-limit]'))"
            " m[r.getAttribute('data-limit')] = [...r.cells].map((c) => c.textContent); return m;")

    seen = wait(browser, lambda d: rows(d) if len(rows(d)) == 2 else None, "the two limits listed")
    assert seen == {ids("x"): [ids("x"), "2", "-", "0", "0"],
                    ids("tenant:*"): [ids("tenant:*"), "-", "500 per 60 s", "-", "-"]}
    assert browser.execute_script("return window.__sameDocument === true;")  # refreshed, not reloaded
    assert browser.find_element(By.CSS_SELECTOR, "#nav a.current").text == "Limits"
    browser.save_screenshot(str(shots / "limits.png"))


def test_pages_have_types_and_a_strict_csp(serve: Callable[..., Running]) -> None:
    ui = serve()
    for path, kind in (("/", "text/html"), ("/executions/x", "text/html"), ("/workflows/w", "text/html"),
                       ("/workers", "text/html"), ("/schedules", "text/html"), ("/limits", "text/html"),
                       ("/static/app.js", "text/javascript"), ("/static/app.css", "text/css")):
        with urllib.request.urlopen(ui.page(path), timeout=DEADLINE) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == f"{kind}; charset=utf-8"
            assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            body = response.read().decode()
        if kind == "text/html":
            assert "<script src=\"/static/app.js\"" in body and "http" not in body.replace("http-equiv", "")
    for path in ("/static/nope.js", "/static/../server.py", "/index.html"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(ui.page(path), timeout=DEADLINE)
        caught.value.close()
        assert caught.value.code == 404


def test_token_protects_pages_and_is_passed_on(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                               browser: WebDriver, ids: Any) -> None:
    @cloacina.task(ids("one"))
    def one(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {}

    done = sync_executor.execute(cloacina.Workflow(ids.wf(), [one]), timeout=DEADLINE)["execution_id"]
    ui = serve(host="0.0.0.0", token="s3cret-token")
    for path in ("/", f"/executions/{done}", "/api/executions"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(ui.page(path), timeout=DEADLINE)
        caught.value.close()
        assert caught.value.code == 401
    with urllib.request.urlopen(ui.page("/?token=s3cret-token"), timeout=DEADLINE) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/html")

    browser.get(ui.page("/?token=s3cret-token"))
    rows = wait(browser, listed, "the execution listed through the token")
    assert nav(browser) == {"Executions": ui.page("/?token=s3cret-token"),
                            "Workers": ui.page("/workers?token=s3cret-token"),
                            "Schedules": ui.page("/schedules?token=s3cret-token"),
                            "Limits": ui.page("/limits?token=s3cret-token")}
    assert rows == [[done, "Completed", ui.page(f"/executions/{done}?token=s3cret-token")]]
    click(browser, f'#executions tr[data-execution-id="{done}"] a', "the execution's link")
    wait(browser, lambda d: badge_text(d, "#execution-status .badge") == "Completed", "the execution page")
    assert "token=s3cret-token" in browser.current_url

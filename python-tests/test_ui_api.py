"""``cloacina.ui``: the dashboard's read-only JSON API, served for real on a free loopback port.

Each test runs the server in a thread over the test's database (``database_url`` fixture) and
makes its executions with a working :class:`cloacina.SyncExecutor`: nothing is mocked. Plain
``def`` tests: no event loop runs in the test's thread (SyncExecutor needs that).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import quote, urlsplit

import pytest

import cloacina
from backend import BACKEND, cl
from cloacina.ui import UiConfigError, make_server
from ui_server import DEADLINE, Response, Running, request, serve  # noqa: F401

pytestmark = pytest.mark.skipif(
    cloacina.backend != BACKEND,
    reason=f"the cloacina dispatcher binds {cloacina.backend}, the suite tests {BACKEND} (set CLOACINA_BACKEND)",
)

XSS = "<img src=x onerror=alert(1)>"


# --- helpers -----------------------------------------------------------------------------------

def wait_until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def flows(ids: Any) -> Dict[str, Any]:
    """Workflows of the test: ``ok`` (two tasks), ``bad`` (its task raises), ``xss`` (its task id is markup)."""

    @cloacina.task(ids("first"))
    def first(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"first": True}

    @cloacina.task(ids("second"), dependencies=[ids("first")])
    def second(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"second": ctx.get("size", 0)}

    @cloacina.task(ids("explode"))
    def explode(ctx: Dict[str, Any]) -> Dict[str, Any]:
        raise ValueError("boom")

    @cloacina.task(XSS + ids("t"))
    def markup(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"label": XSS}

    return {"ok": cloacina.Workflow(ids.wf("ok"), [second]),
            "bad": cloacina.Workflow(ids.wf("bad"), [explode]),
            "xss": cloacina.Workflow(ids.wf("xss"), [markup]),
            "markup_task": XSS + ids("t")}


def run_some(sync_executor: cloacina.SyncExecutor, flows: Dict[str, Any], ok: int, bad: int) -> List[str]:
    """Runs ``ok`` good and ``bad`` failing executions, in that order; returns their ids."""
    done = [sync_executor.execute(flows["ok"], {"i": i}, timeout=DEADLINE) for i in range(ok)]
    done += [sync_executor.execute(flows["bad"], {"i": i}, timeout=DEADLINE) for i in range(bad)]
    return [r["execution_id"] for r in done]


# --- shapes ------------------------------------------------------------------------------------

def test_index_lists_every_endpoint(serve: Callable[..., Running]) -> None:
    ui = serve()
    for path in ("", "/"):
        listed = {e["path"]: e for e in ui.ok(path.lstrip("/") if path else "")["endpoints"]}
        assert {"/api/", "/api/health", "/api/executions", "/api/executions/<execution_id>",
                "/api/workflows/<name>", "/api/workers", "/api/schedules", "/api/limits"} <= set(listed)
        assert set(listed["/api/executions"]["params"]) == {"workflow", "status", "limit", "offset"}
        assert all(e["description"] for e in listed.values())


def test_health(serve: Callable[..., Running]) -> None:
    body = serve().ok("health")
    assert body["ok"] is True and body["backend"] == BACKEND
    # The pages take the status names from here: the engine's, not a copy.
    assert body["execution_statuses"] == list(cl.EXECUTION_STATUSES)
    assert body["final_execution_statuses"] == list(cl.FINAL_EXECUTION_STATUSES)


def test_every_response_is_json_with_nosniff_and_no_store(serve: Callable[..., Running]) -> None:
    ui = serve()
    for path, method, status in (("health", "GET", 200), ("executions/nope", "GET", 400),
                                 ("nothing", "GET", 404), ("executions", "POST", 405)):
        response = ui.get(path, method=method)
        assert response.status == status, (path, response.body)
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        response.json()
    outside = request(ui.base.replace("/api/", "/index.html"))
    assert outside.status == 404 and "error" in outside.json()


def test_executions_page_is_compact(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                    flows: Dict[str, Any]) -> None:
    good, bad = run_some(sync_executor, flows, ok=1, bad=1)
    page = serve().ok("executions")
    assert page["limit"] == 50 and page["offset"] == 0 and page["next_offset"] is None
    items = {e["execution_id"]: e for e in page["executions"]}
    assert [e["execution_id"] for e in page["executions"]] == [bad, good]  # newest first
    item = items[good]
    assert not {"input_context", "final_context", "task_results"} & set(item)
    assert item["status"] == "Completed" and item["workflow_name"] == flows["ok"].name
    assert item["task_counts"] == {"Completed": 2}
    assert isinstance(item["duration_seconds"], float) and item["duration_seconds"] >= 0
    assert items[bad]["status"] == "Failed" and items[bad]["task_counts"] == {"Failed": 1}


def test_pagination_and_next_offset(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                    flows: Dict[str, Any]) -> None:
    made = run_some(sync_executor, flows, ok=5, bad=0)
    ui = serve()
    seen: List[str] = []
    offset: Optional[int] = 0
    pages = 0
    while offset is not None:
        page = ui.ok(f"executions?limit=2&offset={offset}")
        assert page["limit"] == 2 and page["offset"] == offset
        seen += [e["execution_id"] for e in page["executions"]]
        offset = page["next_offset"]
        pages += 1
    assert pages == 3 and seen == list(reversed(made))
    exact = ui.ok("executions?limit=5")
    assert len(exact["executions"]) == 5 and exact["next_offset"] is None
    assert ui.ok("executions?offset=99")["executions"] == []


def test_filters(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor, flows: Dict[str, Any]) -> None:
    run_some(sync_executor, flows, ok=2, bad=1)
    ui = serve()
    by_workflow = ui.ok(f"executions?workflow={quote(flows['bad'].name)}")["executions"]
    assert [e["workflow_name"] for e in by_workflow] == [flows["bad"].name]
    completed = ui.ok("executions?status=Completed")["executions"]
    assert len(completed) == 2 and {e["status"] for e in completed} == {"Completed"}
    both = ui.ok(f"executions?status=Failed&workflow={quote(flows['ok'].name)}")
    assert both["executions"] == [] and both["next_offset"] is None


@pytest.mark.parametrize("query, fragment", [
    ("limit=0", "limit"), ("limit=201", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset"),
    ("offset=1.5", "offset"), ("status=done", "status"), ("limit=5&limit=6", "limit"),
    ("offset=1000000001", "parameter offset=1000000001 is out of range: must be an int between 0 and 1000000000"),
])
def test_bad_parameters_are_400(serve: Callable[..., Running], query: str, fragment: str) -> None:
    response = serve().get(f"executions?{query}")
    assert response.status == 400 and fragment in response.json()["error"]


def test_execution_detail(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                          flows: Dict[str, Any], ids: Any) -> None:
    good, bad = run_some(sync_executor, flows, ok=1, bad=1)
    ui = serve()
    detail = ui.ok(f"executions/{good}")
    assert detail == {**sync_executor.get_execution(good), "duration_seconds": detail["duration_seconds"]}
    second = next(r for r in detail["task_results"] if r["task_id"] == ids("second"))
    assert second["dependencies"] == [ids("first")] and second["history"][0]["status"] == "Completed"
    assert detail["final_context"]["second"] == 0
    failed = ui.ok(f"executions/{bad.upper()}")
    assert failed["status"] == "Failed" and "boom" in failed["task_results"][0]["error"]


def test_parent_and_child_executions_name_each_other(serve: Callable[..., Running],
                                                     sync_executor: cloacina.SyncExecutor, ids: Any) -> None:
    """What the pages link by: a child's ``parent_execution_id``/``parent_task_id`` (in the list
    too) and the parent task's ``child_execution_id``."""
    @cloacina.task(ids("enrich"))
    def enrich(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"enriched": True}

    node = cloacina.subworkflow(cloacina.Workflow(ids.wf("child"), [enrich]), task_id=ids("node"))
    parent_id = sync_executor.execute(cloacina.Workflow(ids.wf(), [node]), timeout=DEADLINE)["execution_id"]
    ui = serve()
    parent = ui.ok(f"executions/{parent_id}")
    child_id = parent["task_results"][0]["child_execution_id"]
    assert parent["parent_execution_id"] is None and parent["parent_task_id"] is None
    child = ui.ok(f"executions/{child_id}")
    assert (child["parent_execution_id"], child["parent_task_id"]) == (parent_id, ids("node"))
    assert child["task_results"][0]["child_execution_id"] is None
    listed = {e["execution_id"]: (e["parent_execution_id"], e["parent_task_id"])
              for e in ui.ok("executions")["executions"]}
    assert listed == {parent_id: (None, None), child_id: (parent_id, ids("node"))}


def test_unknown_and_malformed_ids(serve: Callable[..., Running]) -> None:
    ui = serve()
    unknown = ui.get(f"executions/{uuid.uuid4()}")
    assert unknown.status == 404 and "no execution" in unknown.json()["error"]
    for bad in ("nope", "1234", quote("'; drop table x; --")):
        response = ui.get(f"executions/{bad}")
        assert response.status == 400 and "not an execution id" in response.json()["error"]
    assert ui.get("workflows/").status == 404


def test_large_context_values_are_truncated(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                            flows: Dict[str, Any]) -> None:
    big = "x" * 20_000
    result = sync_executor.execute(flows["ok"], {"big": big, "small": [1, 2], "size": 3}, timeout=DEADLINE)
    detail = serve().ok(f"executions/{result['execution_id']}")
    for context in (detail["input_context"], detail["final_context"]):
        assert context["big"] == {"truncated": True, "size": len(json.dumps(big)), "preview": json.dumps(big)[:200]}
        assert context["small"] == [1, 2]
    assert detail["final_context"]["second"] == 3


def test_markup_in_records_comes_back_as_json_data(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                                   flows: Dict[str, Any]) -> None:
    result = sync_executor.execute(flows["xss"], {"note": XSS}, timeout=DEADLINE)
    ui = serve()
    response = ui.get(f"executions/{result['execution_id']}")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    detail = response.json()
    assert [r["task_id"] for r in detail["task_results"]] == [flows["markup_task"]]
    assert detail["input_context"]["note"] == XSS and detail["final_context"]["label"] == XSS
    assert b"<" not in response.body  # written as \u003c: never markup, even to a sniffing client
    workflow = ui.ok(f"workflows/{quote(flows['xss'].name, safe='')}")
    assert workflow["executions"][0]["task_counts"] == {"Completed": 1}


def test_workflow_history(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                          flows: Dict[str, Any]) -> None:
    made = run_some(sync_executor, flows, ok=3, bad=0)
    cancelled = sync_executor.submit(flows["ok"], {"i": 99})
    sync_executor.cancel(cancelled)
    sync_executor.wait(cancelled, timeout=DEADLINE)
    ui = serve()
    history = ui.ok(f"workflows/{quote(flows['ok'].name, safe='')}")
    assert history["name"] == flows["ok"].name
    assert [e["execution_id"] for e in history["executions"]][1:] == list(reversed(made))
    status = history["executions"][0]["status"]
    expected = {"Cancelled": 0.75, "Completed": 1.0}[status]  # the cancel may lose the race
    assert history["success_rate"] == pytest.approx(expected)
    points = history["durations"]
    assert [p["execution_id"] for p in points[:3]] == made  # oldest first
    assert all(set(p) == {"execution_id", "started_at", "seconds", "status"} and p["seconds"] >= 0 for p in points)
    limited = ui.ok(f"workflows/{quote(flows['ok'].name, safe='')}?limit=2")
    assert len(limited["executions"]) == 2
    empty = ui.ok("workflows/no.such.workflow")
    assert empty["executions"] == [] and empty["success_rate"] is None and empty["durations"] == []
    assert ui.get("workflows/x?limit=0").status == 400


def test_workers_and_schedules(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                               flows: Dict[str, Any], ids: Any) -> None:
    sync_executor.schedule(flows["ok"], "0 3 * * *", name=ids("nightly"))
    ui = serve()

    def same_as_the_api() -> Optional[List[List[Dict[str, Any]]]]:
        # A heartbeat between the two reads changes heartbeat_at: read both again until they agree.
        workers = ui.ok("workers")["workers"]
        return [workers] if workers == json.loads(json.dumps(sync_executor.list_workers())) else None

    (workers,) = wait_until(same_as_the_api, "the UI's workers are list_workers()'s")
    assert any(w["pid"] == os.getpid() and w["alive"] for w in workers)
    schedules = ui.ok("schedules")["schedules"]
    assert [s["name"] for s in schedules] == [ids("nightly")] and schedules[0]["cron"] == "0 3 * * *"


def test_limits_lists_stored_limits_by_name(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                            ids: Any) -> None:
    ui = serve()
    assert ui.ok("limits") == {"limits": []}
    sync_executor.set_limit(ids("x"), concurrency=2)
    sync_executor.set_limit(ids("tenant:*"), rate=500, per=60)
    limits = ui.ok("limits")["limits"]
    # By name; a "*" default has no running or waiting count of its own.
    assert limits == [
        {"name": ids("tenant:*"), "concurrency": None, "rate": 500, "per": 60.0, "running": None, "waiting": None},
        {"name": ids("x"), "concurrency": 2, "rate": None, "per": 1.0, "running": 0, "waiting": 0},
    ]
    assert limits == sync_executor.list_limits()


# --- read only ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head_are_allowed(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                       flows: Dict[str, Any], method: str) -> None:
    (execution_id,) = run_some(sync_executor, flows, ok=1, bad=0)
    ui = serve()
    response = ui.get(f"executions/{execution_id}", method=method, data=b"{}" if method != "OPTIONS" else None)
    assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"
    assert "read-only" in response.json()["error"]
    assert sync_executor.get_execution(execution_id)["status"] == "Completed"
    head = ui.get("health", method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers["Content-Length"]) > 0


# --- safety ------------------------------------------------------------------------------------

def test_binding_off_loopback_needs_a_token(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOACINA_UI_TOKEN", raising=False)
    for host in ("0.0.0.0", "", "192.0.2.1"):
        with pytest.raises(UiConfigError, match="without a token"):
            make_server(database_url, host=host, port=0)
    monkeypatch.setenv("CLOACINA_UI_TOKEN", "")
    with pytest.raises(UiConfigError, match="CLOACINA_UI_TOKEN"):
        make_server(database_url, host="0.0.0.0", port=0)
    server = make_server(database_url, host="0.0.0.0", port=0, token="t0ken")
    server.server_close()
    monkeypatch.setenv("CLOACINA_UI_TOKEN", "from-env")
    server = make_server(database_url, host="0.0.0.0", port=0)
    try:
        assert server.token == "from-env"
    finally:
        server.server_close()


def test_a_token_is_required_on_every_request(serve: Callable[..., Running]) -> None:
    token = "s3cret-t0ken"
    ui = serve(token=token)
    for path, headers in (("health", {}), ("health", {"Authorization": "Bearer wrong"}),
                          ("health?token=wrong", {}), ("executions", {"Authorization": f"Basic {token}"}),
                          ("nothing", {})):
        response = ui.get(path, headers=headers)
        assert response.status == 401, (path, headers)
        assert "token" in response.json()["error"] and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert ui.get("executions", method="POST").status == 401
    assert ui.get("health", headers={"Authorization": f"Bearer {token}"}).status == 200
    assert ui.get(f"health?token={token}").status == 200
    page = ui.get(f"executions?token={token}&limit=3")
    assert page.status == 200 and page.json()["limit"] == 3
    assert all(token.encode() not in body for body in ui.bodies)


def test_a_foreign_host_header_is_refused_without_a_token(serve: Callable[..., Running]) -> None:
    ui = serve()
    assert ui.get("health", headers={"Host": "evil.example:80"}).status == 403
    assert ui.get("health", headers={"Host": f"localhost:{ui.server.port}"}).status == 200


def test_no_body_or_log_holds_the_database_url(serve: Callable[..., Running], sync_executor: cloacina.SyncExecutor,
                                               flows: Dict[str, Any], database_url: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cloacina.ui")
    run_some(sync_executor, flows, ok=1, bad=1)
    ui = serve(token="tok-abc")
    auth = {"Authorization": "Bearer tok-abc"}
    for path in ("", "health", "executions", "executions/nope", f"executions/{uuid.uuid4()}", "workers",
                 "schedules", "limits", f"workflows/{quote(flows['ok'].name, safe='')}", "executions?limit=x", "nothing"):
        ui.get(path, headers=auth)
    ui.get("executions", method="DELETE", headers=auth)
    ui.get("health?token=tok-abc")
    for key in ("TOKEN", "Token"):  # no credential in another case, but the token all the same
        ui.get(f"health?{key}=tok-abc", headers=auth)
    parts = urlsplit(database_url)
    secrets = [database_url, parts.password or "", parts.path if parts.scheme.startswith("sqlite") else ""]
    secrets = [s for s in secrets if s and len(s) > 3]
    assert secrets
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "GET /api/health" in logged and "tok-abc" not in logged
    for secret in secrets:
        assert all(secret.encode() not in body for body in ui.bodies), secret
        assert secret not in logged


# --- the command line --------------------------------------------------------------------------

def test_cli_serves_until_sigterm(database_url: str, subprocess_env: Dict[str, str], tmp_path: Path) -> None:
    env = dict(subprocess_env, CLOACINA_BACKEND=BACKEND)
    env.pop("CLOACINA_DATABASE_URL", None)
    env.pop("CLOACINA_UI_TOKEN", None)
    stdout_path, stderr_path = tmp_path / "ui.out", tmp_path / "ui.err"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cloacina", "--db", database_url, "ui", "--port", "0"],
                                cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        def bound_url() -> Optional[str]:
            assert proc.poll() is None, f"exited {proc.returncode}: {stderr_path.read_text()}"
            for word in stdout_path.read_text().split():
                if word.startswith("http://"):
                    return word
            return None

        url = wait_until(bound_url, "the URL on stdout")
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/")
        health = request(url + "health")
        assert health.status == 200 and health.json()["ok"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0, stderr_path.read_text()
        output = stdout_path.read_text() + stderr_path.read_text()
        assert database_url not in output and "Traceback" not in output
        password = urlsplit(database_url).password
        assert not password or password not in output
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=DEADLINE)


def test_cli_refuses_a_public_address_without_a_token(database_url: str, subprocess_env: Dict[str, str],
                                                      tmp_path: Path) -> None:
    env = dict(subprocess_env, CLOACINA_BACKEND=BACKEND)
    env.pop("CLOACINA_UI_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "cloacina", "--db", database_url, "ui", "--host", "0.0.0.0",
                           "--port", "0"], cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("cloacina: error: refusing to serve") and "CLOACINA_UI_TOKEN" in proc.stderr
    assert database_url not in proc.stdout + proc.stderr


def test_a_password_in_the_database_url_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    """A PostgreSQL URL with a password that cannot connect (or that SQLite refuses): the error
    raised by make_server, and the log, do not hold the password."""
    import socket

    caplog.set_level(logging.DEBUG)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    password = "UiS3cretPw0rd"
    with pytest.raises(Exception) as raised:
        make_server(f"postgresql://cloacina_ui:{password}@127.0.0.1:{port}/nowhere", port=0)
    assert password not in str(raised.value) and password not in repr(raised.value)
    assert password not in "\n".join(record.getMessage() for record in caplog.records)

"""OpenTelemetry spans: an execution under the caller's span, its attempts under it.

Runs when opentelemetry-sdk is installed (the test environments install it); one test checks
that without the package nothing of it is imported.
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from backend import cl, run_snippet

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider():
    """One SDK provider for the process (OpenTelemetry allows setting it once)."""
    current = trace.get_tracer_provider()
    if not isinstance(current, sdk.TracerProvider):
        current = sdk.TracerProvider()
        trace.set_tracer_provider(current)
    current.add_span_processor(SimpleSpanProcessor(EXPORTER))
    yield


def spans_of(execution_id: str) -> List[Any]:
    return [s for s in EXPORTER.get_finished_spans()
            if s.attributes.get("cloacina.execution_id") == execution_id]


async def test_execution_and_attempt_spans(executor, ids):
    failures: List[int] = []

    @cl.task(task_id=ids("load"))
    def load(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {"rows": 3}

    @cl.task(task_id=ids("sum"), dependencies=[load], retries=1, retry_delay=0)
    async def add(ctx: Dict[str, Any]) -> Dict[str, Any]:
        if not failures:
            failures.append(1)
            raise ValueError("flaky")
        return {"total": ctx["rows"]}

    wf = cl.Workflow(ids.wf(), tasks=[add])
    with trace.get_tracer("tests").start_as_current_span("caller") as caller:
        result = await executor.execute(wf)
    assert result["status"] == "Completed", result
    spans = spans_of(result["execution_id"])
    [execution] = [s for s in spans if s.name == f"cloacina.execution {wf.name}"]
    attempts = sorted((s for s in spans if s.name.startswith("cloacina.task ")),
                      key=lambda s: (s.start_time, s.attributes["cloacina.attempt"]))
    assert execution.parent is not None and execution.parent.span_id == caller.get_span_context().span_id
    assert execution.status.status_code == StatusCode.OK
    assert execution.attributes["cloacina.workflow_name"] == wf.name
    assert execution.attributes["cloacina.status"] == "Completed"
    assert [e.name for e in execution.events] == ["cloacina.retry"]
    assert [(s.attributes["cloacina.task_id"], s.attributes["cloacina.attempt"], s.status.status_code)
            for s in attempts] == [
        (ids("load"), 1, StatusCode.OK),
        (ids("sum"), 1, StatusCode.ERROR),
        (ids("sum"), 2, StatusCode.OK),
    ]
    assert all(s.parent.span_id == execution.context.span_id for s in attempts)
    assert all(s.context.trace_id == caller.get_span_context().trace_id for s in attempts)
    assert "ValueError: flaky" in attempts[1].status.description


async def test_failed_execution_span_is_an_error(executor, ids):
    @cl.task(task_id=ids("boom"))
    def boom(ctx: Dict[str, Any]) -> Dict[str, Any]:
        raise RuntimeError("no disk")

    result = await executor.execute(cl.Workflow(ids.wf(), tasks=[boom]))
    assert result["status"] == "Failed"
    [execution] = [s for s in spans_of(result["execution_id"]) if s.name.startswith("cloacina.execution")]
    assert execution.status.status_code == StatusCode.ERROR
    assert execution.attributes["cloacina.status"] == "Failed"


async def test_submit_then_wait_closes_the_span(executor, ids):
    @cl.task(task_id=ids("one"))
    def one(ctx: Dict[str, Any]) -> Dict[str, Any]:
        return {}

    execution_id = await executor.submit(cl.Workflow(ids.wf(), tasks=[one]))
    result = await executor.wait(execution_id, timeout=60)
    assert result["status"] == "Completed"
    names = [s.name for s in spans_of(execution_id)]
    assert names.count(f"cloacina.execution {ids.wf()}") == 1


def test_without_opentelemetry_nothing_is_imported(subprocess_env, database_url):
    code = (
        "import sys, importlib.abc, asyncio\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'opentelemetry':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from backend import cl\n"
        "@cl.task(task_id='plain.one')\n"
        "def one(ctx):\n"
        "    return {'ok': True}\n"
        "async def main():\n"
        "    ex = cl.UnifiedExecutor()\n"
        "    await ex.initialize()\n"
        "    r = await ex.execute(cl.Workflow('plain', tasks=[one]))\n"
        "    await ex.shutdown()\n"
        "    print(r['status'], [m for m in sys.modules if m.startswith('opentelemetry') or m.endswith('_tracing')])\n"
        "asyncio.run(main())\n"
    )
    proc = run_snippet(code, dict(subprocess_env, CLOACINA_DATABASE_URL=database_url))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Completed []"

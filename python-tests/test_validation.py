"""Every kind of bad input is rejected with the documented exception."""

from __future__ import annotations

import asyncio
import math

import pytest

from backend import cl


# --- exception hierarchy ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, extra_base",
    [
        ("DatabaseError", None),
        ("WorkflowError", ValueError),
        ("ConfigurationError", ValueError),
        ("NotInitializedError", RuntimeError),
        ("ContextError", TypeError),
    ],
)
def test_exception_hierarchy(name, extra_base):
    cls = getattr(cl, name)
    assert issubclass(cl.CloacinaError, Exception)
    assert issubclass(cls, cl.CloacinaError)
    if extra_base is not None:
        assert issubclass(cls, extra_base)


def test_module_version():
    assert isinstance(cl.__version__, str) and cl.__version__


# --- task decorator --------------------------------------------------------------------------

def test_task_rejects_non_callable(ids):
    with pytest.raises(TypeError):
        cl.task(ids("x"))(42)


@pytest.mark.parametrize("arity", [0, 2])
def test_task_rejects_wrong_arity(ids, arity):
    if arity == 0:
        def fn():
            return {}
    else:
        def fn(a, b):
            return {}
    with pytest.raises((TypeError, ValueError)) as info:
        cl.task(ids("x"))(fn)
    assert str(info.value)


def test_task_rejects_wrong_arity_async(ids):
    async def fn(a, b):
        return {}

    with pytest.raises((TypeError, ValueError)):
        cl.task(ids("x"))(fn)


@pytest.mark.parametrize("bad_id", [123, b"bytes", ["list"]])
def test_task_rejects_non_str_id(bad_id):
    with pytest.raises(TypeError) as info:
        cl.task(bad_id)(lambda ctx: None)
    assert str(info.value)


def test_task_rejects_empty_id():
    with pytest.raises((ValueError, TypeError)) as info:
        cl.task("")(lambda ctx: None)
    assert str(info.value)


@pytest.mark.parametrize("bad_dep", [42, None, 3.5, b"bytes"])
def test_task_rejects_bad_dependency(ids, bad_dep):
    with pytest.raises((TypeError, ValueError)) as info:
        cl.task(ids("x"), dependencies=[bad_dep])(lambda ctx: None)
    assert str(info.value)


def test_task_rejects_undecorated_function_dependency(ids):
    def plain(ctx):
        return {}

    with pytest.raises((TypeError, ValueError)):
        cl.task(ids("x"), dependencies=[plain])(lambda ctx: None)


# --- workflow graph --------------------------------------------------------------------------

def test_cycle_raises_workflow_error_naming_cycle(ids):
    @cl.task(ids("a"), dependencies=[ids("c")])
    def a(ctx):
        return {}

    @cl.task(ids("b"), dependencies=[a])
    def b(ctx):
        return {}

    @cl.task(ids("c"), dependencies=[b])
    def c(ctx):
        return {}

    with pytest.raises(cl.WorkflowError) as info:
        cl.Workflow(ids.wf(), [a])
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, cl.CloacinaError)
    message = str(info.value)
    for name in ("a", "b", "c"):
        assert ids(name) in message


def test_self_dependency_is_rejected(ids):
    """Either the decorator refuses it (ValueError) or the workflow reports a cycle."""

    def selfish(ctx):
        return {}

    with pytest.raises(ValueError) as info:
        cl.task(ids("selfish"), dependencies=[ids("selfish")])(selfish)
        cl.Workflow(ids.wf(), [ids("selfish")])
    assert ids("selfish") in str(info.value)


def test_unknown_dependency_names_both_ids(ids):
    @cl.task(ids("needy"), dependencies=[ids("ghost")])
    def needy(ctx):
        return {}

    with pytest.raises(cl.WorkflowError) as info:
        cl.Workflow(ids.wf(), [needy])
    assert ids("needy") in str(info.value)
    assert ids("ghost") in str(info.value)


def test_unknown_task_id(ids):
    with pytest.raises(cl.WorkflowError) as info:
        cl.Workflow(ids.wf(), [ids("never_registered")])
    assert ids("never_registered") in str(info.value)


def test_empty_task_list():
    with pytest.raises(cl.WorkflowError):
        cl.Workflow("empty", [])


def test_duplicate_tasks(ids):
    @cl.task(ids("dup"))
    def dup(ctx):
        return {}

    with pytest.raises(cl.WorkflowError):
        cl.Workflow(ids.wf(), [dup, dup])


def test_duplicate_task_given_by_id_and_function(ids):
    @cl.task(ids("dup"))
    def dup(ctx):
        return {}

    with pytest.raises(cl.WorkflowError):
        cl.Workflow(ids.wf(), [ids("dup"), dup])


# --- executor construction and initialize ----------------------------------------------------

@pytest.mark.parametrize("bad", [0, -1])
def test_max_concurrency_must_be_positive(bad):
    with pytest.raises(ValueError):
        cl.UnifiedExecutor(max_concurrency=bad)


@pytest.mark.parametrize("bad", ["2", 1.5])
def test_max_concurrency_must_be_int(bad):
    with pytest.raises((TypeError, ValueError)):
        cl.UnifiedExecutor(max_concurrency=bad)


def test_max_concurrency_none_is_not_a_positive_int():
    with pytest.raises((TypeError, ValueError)):
        cl.UnifiedExecutor(max_concurrency=None)


@pytest.mark.parametrize(
    "url",
    ["", "mysql://user@host/db", "sqlite:/x", "http://example.com/db", "http://", "redis://localhost:6379"],
)
async def test_initialize_rejects_bad_urls_without_touching_anything(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.ConfigurationError) as info:
        await ex.initialize(url)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, cl.CloacinaError)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.sqlite_only
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_postgres_url_points_to_postgres_package_without_password(scheme):
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.ConfigurationError) as info:
        await ex.initialize(f"{scheme}://user:s3cretpw@host/db")
    message = str(info.value)
    assert "cloacina-postgres" in message
    assert "s3cretpw" not in message
    assert "s3cretpw" not in repr(info.value)


async def test_bad_url_message_does_not_echo_password():
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.ConfigurationError) as info:
        await ex.initialize("mysql://admin:hunter2pw@db.internal:3306/app")
    assert "hunter2pw" not in str(info.value)


@pytest.mark.parametrize("bad", [42, b"x.db", 3.5])
async def test_initialize_rejects_non_str_url(bad):
    """None is not here: it means the default database (test_defaults.py)."""
    ex = cl.UnifiedExecutor()
    with pytest.raises(TypeError):
        await ex.initialize(bad)


@pytest.mark.sqlite_only
@pytest.mark.parametrize("form", ["relative_url", "absolute_url", "absolute_path", "relative_path"])
async def test_initialize_accepts_sqlite_forms(tmp_path, monkeypatch, ids, form):
    monkeypatch.chdir(tmp_path)
    target = {
        "relative_url": ("sqlite:///rel.db", tmp_path / "rel.db"),
        "absolute_url": (f"sqlite:///{tmp_path / 'abs.db'}", tmp_path / "abs.db"),
        "absolute_path": (str(tmp_path / "plain.db"), tmp_path / "plain.db"),
        "relative_path": ("relplain.db", tmp_path / "relplain.db"),
    }
    url, expected_file = target[form]
    if form == "absolute_url":
        assert url.startswith("sqlite:////")

    @cl.task(ids("t"))
    def t(ctx):
        return {"form": form}

    ex = cl.UnifiedExecutor()
    await ex.initialize(url)
    try:
        result = await ex.execute(cl.Workflow(ids.wf(), [t]))
    finally:
        await ex.shutdown()
    assert result["final_context"] == {"form": form}
    assert expected_file.is_file() and expected_file.stat().st_size > 0


@pytest.mark.parametrize("bad", ["4", 1.5, True, [4]])
async def test_pool_size_must_be_an_int(database_url, bad):
    ex = cl.UnifiedExecutor()
    with pytest.raises(TypeError) as info:
        await ex.initialize(database_url, pool_size=bad)
    assert "pool_size" in str(info.value)


@pytest.mark.parametrize("bad", [0, -1])
async def test_pool_size_must_be_positive(database_url, bad):
    ex = cl.UnifiedExecutor()
    with pytest.raises(ValueError) as info:
        await ex.initialize(database_url, pool_size=bad)
    assert "pool_size" in str(info.value)


async def test_pool_size_and_schema_are_keyword_only(database_url):
    ex = cl.UnifiedExecutor()
    with pytest.raises(TypeError):
        await ex.initialize(database_url, None, 4)


async def test_one_connection_serves_concurrent_executions(database_url, ids):
    @cl.task(ids("a"))
    async def a(ctx):
        return {"a": ctx["i"]}

    @cl.task(ids("b"), dependencies=[a])
    def b(ctx):
        return {"b": ctx["a"] * 2}

    wf = cl.Workflow(ids.wf(), [b])
    ex = cl.UnifiedExecutor()
    await ex.initialize(database_url, pool_size=1)
    try:
        results = await asyncio.wait_for(asyncio.gather(*(ex.execute(wf, {"i": i}) for i in range(8))), timeout=40)
    finally:
        await ex.shutdown()
    assert [r["status"] for r in results] == ["Completed"] * 8
    assert [r["final_context"]["b"] for r in results] == [i * 2 for i in range(8)]


@pytest.mark.sqlite_only
@pytest.mark.parametrize("schema", ["tenant_a", "Tenant"])
async def test_schema_is_rejected_on_sqlite(tmp_path, schema):
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.ConfigurationError) as info:
        await ex.initialize(f"sqlite:///{tmp_path / 'x.db'}", schema=schema)
    assert "schema" in str(info.value)
    assert list(tmp_path.iterdir()) == []


# --- executor lifecycle ----------------------------------------------------------------------

async def test_execute_before_initialize(ids):
    @cl.task(ids("t"))
    def t(ctx):
        return {}

    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.NotInitializedError) as info:
        await ex.execute(cl.Workflow(ids.wf(), [t]))
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, cl.CloacinaError)
    assert "initialize" in str(info.value)


async def test_execute_after_failed_initialize(ids):
    @cl.task(ids("t"))
    def t(ctx):
        return {}

    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.ConfigurationError):
        await ex.initialize("mysql://nowhere/db")
    with pytest.raises(cl.NotInitializedError):
        await ex.execute(cl.Workflow(ids.wf(), [t]))


async def test_execute_after_shutdown(database_url, ids):
    @cl.task(ids("t"))
    def t(ctx):
        return {}

    wf = cl.Workflow(ids.wf(), [t])
    ex = cl.UnifiedExecutor()
    await ex.initialize(database_url)
    assert (await ex.execute(wf))["status"] == "Completed"
    await ex.shutdown()
    with pytest.raises(cl.NotInitializedError):
        await ex.execute(wf)


async def test_get_execution_unknown_and_invalid_ids(executor):
    assert await executor.get_execution("00000000-0000-4000-8000-000000000000") is None
    with pytest.raises(ValueError):
        await executor.get_execution("not-a-uuid")


# --- context validation ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "context, path, type_name",
    [
        ({"a": {1, 2}}, "context['a']", "set"),
        ({"a": b"raw"}, "context['a']", "bytes"),
        ({"a": (1, 2)}, "context['a']", "tuple"),
        ({"a": object()}, "context['a']", "object"),
        ({"a": [0, {"b": {3}}]}, "context['a'][1]['b']", "set"),
        ({"a": [{"b": bytearray(b"x")}]}, "context['a'][0]['b']", "bytearray"),
        ({"outer": {"inner": [1, 2, complex(1, 2)]}}, "context['outer']['inner'][2]", "complex"),
        ({1: "x"}, "context", "int"),
        ({"a": {2: "x"}}, "context['a']", "int"),
    ],
)
async def test_invalid_input_context(executor, ids, context, path, type_name):
    ran = []

    @cl.task(ids("t"))
    def t(ctx):
        ran.append(True)
        return {}

    with pytest.raises(cl.ContextError) as info:
        await executor.execute(cl.Workflow(ids.wf(), [t]), context)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, cl.CloacinaError)
    assert path in str(info.value)
    assert type_name in str(info.value)
    assert ran == []


@pytest.mark.parametrize("context", [[1, 2], "text", 5, ("a", 1)])
async def test_non_dict_context(executor, ids, context):
    @cl.task(ids("t"))
    def t(ctx):
        return {}

    with pytest.raises(cl.ContextError) as info:
        await executor.execute(cl.Workflow(ids.wf(), [t]), context)
    assert type(context).__name__ in str(info.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_non_finite_floats_rejected(executor, ids, value):
    @cl.task(ids("t"))
    def t(ctx):
        return {}

    with pytest.raises(cl.ContextError) as info:
        await executor.execute(cl.Workflow(ids.wf(), [t]), {"x": [value]})
    assert "context['x'][0]" in str(info.value)

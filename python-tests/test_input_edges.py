"""Inputs that databases cannot store or that are not what they seem are refused with a clear
message where they are given, the same on every backend."""

from __future__ import annotations

import pytest

from backend import cl


def test_nul_in_a_task_id_is_refused_when_decorating(ids):
    with pytest.raises(ValueError, match="NUL"):
        cl.task(ids("a\x00b"))(lambda ctx: None)


def test_nul_in_a_workflow_name_is_refused_when_building(ids):
    @cl.task(ids("t"))
    def t(ctx):
        return None

    with pytest.raises(ValueError, match="NUL"):
        cl.Workflow(ids.wf("w\x00x"), [t])


async def test_an_execution_id_with_a_lone_surrogate_says_so(executor):
    for method in (executor.cancel, executor.get_execution, executor.wait, executor.resume):
        with pytest.raises(ValueError, match="surrogate"):
            await method("\ud800")


async def test_an_execution_id_that_is_not_a_str_is_a_type_error(executor):
    with pytest.raises(TypeError, match="must be a str, got int"):
        await executor.cancel(5)

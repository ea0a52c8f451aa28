"""Cron schedules: the API and its checks, and fires made by real worker processes.

Fires are read back as executions: each carries its fire time under ``fire_time`` in its input
context. Worker processes are ``durable_worker.py``; the test process schedules through a
submit-only executor (``client``), so it never fires anything itself.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

import pytest

from backend import cl, parse_ts
from durable_worker import define
from procs import (DEADLINE, Procs, client, control, effects, finished, procs, ready,  # noqa: F401
                   stopped, summary, until)

EVERY_SECOND = "* * * * * *"


def fire_time(execution: Dict[str, Any]) -> datetime:
    return parse_ts(execution["input_context"]["fire_time"])


async def fires(executor: Any, workflow: str) -> List[Dict[str, Any]]:
    """The executions of ``workflow``, oldest fire first."""
    executions = await executor.list_executions(workflow=workflow, limit=10_000)
    return sorted(executions, key=fire_time)


def seconds(executions: List[Dict[str, Any]]) -> List[int]:
    return [int(fire_time(e).timestamp()) for e in executions]


async def wait_clock_past(moment: float) -> None:
    """Waits until the wall clock is past ``moment`` (a time.time() value)."""
    await until(lambda: time.time() > moment, what=f"the clock to pass {moment}", timeout=120)


# --- the API ---------------------------------------------------------------------------------


async def test_schedule_stores_and_lists(client, ids, tmp_path):
    wf = define(ids.prefix, str(tmp_path / "e.log"), str(tmp_path)).wf("chain")
    before = datetime.now(timezone.utc)
    name = await client.schedule(wf, "*/5 * * * *", context={"run": "x"})
    assert name == wf.name
    [listed] = await client.list_schedules()
    assert set(listed) == {"name", "workflow_name", "cron", "timezone", "catchup", "context", "paused",
                           "next_fire_time", "last_fire_time", "last_execution_id", "created_at",
                           "updated_at"}
    assert listed["name"] == name and listed["workflow_name"] == wf.name
    assert (listed["cron"], listed["timezone"], listed["catchup"]) == ("*/5 * * * *", "UTC", "latest")
    assert listed["context"] == {"run": "x"} and listed["paused"] is False
    assert listed["last_fire_time"] is None and listed["last_execution_id"] is None
    next_fire = parse_ts(listed["next_fire_time"])
    assert before < next_fire <= before + timedelta(minutes=5)
    assert next_fire.minute % 5 == 0 and next_fire.second == 0


async def test_scheduling_a_name_again_updates_it(client, ids, tmp_path):
    wf = define(ids.prefix, str(tmp_path / "e.log"), str(tmp_path)).wf("chain")
    await client.schedule(wf, "0 3 * * *", name="nightly", context={"v": 1})
    [first] = await client.list_schedules()
    await client.schedule(wf, "0 3 * * *", name="nightly", context={"v": 2}, catchup="all")
    [same_cron] = await client.list_schedules()
    assert same_cron["context"] == {"v": 2} and same_cron["catchup"] == "all"
    # The next fire is kept: fires missed before a redeploy still catch up.
    assert same_cron["next_fire_time"] == first["next_fire_time"]
    assert same_cron["created_at"] == first["created_at"]
    await client.schedule(wf, "0 3 * * *", name="nightly", timezone="Asia/Tokyo")
    [moved] = await client.list_schedules()
    assert parse_ts(moved["next_fire_time"]).astimezone(timezone(timedelta(hours=9))).hour == 3
    await client.schedule(wf, "@hourly", name="hourly")
    assert [s["name"] for s in await client.list_schedules()] == ["hourly", "nightly"]


async def test_processes_scheduling_one_name_at_once_never_collide(database_url, ids, tmp_path):
    """Every worker of a deployment may call schedule() at start-up, at the same moment."""
    wf = define(ids.prefix, str(tmp_path / "e.log"), str(tmp_path)).wf("chain")
    executors = [cl.UnifiedExecutor() for _ in range(4)]
    for ex in executors:
        await ex.initialize(database_url, worker=False)
    try:
        for round_ in range(10):
            await asyncio.gather(*(ex.schedule(wf, "@daily", name=f"startup{round_}", context={"by": i})
                                   for i, ex in enumerate(executors)))
        listed = await executors[0].list_schedules()
        assert [s["name"] for s in listed] == [f"startup{r}" for r in range(10)]
    finally:
        for ex in executors:
            await ex.shutdown()


async def test_timezone_and_aliases(client, ids, tmp_path):
    wf = define(ids.prefix, str(tmp_path / "e.log"), str(tmp_path)).wf("chain")
    await client.schedule(wf, "30 2 * * *", name="ny", timezone="America/New_York")
    await client.schedule(wf, "@daily", name="daily")
    await client.schedule(wf, "0 */10 * * * *", name="six-fields")
    listed = {s["name"]: parse_ts(s["next_fire_time"]) for s in await client.list_schedules()}
    from zoneinfo import ZoneInfo
    ny = listed["ny"].astimezone(ZoneInfo("America/New_York"))
    assert (ny.hour, ny.minute) == (2, 30) or ny.hour == 3  # 03:00 only on a spring-forward day
    assert (listed["daily"].hour, listed["daily"].minute) == (0, 0)
    assert listed["six-fields"].minute % 10 == 0 and listed["six-fields"].second == 0


@pytest.mark.parametrize("kwargs, error, needle", [
    ({"cron": "61 * * * *"}, cl.ConfigurationError, "61 * * * *"),
    ({"cron": "* * *"}, cl.ConfigurationError, "3 fields"),
    ({"cron": "* * * * * * *"}, cl.ConfigurationError, "7 fields"),
    ({"cron": "@often"}, cl.ConfigurationError, "@often"),
    ({"cron": "0 0 30 2 *"}, cl.ConfigurationError, "never fires"),
    ({"cron": 5}, TypeError, "cron must be a str"),
    ({"timezone": "Mars/Olympus"}, cl.ConfigurationError, "Mars/Olympus"),
    ({"timezone": None}, TypeError, "timezone must be"),
    ({"catchup": "sometimes"}, cl.ConfigurationError, "sometimes"),
    ({"name": ""}, cl.ConfigurationError, "schedule name"),
    ({"name": 7}, TypeError, "name must be"),
    ({"context": {"bad": object()}}, cl.ContextError, "bad"),
    ({"context": ["not", "a", "dict"]}, cl.ContextError, "context"),
])
async def test_bad_input_is_refused_and_nothing_stored(client, ids, tmp_path, kwargs, error, needle):
    wf = define(ids.prefix, str(tmp_path / "e.log"), str(tmp_path)).wf("chain")
    args = {"cron": "* * * * *", **kwargs}
    cron = args.pop("cron")
    with pytest.raises(error) as raised:
        await client.schedule(wf, cron, **args)
    assert needle in str(raised.value)
    if error is cl.ConfigurationError:
        assert isinstance(raised.value, ValueError)
    assert await client.list_schedules() == []


async def test_a_workflow_is_required(client):
    with pytest.raises(TypeError, match="schedule\\(\\) expects a Workflow, got str"):
        await client.schedule("etl", "* * * * *")
    assert await client.list_schedules() == []


@pytest.mark.parametrize("method", ["pause_schedule", "resume_schedule", "unschedule"])
async def test_unknown_names_raise_schedule_not_found(client, method):
    with pytest.raises(cl.ScheduleNotFoundError, match='"nope"') as raised:
        await getattr(client, method)("nope")
    assert isinstance(raised.value, LookupError)
    assert isinstance(raised.value, cl.CloacinaError)


async def test_pause_resume_and_unschedule_change_the_stored_schedule(client, ids, tmp_path):
    wf = define(ids.prefix, str(tmp_path / "e.log"), str(tmp_path)).wf("chain")
    await client.schedule(wf, "@hourly", name="h")
    await client.pause_schedule("h")
    [paused] = await client.list_schedules()
    assert paused["paused"] is True
    await client.pause_schedule("h")  # pausing twice is harmless
    await client.schedule(wf, "@hourly", name="h", context={"again": True})
    [still] = await client.list_schedules()
    assert still["paused"] is True, "scheduling again keeps an operator's pause"
    await client.resume_schedule("h")
    [resumed] = await client.list_schedules()
    assert resumed["paused"] is False
    assert parse_ts(resumed["next_fire_time"]) > datetime.now(timezone.utc)
    await client.unschedule("h")
    assert await client.list_schedules() == []


async def test_the_executor_must_be_initialized():
    ex = cl.UnifiedExecutor()
    with pytest.raises(cl.NotInitializedError):
        await ex.list_schedules()


# --- fires -----------------------------------------------------------------------------------


async def test_an_in_process_worker_fires_every_second(executor, ids, tmp_path):
    wf = define(ids.prefix, str(tmp_path / "e.log"), str(tmp_path)).wf("chain")
    await executor.schedule(wf, EVERY_SECOND, context={"run": "tick", "k": [1, 2]})

    async def three_done() -> bool:
        done = [e for e in await fires(executor, wf.name) if e["status"] == "Completed"]
        return len(done) >= 3

    await until(three_done, what="three completed fires")
    await executor.unschedule(wf.name)
    made = await fires(executor, wf.name)
    stamps = seconds(made)
    assert stamps == list(range(stamps[0], stamps[0] + len(stamps))), stamps
    for e in made:
        assert set(e["input_context"]) == {"run", "k", "fire_time"}
        assert e["input_context"]["k"] == [1, 2]
        assert fire_time(e).microsecond == 0
        assert parse_ts(e["started_at"]) >= fire_time(e)


@pytest.mark.timeout(180)
async def test_three_workers_make_each_fire_exactly_once(database_url, client, procs, ids, effects, control):
    t = define(ids.prefix, str(effects), str(control))
    wf = t.wf("chain")
    workers = [procs.start_worker(database_url, ids.prefix, effects, control, name=f"w{i}") for i in range(3)]
    await ready(*workers)
    await client.schedule(wf, EVERY_SECOND, context={"run": "tick"})

    async def six_fires() -> bool:
        return len(await fires(client, wf.name)) >= 6

    await until(six_fires, what="six fires", timeout=60, watch=workers)
    await client.unschedule(wf.name)
    made = await fires(client, wf.name)
    stamps = seconds(made)
    assert len(stamps) == len(set(stamps)), f"a fire was made twice: {stamps}"
    assert stamps == list(range(stamps[0], stamps[0] + len(stamps))), f"a fire was skipped: {stamps}"
    records = [await finished(client, e["execution_id"], procs=procs) for e in made]
    assert all(r["status"] == "Completed" for r in records), [summary(r) for r in records]
    lateness = [(parse_ts(e["started_at"]) - fire_time(e)).total_seconds() for e in made]
    print(f"\nfire lateness over {len(made)} fires, 3 workers: median {statistics.median(lateness) * 1000:.1f} ms, "
          f"max {max(lateness) * 1000:.1f} ms")


def seconds_ahead(now: float, offsets: List[int]) -> List[datetime]:
    """The whole seconds ``now + offset`` (rounded up), as UTC datetimes."""
    base = int(now) + 1
    return [datetime.fromtimestamp(base + o, timezone.utc) for o in offsets]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("catchup, expected", [("none", []), ("latest", [2]), ("all", [0, 1, 2])])
async def test_fires_missed_while_no_worker_ran(database_url, client, procs, ids, effects, control,
                                                 catchup, expected):
    """Three fires fall due while no worker runs; a worker that starts afterwards applies the mode."""
    wf = define(ids.prefix, str(effects), str(control)).wf("chain")
    missed = seconds_ahead(time.time(), [2, 3, 4])
    cron = ",".join(str(m.second) for m in missed) + " * * * * *"
    await client.schedule(wf, cron, context={"run": "late"}, catchup=catchup)
    [stored] = await client.list_schedules()
    assert parse_ts(stored["next_fire_time"]) == missed[0]
    await wait_clock_past(missed[-1].timestamp() + 1)

    worker = procs.start_worker(database_url, ids.prefix, effects, control)
    await ready(worker)

    async def moved_on() -> bool:
        [s] = await client.list_schedules()
        return parse_ts(s["next_fire_time"]) > missed[-1]

    await until(moved_on, what="the worker to handle the missed fires", watch=[worker])
    made = await fires(client, wf.name)
    assert [fire_time(e) for e in made] == [missed[i] for i in expected]
    for e in made:
        record = await finished(client, e["execution_id"], procs=procs)
        assert record["status"] == "Completed", summary(record)
    [after] = await client.list_schedules()
    if expected:
        assert parse_ts(after["last_fire_time"]) == missed[expected[-1]]
        assert after["last_execution_id"] == made[-1]["execution_id"]
    else:
        assert after["last_fire_time"] is None


@pytest.mark.timeout(180)
async def test_pause_resume_and_unschedule_reach_other_processes(database_url, client, procs, ids, effects,
                                                                 control):
    wf = define(ids.prefix, str(effects), str(control)).wf("chain")
    workers = [procs.start_worker(database_url, ids.prefix, effects, control, name=f"w{i}") for i in range(2)]
    await ready(*workers)
    await client.schedule(wf, EVERY_SECOND, context={"run": "p"})

    async def fired_after(moment: float) -> bool:
        return any(fire_time(e).timestamp() > moment for e in await fires(client, wf.name))

    await until(lambda: fired_after(0), what="a first fire", watch=workers)
    await client.pause_schedule(wf.name)
    paused_at = time.time()
    await wait_clock_past(paused_at + 3)
    assert not await fired_after(paused_at), "a paused schedule fired"

    await client.resume_schedule(wf.name)
    resumed_at = time.time()
    await until(lambda: fired_after(resumed_at), what="a fire after resuming", watch=workers)
    during_pause = [s for s in seconds(await fires(client, wf.name)) if paused_at < s < resumed_at - 1]
    assert during_pause == [], "fires due while paused are skipped, not caught up"

    await client.unschedule(wf.name)
    removed_at = time.time()
    await wait_clock_past(removed_at + 3)
    assert not await fired_after(removed_at), "a removed schedule fired"
    assert await client.list_schedules() == []

"""Scale-out and failover benchmarks for durable executions on PostgreSQL (worker processes).

Usage: python benches/scale_out.py --url postgresql://USER@HOST:PORT/DB [--quick]
       [--repeats N] [--failover-repeats N] [--shape single|executions|fanout|chains|map|all ...]

The URL must let us create schemas (the admin URL of ``angreal task benchmarks``' throwaway server).
Every measurement runs in a fresh schema ``bench_so_<pid>_<hex>_*`` (``initialize(url, schema=...)``),
dropped at the end with ``psql`` when it is installed. This script is both the parent and, when
started with ``--worker``, a worker process: every process registers the same task ids (of every
shape), derived from the ``--prefix`` the parent passes on the command line (workers find a task's
function by its id).

1. Scale-out. For W = 1, 2, 4 worker processes (``max_concurrency=8`` each), the parent
   (``worker=False``) submits tasks that each ``await asyncio.sleep(0.02)`` and waits for all of
   them. Shapes (``--shape``, may be repeated, ``all`` = every one; default ``single``):
   - ``single``: ONE execution of 400 independent root tasks: all are ready at submit, every worker
     claims batches of them, and each commit of a batch claims further ready tasks of the same
     execution for the slots it frees. It spread at least as well as ``executions`` in our runs
     (2 cores: 1.8-2.0x vs 1.7-1.8x with 2 workers, 2.4-2.6x vs 2.2-2.6x with 4).
   - ``executions``: 20 executions of 20 independent tasks.
   - ``fanout``: ONE execution of a root task -> 1,000 parallel tasks (1,001 tasks). The root is
     there on purpose: ``single`` already covers tasks that are all ready at submit; here the 1,000
     become ready at once when the root completes, and the workers must spread them from there.
   - ``map``: ONE execution of a root task returning a list of 2,000 items -> a task mapped over it
     (``map_over``), so 2,000 instances made at run time (dynamic fan-out), spread as ``fanout``'s.
   - ``chains``: 500 executions of the chain t0 -> t1 -> t2 -> t3 (2,000 tasks), all submitted at
     once (concurrently), then all waited: many executions, each with one ready task at a time.
   Workers start, report ready and run one untimed warm-up round; then each timed round (fresh
   executions) measures from the first submit to the last ``wait`` returning. Each table gives
   medians of tasks/s, the factor against W = 1 (goal: >= 3.5x with 4 workers), how the timed tasks
   were shared between the workers, how busy the machine's CPUs were meanwhile (host CPU busy %)
   and the machine's busy CPU time per task run (CPU ms per task: busy jiffies of /proc/stat during
   the round / SC_CLK_TCK / tasks; every process on the machine, PostgreSQL included). If tasks/s
   stops growing while host CPU busy % nears 100 the CPUs are the limit; if it stops growing with
   CPU to spare (and CPU ms per task flat), something waits: a lock or a serial step. The ideal is
   the tasks over the time W * 8 slots need for them, 20 ms a slot-step: ~400 * W tasks/s for
   ``single``/``executions``, the root's 20 ms added for ``fanout``, and for ``chains`` at least
   the chain's 4 steps (80 ms; with 500 chains the slots bind first). ``os.cpu_count()`` is printed
   too: with few cores the CPU of the workers and of PostgreSQL (and of anything else running), not
   the engine, may be the limit.

2. Failover, on a 2-task chain ``block -> after`` whose ``block`` writes a marker file (pid, host,
   time) and then sleeps until a release file appears (only created after its re-run started, so the
   first attempt in effect sleeps forever). Time is measured from just after the SIGKILL to the time
   written in the re-run's marker; after that the execution must complete with ``block``'s history
   ``Lost, Completed``.

   (a) Same machine (lease_timeout=30 s): the only worker runs ``block``; it is SIGKILLed (and reaped
       at once: a zombie still has its /proc entry) and a new worker process is started immediately;
       at startup it sees that the dead worker's pid is gone and runs ``block`` again. The time
       includes starting Python, importing and initializing the new worker (shown separately).
   (b) Lease expiry (lease_timeout=2 s): the victim runs under another host name
       (``unshare --uts sh -c 'hostname otherbench && exec python ...'``), so its pid cannot be
       checked; it claims ``block``, then a survivor worker is started, and after a random pause of
       0 to lease seconds (so the kill falls at a random point of both heartbeat cycles) the victim
       is SIGKILLed; the survivor runs ``block`` again at its first heartbeat (every lease/3) that
       finds the victim's last heartbeat older than the lease: expect lease * 2/3 to lease * 4/3
       (1.33-2.67 s). Skipped, with the reason, when ``unshare --uts`` is not allowed.

Every child process is killed (SIGKILL, by pid) and reaped whatever happens; every wait has a
deadline. Workers also die with this process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

SCRIPT = Path(__file__).resolve()
MODULE = "cloacina_postgres"

TOTAL_TASKS = 400          # single / executions
PER_EXECUTION = 20         # executions
FANOUT_WIDTH = 1000        # fanout: root -> this many parallel tasks
MAP_WIDTH = 2000           # map: root -> a task mapped over this many items
CHAINS = 500               # chains: executions submitted at once ...
CHAIN_LENGTH = 4           # ... of the chain t0 -> t1 -> t2 -> t3
SHAPES = ("single", "executions", "fanout", "chains", "map")
TASK_SLEEP = 0.02
MAX_CONCURRENCY = 8
WORKER_COUNTS = (1, 2, 4)
GOAL_FACTOR = 3.5
SAME_HOST_LEASE = 30.0
EXPIRY_LEASE = 2.0
OTHER_HOSTNAME = "otherbench"

READY_DEADLINE = 60.0      # a worker process starts, imports and initializes
ROUND_DEADLINE = 120.0     # one scale-out round
MARKER_DEADLINE = 60.0     # a task starts (again)
STOP_DEADLINE = 30.0       # a worker exits after SIGTERM
POLL = 0.005

Context = Dict[str, Any]


# --- tasks (identical in every process) --------------------------------------------------------

def scale_task_ids(prefix: str) -> List[str]:
    return [f"{prefix}.t{i:03d}" for i in range(TOTAL_TASKS)]


def fanout_ids(prefix: str) -> List[str]:
    return [f"{prefix}.f{i:04d}" for i in range(FANOUT_WIDTH)]


def chain_ids(prefix: str) -> List[str]:
    return [f"{prefix}.c{k}" for k in range(CHAIN_LENGTH)]


def register_scale_tasks(cl: ModuleType, prefix: str, counts: Optional[Dict[str, int]] = None) -> None:
    """Registers every shape's sleeping tasks; ``counts[run]`` counts the ones this process ran."""

    def sleeper(tid: str, dependencies: Sequence[Any] = (), **options: Any) -> Any:
        async def body(ctx: Context) -> None:
            await asyncio.sleep(TASK_SLEEP)
            if counts is not None:
                run = str(ctx.get("run", "-"))
                counts[run] = counts.get(run, 0) + 1
            return None

        return cl.task(tid, dependencies=list(dependencies), **options)(body)

    for tid in scale_task_ids(prefix):
        sleeper(tid)
    root = sleeper(f"{prefix}.froot")
    for tid in fanout_ids(prefix):
        sleeper(tid, [root])
    previous = None
    for tid in chain_ids(prefix):
        previous = sleeper(tid, [previous] if previous is not None else [])

    @cl.task(f"{prefix}.mroot")
    async def map_root(ctx: Context) -> Context:
        await asyncio.sleep(TASK_SLEEP)
        if counts is not None:
            run = str(ctx.get("run", "-"))
            counts[run] = counts.get(run, 0) + 1
        return {"items": list(range(MAP_WIDTH))}

    sleeper(f"{prefix}.mnode", [map_root], map_over="items")


def scale_workflows(cl: ModuleType, prefix: str, shape: str) -> List[Any]:
    """The workflows one round submits (all at once), in order."""
    if shape == "single":
        return [cl.Workflow(f"{prefix}.all", scale_task_ids(prefix))]
    if shape == "executions":
        ids = scale_task_ids(prefix)
        return [cl.Workflow(f"{prefix}.wf{j:02d}", ids[j:j + PER_EXECUTION])
                for j in range(0, TOTAL_TASKS, PER_EXECUTION)]
    if shape == "fanout":
        return [cl.Workflow(f"{prefix}.fanout", fanout_ids(prefix))]
    if shape == "map":
        return [cl.Workflow(f"{prefix}.map", [f"{prefix}.mnode"])]
    return [cl.Workflow(f"{prefix}.chain", [chain_ids(prefix)[-1]])] * CHAINS


def shape_tasks(shape: str) -> int:
    """Tasks one round runs."""
    return {"fanout": 1 + FANOUT_WIDTH, "map": 1 + MAP_WIDTH,
            "chains": CHAINS * CHAIN_LENGTH}.get(shape, TOTAL_TASKS)


def ideal_rate(shape: str, workers: int) -> float:
    """Tasks/s if every slot (``workers * MAX_CONCURRENCY``) ran a ready task at all times, nothing else."""
    slots = workers * MAX_CONCURRENCY
    if shape in ("fanout", "map"):  # the root alone, then the leaves
        steps = 1 + -(-(shape_tasks(shape) - 1) // slots)
    elif shape == "chains":  # no chain can finish before its length
        steps = max(-(-CHAINS * CHAIN_LENGTH // slots), CHAIN_LENGTH)
    else:
        steps = -(-TOTAL_TASKS // slots)
    return shape_tasks(shape) / (steps * TASK_SLEEP)


def shape_layout(shape: str) -> str:
    return {"single": f"1 execution of {TOTAL_TASKS} independent tasks",
            "executions": f"{TOTAL_TASKS // PER_EXECUTION} executions x {PER_EXECUTION} independent tasks",
            "fanout": f"1 execution of a root task -> {FANOUT_WIDTH} parallel tasks",
            "map": f"1 execution of a root task -> a task mapped over its {MAP_WIDTH} items",
            "chains": f"{CHAINS} executions of a {CHAIN_LENGTH}-task chain, all submitted at once"}[shape]


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def register_failover_tasks(cl: ModuleType, prefix: str) -> Any:
    """``block -> after``; ``block`` writes ``<markers>/start_<pid>.json`` and waits for ``<markers>/release``."""

    async def block(ctx: Context) -> Context:
        markers = Path(ctx["markers"])
        write_json(markers / f"start_{os.getpid()}.json",
                   {"pid": os.getpid(), "host": socket.gethostname(), "t": time.time()})
        while not (markers / "release").exists():
            await asyncio.sleep(0.01)
        return {"blocked_by": os.getpid()}

    async def after(ctx: Context) -> Context:
        return {"after": True}

    first = cl.task(f"{prefix}.block")(block)
    cl.task(f"{prefix}.after", dependencies=[first])(after)
    return cl.Workflow(f"{prefix}.failover", [f"{prefix}.after"])


# --- worker process ----------------------------------------------------------------------------

def die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when the parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(3)


async def worker_main(args: argparse.Namespace) -> int:
    die_with_parent(args.parent)
    cl = __import__(MODULE)
    counts: Dict[str, int] = {}
    if args.role == "scale":
        register_scale_tasks(cl, args.prefix, counts)
    else:
        register_failover_tasks(cl, args.prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    executor = cl.UnifiedExecutor(max_concurrency=MAX_CONCURRENCY)
    await executor.initialize(args.url, schema=args.schema, lease_timeout=args.lease, worker=True)
    try:
        write_json(Path(args.ready), {"pid": os.getpid(), "host": socket.gethostname(), "t": time.time()})
        await stop.wait()
    finally:
        await executor.shutdown()
    if args.counts:
        write_json(Path(args.counts), counts)
    return 0


# --- child processes ---------------------------------------------------------------------------

@dataclass
class Child:
    name: str
    popen: "subprocess.Popen[bytes]"
    log: Path
    ready: Path
    counts: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> Optional[float]:
        """SIGKILL by pid and reap at once; returns time.time() just after the signal was sent."""
        sent: Optional[float] = None
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGKILL)
                sent = time.time()
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            print(f"warning: {self.name} (pid {self.pid}) not reaped {STOP_DEADLINE:.0f}s after SIGKILL",
                  file=sys.stderr)
        return sent

    def ready_info(self) -> Optional[Dict[str, Any]]:
        try:
            return json.loads(self.ready.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def output(self, tail: int = 3000) -> str:
        try:
            text = self.log.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            text = ""
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"--- {self.name} (pid {self.pid}, {state})\n{text}"


@dataclass
class Children:
    """Every process this script starts; ``close`` kills and reaps whatever still runs."""

    url: str
    workdir: Path
    prefix: str
    started: List[Child] = field(default_factory=list)

    def start(self, name: str, schema: str, role: str, lease: float, other_host: bool = False) -> Child:
        log = self.workdir / f"{name}.log"
        ready = self.workdir / f"{name}.ready.json"
        counts = self.workdir / f"{name}.counts.json"
        argv = [sys.executable, str(SCRIPT), "--worker", "--url", self.url, "--schema", schema,
                "--prefix", self.prefix, "--role", role, "--lease", str(lease), "--ready", str(ready),
                "--counts", str(counts), "--parent", str(os.getpid())]
        if other_host:
            inner = f"hostname {OTHER_HOSTNAME} && exec {shlex.join(argv)}"
            argv = ["unshare", "--uts", "sh", "-c", inner]
        with open(log, "wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        child = Child(name, popen, log, ready, counts)
        self.started.append(child)
        return child

    def stop(self, child: Child) -> None:
        """SIGTERM and wait (bounded); SIGKILL if it does not exit."""
        if child.alive():
            os.kill(child.pid, signal.SIGTERM)
        try:
            child.popen.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            print(f"warning: {child.name} did not exit within {STOP_DEADLINE:.0f}s of SIGTERM; killing it",
                  file=sys.stderr)
            child.kill()

    def close(self) -> None:
        for child in self.started:
            child.kill()

    def describe(self) -> str:
        return "\n".join(c.output() for c in self.started if c.alive() or c.popen.returncode not in (0, -9))


class BenchError(Exception):
    pass


async def until(condition: Callable[[], Any], what: str, timeout: float, watch: Sequence[Child] = ()) -> Any:
    """Polls ``condition`` until it returns something truthy; fails past ``timeout`` or if a watched child exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for child in watch:
            if not child.alive():
                raise BenchError(f"{child.name} exited while waiting for {what}\n{child.output()}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(POLL)


async def ready(*children: Child) -> None:
    for child in children:
        await until(child.ready_info, f"{child.name} ready", READY_DEADLINE, [child])


async def finished(client: Any, execution_id: str, timeout: float) -> Dict[str, Any]:
    try:
        return await asyncio.wait_for(client.wait(execution_id, timeout=timeout), timeout + 5)
    except (TimeoutError, asyncio.TimeoutError):
        record = await client.get_execution(execution_id)
        status = record.get("status") if record else "<unknown>"
        raise BenchError(f"execution {execution_id} not finished after {timeout:.0f}s (status {status})") from None


async def submit_only(cl: ModuleType, url: str, schema: str) -> Any:
    client = cl.UnifiedExecutor()
    await client.initialize(url, schema=schema, worker=False)
    return client


# --- 1. scale-out ------------------------------------------------------------------------------

@dataclass
class Round:
    """One timed scale-out round."""

    wall: float             # first submit -> last wait returned, seconds
    submit: float           # first submit -> every submit returned
    span: float             # first task attempt started -> last one completed, by the stored timestamps
    busy: Optional[float]   # the machine's CPU busy share meanwhile (Linux)
    busy_jiffies: Optional[int] = None  # the machine's busy CPU time meanwhile, clock ticks (Linux)


@dataclass
class ScaleResult:
    shape: str
    workers: int
    rounds: List[Round]
    shares: List[int]  # tasks each worker ran in the timed rounds

    @property
    def walls(self) -> List[float]:
        return [r.wall for r in self.rounds]

    def rates(self) -> List[float]:
        return [shape_tasks(self.shape) / w for w in self.walls]

    def cpu_ms_per_task(self) -> Optional[float]:
        """The machine's busy CPU time per task run, median over the rounds, milliseconds."""
        ticks = [r.busy_jiffies for r in self.rounds if r.busy_jiffies is not None]
        if not ticks:
            return None
        return statistics.median(ticks) / CLOCK_TICKS * 1000 / shape_tasks(self.shape)


def cpu_times() -> Optional[Tuple[int, int]]:
    """(busy, total) jiffies of all CPUs of this machine (Linux), or None."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


try:
    CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    CLOCK_TICKS = 100


def busy_share(before: Optional[Tuple[int, int]], after: Optional[Tuple[int, int]]) -> Optional[float]:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def instance_attempts(client: Any, execution_id: str, task_id: str, run: str) -> List[Dict[str, Any]]:
    """Every instance of a mapped task, each checked to have Completed at its first attempt."""
    instances: List[Dict[str, Any]] = []
    while True:
        page = await client.list_task_instances(execution_id, task_id, offset=len(instances), limit=1000)
        instances += page
        if len(page) < 1000:
            break
    for instance in instances:
        if (instance["status"], instance["attempts"]) != ("Completed", 1):
            raise BenchError(f"round {run}: instance {instance['map_index']} of {task_id}: "
                             f"{instance['status']} after {instance['attempts']} attempt(s)")
    return instances


async def scale_round(client: Any, workflows: List[Any], run: str, shape: str) -> Round:
    """Submits every workflow once and waits for all; checks each task ran once and completed."""
    cpu_before = cpu_times()
    started = time.perf_counter()
    ids = await asyncio.gather(*(client.submit(wf, {"run": run}) for wf in workflows))
    submitted = time.perf_counter()
    records = await asyncio.gather(*(finished(client, e, ROUND_DEADLINE) for e in ids))
    wall = time.perf_counter() - started
    cpu_after = cpu_times()
    busy = busy_share(cpu_before, cpu_after)
    jiffies = None if cpu_before is None or cpu_after is None else cpu_after[0] - cpu_before[0]
    attempts = []
    for record in records:
        if record["status"] != "Completed":
            raise BenchError(f"round {run}: execution {record['execution_id']} {record['status']}: {record['error']}")
        for tr in record["task_results"]:
            if tr["map"] is not None:  # a mapped task: its instances are the attempts
                attempts += await instance_attempts(client, record["execution_id"], tr["task_id"], run)
                continue
            statuses = [h["status"] for h in tr["history"]]
            if statuses != ["Completed"]:
                raise BenchError(f"round {run}: task {tr['task_id']} history {statuses}")
            attempts.append(tr["history"][0])
    span = max(timestamp(a["completed_at"]) for a in attempts) - min(timestamp(a["started_at"]) for a in attempts)
    if len(attempts) != shape_tasks(shape):
        raise BenchError(f"round {run}: {len(attempts)} task results, expected {shape_tasks(shape)}")
    return Round(wall, submitted - started, span, busy, jiffies)


async def scale_out(cl: ModuleType, children: Children, tag: str, shape: str, repeats: int) -> List[ScaleResult]:
    workflows = scale_workflows(cl, children.prefix, shape)
    results = []
    for w in WORKER_COUNTS:
        schema = f"{tag}_scale_{shape}_w{w}"
        client = await submit_only(cl, children.url, schema)  # creates and migrates the schema first
        workers: List[Child] = []
        try:
            workers = [children.start(f"scale_{shape}_w{w}_{i}", schema, "scale", SAME_HOST_LEASE) for i in range(w)]
            await ready(*workers)
            await scale_round(client, workflows, "warmup", shape)
            rounds = []
            for r in range(repeats):
                rounds.append(await scale_round(client, workflows, f"r{r}", shape))
                print(f"  scale-out {shape} {w} worker(s) round {r + 1}: "
                      f"{shape_tasks(shape) / rounds[-1].wall:,.0f} tasks/s",
                      file=sys.stderr, flush=True)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{children.describe()}") from None
        finally:
            for child in workers:
                children.stop(child)
            await client.shutdown()
        shares = []
        for child in workers:
            try:
                counts = json.loads(child.counts.read_text())
            except (FileNotFoundError, ValueError):
                raise BenchError(f"{child.name} wrote no task counts\n{child.output()}") from None
            shares.append(sum(n for run, n in counts.items() if run != "warmup"))
        if sum(shares) != shape_tasks(shape) * repeats:
            raise BenchError(f"{shape}: {w} workers ran {sum(shares)} timed tasks, "
                             f"expected {shape_tasks(shape) * repeats}")
        results.append(ScaleResult(shape, w, rounds, shares))
    return results


# --- 2. failover -------------------------------------------------------------------------------

@dataclass
class FailoverResult:
    seconds: List[float]          # kill -> re-run started
    replacement_ready: List[float] = field(default_factory=list)  # kill -> new worker ready (a only)


def markers_of(directory: Path) -> List[Dict[str, Any]]:
    found = []
    for path in directory.glob("start_*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except ValueError:
            pass
    return found


def check_failover_record(record: Dict[str, Any], prefix: str) -> None:
    if record["status"] != "Completed":
        raise BenchError(f"failover execution {record['status']}: {record['error']}")
    for tr in record["task_results"]:
        statuses = [h["status"] for h in tr["history"]]
        expected = ["Lost", "Completed"] if tr["task_id"] == f"{prefix}.block" else ["Completed"]
        if statuses != expected:
            raise BenchError(f"failover: {tr['task_id']} history {statuses}, expected {expected}")


async def failover_once(cl: ModuleType, children: Children, schema: str, markers: Path, *,
                        expiry: bool) -> Tuple[float, Optional[float]]:
    """One kill; returns (kill -> re-run started, kill -> replacement ready or None)."""
    lease = EXPIRY_LEASE if expiry else SAME_HOST_LEASE
    client = await submit_only(cl, children.url, schema)
    workflow = register_failover_tasks(cl, children.prefix)
    markers.mkdir()
    name = schema.rsplit("_", 2)[-2:]
    try:
        victim = children.start(f"victim_{'_'.join(name)}", schema, "failover", lease, other_host=expiry)
        await ready(victim)
        info = victim.ready_info() or {}
        if expiry and info.get("host") != OTHER_HOSTNAME:
            raise BenchError(f"victim reports host {info.get('host')!r}, expected {OTHER_HOSTNAME!r}")
        execution = await client.submit(workflow, {"markers": str(markers)})
        first = await until(lambda: markers_of(markers), "the victim to start block", MARKER_DEADLINE, [victim])
        if first[0]["pid"] != victim.pid:
            raise BenchError(f"block started in pid {first[0]['pid']}, not in the victim {victim.pid}")
        survivor: Optional[Child] = None
        if expiry:
            survivor = children.start(f"survivor_{'_'.join(name)}", schema, "failover", lease)
            await ready(survivor)
            paused = time.monotonic()
            # Its first heartbeat was at startup: a random pause puts the kill at a random point of
            # the survivor's (and the victim's) heartbeat cycle instead of always right after a beat.
            pause = random.uniform(0.0, lease)
            await until(lambda: time.monotonic() - paused > pause, "the pause before the kill", lease + 5,
                        [victim, survivor])
        killed_at = victim.kill()
        if killed_at is None:
            raise BenchError(f"the victim had exited before the kill\n{victim.output()}")
        if not expiry:
            survivor = children.start(f"replacement_{'_'.join(name)}", schema, "failover", lease)
        assert survivor is not None
        rerun = await until(lambda: [m for m in markers_of(markers) if m["pid"] != victim.pid],
                            "block to start again", MARKER_DEADLINE, [survivor])
        if rerun[0]["pid"] != survivor.pid:
            raise BenchError(f"block re-ran in pid {rerun[0]['pid']}, not in {survivor.pid}")
        (markers / "release").write_text("go")
        check_failover_record(await finished(client, execution, MARKER_DEADLINE), children.prefix)
        replacement_ready = None if expiry else (survivor.ready_info() or {}).get("t", float("nan")) - killed_at
        children.stop(survivor)
        return rerun[0]["t"] - killed_at, replacement_ready
    except BenchError as exc:
        raise BenchError(f"{exc}\n{children.describe()}") from None
    finally:
        await client.shutdown()


async def failover(cl: ModuleType, children: Children, tag: str, repeats: int, *, expiry: bool) -> FailoverResult:
    result = FailoverResult([])
    kind = "lease" if expiry else "local"
    for i in range(repeats):
        seconds, replacement = await failover_once(cl, children, f"{tag}_fo_{kind}_{i}",
                                                   children.workdir / f"markers_{kind}_{i}", expiry=expiry)
        result.seconds.append(seconds)
        if replacement is not None:
            result.replacement_ready.append(replacement)
        print(f"  failover ({kind}) {i + 1}: {seconds:.3f} s", file=sys.stderr, flush=True)
    return result


def uts_namespace_problem() -> Optional[str]:
    """Why ``unshare --uts`` cannot be used here, or None."""
    if shutil.which("unshare") is None:
        return "`unshare` (util-linux) is not installed"
    if shutil.which("hostname") is None:
        return "`hostname` is not installed"
    try:
        proc = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`unshare --uts true` did not run: {exc}"
    if proc.returncode != 0:
        return f"`unshare --uts true` failed ({proc.returncode}): {proc.stderr.strip()} (needs root or CAP_SYS_ADMIN)"
    return None


# --- report ------------------------------------------------------------------------------------

def table(header: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def report_scale(results: List[ScaleResult], shape: str, repeats: int) -> str:
    base = statistics.median(results[0].rates())
    rows = []
    for res in results:
        rates = res.rates()
        median = statistics.median(rates)
        factor = f"{median / base:.2f}x"
        if res.workers == WORKER_COUNTS[-1]:
            verdict = "met" if median / base >= GOAL_FACTOR else "NOT met"
            factor += f" (goal >= {GOAL_FACTOR}x: {verdict})"
        total = sum(res.shares) or 1
        shares = "/".join(f"{100 * n / total:.0f}" for n in res.shares)
        busy_values = [r.busy for r in res.rounds if r.busy is not None]
        busy = f"{100 * statistics.median(busy_values):.0f}" if busy_values else "-"
        cpu = res.cpu_ms_per_task()
        rows.append([str(res.workers), f"{median:,.0f} ({min(rates):,.0f}-{max(rates):,.0f})",
                     f"{statistics.median(res.walls) * 1000:.0f}",
                     f"{statistics.median(r.submit for r in res.rounds) * 1000:.0f}",
                     f"{statistics.median(r.span for r in res.rounds) * 1000:.0f}", factor,
                     f"{ideal_rate(shape, res.workers):,.0f}", shares, busy, "-" if cpu is None else f"{cpu:.2f}"])
    title = (f"Scale-out ({shape}): {shape_tasks(shape)} tasks x asyncio.sleep({TASK_SLEEP}) as "
             f"{shape_layout(shape)}; "
             f"max_concurrency={MAX_CONCURRENCY} per worker process; median of {repeats} timed round(s) "
             f"after a warm-up; os.cpu_count()={os.cpu_count()}")
    notes = (f"wall: first submit -> last wait returned (tasks/s = {shape_tasks(shape)} / wall); submit: until "
             "every submit returned; tasks: first task start -> last task end as stored; CPU ms per task: the "
             "machine's busy CPU time in the round (all processes) / tasks run; all medians")
    return title + "\n" + table(["workers", "tasks/s median (min-max)", "wall ms", "submit ms", "tasks ms",
                                 "vs 1 worker", "ideal tasks/s", "share per worker %", "host CPU busy %",
                                 "CPU ms per task"],
                                rows) + "\n" + notes


def report_failover(local: Optional[FailoverResult], expiry: Optional[FailoverResult], skipped: Optional[str],
                    repeats: int) -> str:
    def stats(values: List[float]) -> List[str]:
        return [f"{statistics.median(values):.3f}", f"{min(values):.3f}", f"{max(values):.3f}"]

    rows = []
    if local is not None:
        note = (f"new worker process started after the kill; it was ready after "
                f"{statistics.median(local.replacement_ready):.3f} s (median)")
        rows.append(["(a) same host: pid check", *stats(local.seconds), f"{SAME_HOST_LEASE:g} s", note])
    if expiry is not None:
        rows.append(["(b) other host: lease expiry", *stats(expiry.seconds), f"{EXPIRY_LEASE:g} s",
                     f"survivor already running; victim under hostname {OTHER_HOSTNAME}; "
                     f"heartbeat every {EXPIRY_LEASE / 3:.2f} s"])
    elif skipped:
        rows.append(["(b) other host: lease expiry", "-", "-", "-", f"{EXPIRY_LEASE:g} s", f"SKIPPED: {skipped}"])
    title = (f"Failover: SIGKILL of the worker running the first task of a 2-task chain -> that task running "
             f"again; seconds, {repeats} repeats")
    return title + "\n" + table(["case", "median s", "min s", "max s", "lease_timeout", "notes"], rows)


def psql_binary() -> Optional[str]:
    found = shutil.which("psql")
    if found:
        return found
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        for version in sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name)):
            if (version / "bin" / "psql").is_file():
                return str(version / "bin" / "psql")
    return None


def drop_schemas(url: str, tag: str) -> None:
    psql = psql_binary()
    if psql is None:
        print(f"note: psql not found; schemas {tag}_* are left in the database", file=sys.stderr)
        return
    sql = (f"DO $$ DECLARE s text; BEGIN FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE '{tag}\\_%' "
           f"LOOP EXECUTE format('DROP SCHEMA %I CASCADE', s); END LOOP; END $$;")
    try:
        proc = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            print(f"note: could not drop schemas {tag}_*: {proc.stderr.strip()}", file=sys.stderr)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"note: could not drop schemas {tag}_*: {exc}", file=sys.stderr)


# --- main --------------------------------------------------------------------------------------

async def bench(args: argparse.Namespace, children: Children, tag: str) -> str:
    cl = __import__(MODULE)
    register_scale_tasks(cl, children.prefix)
    reports = []
    for shape in args.shapes:
        print(f"scale-out {shape} ({args.repeats} rounds per worker count) ...", file=sys.stderr, flush=True)
        reports.append(report_scale(await scale_out(cl, children, tag, shape, args.repeats), shape, args.repeats))
    print(f"failover, same host ({args.failover_repeats} repeats) ...", file=sys.stderr, flush=True)
    local = await failover(cl, children, tag, args.failover_repeats, expiry=False)
    skipped = uts_namespace_problem()
    expiry = None
    if skipped is None:
        print(f"failover, lease expiry ({args.failover_repeats} repeats) ...", file=sys.stderr, flush=True)
        expiry = await failover(cl, children, tag, args.failover_repeats, expiry=True)
    else:
        print(f"failover, lease expiry: skipped: {skipped}", file=sys.stderr, flush=True)
    return ("\n\n".join(reports) + "\n\n"
            + report_failover(local, expiry, skipped, args.failover_repeats))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="PostgreSQL URL of a role that may create schemas")
    p.add_argument("--quick", action="store_true", help="1 scale-out round per worker count, 2 failover repeats")
    p.add_argument("--repeats", type=int, default=None, help="timed scale-out rounds per worker count (default 3)")
    p.add_argument("--failover-repeats", type=int, default=None, help="kills per failover case (default 5)")
    p.add_argument("--shape", choices=[*SHAPES, "all"], action="append",
                   help="scale-out shape; may be repeated; 'all' = every shape (default: single)")
    # worker mode (started by this script)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--schema", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    p.add_argument("--role", choices=["scale", "failover"], help=argparse.SUPPRESS)
    p.add_argument("--lease", type=float, default=SAME_HOST_LEASE, help=argparse.SUPPRESS)
    p.add_argument("--ready", help=argparse.SUPPRESS)
    p.add_argument("--counts", help=argparse.SUPPRESS)
    p.add_argument("--parent", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return asyncio.run(worker_main(args))
    if not args.url.startswith(("postgres://", "postgresql://")):
        p.error("--url must be a PostgreSQL URL")
    args.repeats = args.repeats or (1 if args.quick else 3)
    chosen = args.shape or ["single"]
    args.shapes = [s for s in SHAPES if s in chosen or "all" in chosen]
    args.failover_repeats = args.failover_repeats or (2 if args.quick else 5)

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    tag = f"bench_so_{os.getpid()}_{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="cloacina-scale-out-") as workdir:
        children = Children(args.url, Path(workdir), prefix=f"so{secrets.token_hex(4)}")
        try:
            report = asyncio.run(bench(args, children, tag))
        except BenchError as exc:
            print(f"scale_out: FAILED: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            children.close()
            drop_schemas(args.url, tag)
    print("\n" + report, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

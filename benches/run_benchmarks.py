"""Runs the benchmark scenarios against one backend and prints a table of medians and ranges.

Every measurement runs in a fresh child process, so its peak RSS is its own. Inside the child a
warm-up execution comes first, then each repetition is timed around ``await executor.execute()``.

Usage: python run_benchmarks.py --backend sqlite|postgres --url URL [--repeat 5] [--quick]
(S2L's cap is 8; the environment variable S2L_CAP sets another.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scenarios  # noqa: E402  (next to this file)


@dataclass
class Measurement:
    """The timings of one scenario, task kind and size."""

    scenario: str
    kind: str
    tasks: int
    walls: List[float]
    peak_rss_mb: float
    expands: List[float] = field(default_factory=list)

    def row(self) -> List[str]:
        median = statistics.median(self.walls)
        spread = f"{min(self.walls) * 1000:.1f}-{max(self.walls) * 1000:.1f}"
        per_task = [w / self.tasks * 1000 for w in self.walls]
        rates = [self.tasks / w for w in self.walls]
        return [
            self.scenario,
            self.kind,
            str(self.tasks),
            f"{median * 1000:.1f} ({spread})",
            f"{statistics.median(per_task):.3f} ({min(per_task):.3f}-{max(per_task):.3f})",
            f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})",
            f"{self.peak_rss_mb:.0f}",
        ]


HEADER = ["scenario", "tasks", "n", "wall ms median (min-max)", "ms/task median (min-max)", "tasks/s median (min-max)", "peak RSS MB"]


def run_child(args: List[str]) -> "tuple[str, float, float]":
    """Runs a child process; returns its stdout, wall seconds and peak RSS in MB."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = proc.stdout.read() if proc.stdout else ""
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed ({proc.returncode}):\n{stdout}\n{stderr}")
    return stdout, wall, usage.ru_maxrss / 1024


def measure(module: str, url: str, scenario: str, kind: str, size: int, repeat: int) -> Measurement:
    out, _, rss = run_child(
        [sys.executable, str(HERE / "run_benchmarks.py"), "--child", module, url, scenario, kind, str(size), str(repeat)]
    )
    result = json.loads(out.strip().splitlines()[-1])
    return Measurement(result["label"], kind, result["tasks"], result["walls"], rss, result.get("expands", []))


def measure_startup(module: str, url_for_run, repeat: int) -> Measurement:
    walls, peaks = [], []
    run_child([sys.executable, str(HERE / "s4_child.py"), module, url_for_run(-1)])  # warm the page cache
    for i in range(repeat):
        _, wall, rss = run_child([sys.executable, str(HERE / "s4_child.py"), module, url_for_run(i)])
        walls.append(wall)
        peaks.append(rss)
    return Measurement("S4 fresh process", "sync", 1, walls, max(peaks))


async def child_main(module: str, url: str, scenario: str, kind: str, size: int, repeat: int) -> None:
    cl = __import__(module)
    is_async = kind == "async"
    if scenario == "S1":
        workflow, check = scenarios.chain(cl, size, is_async)
        label, tasks = f"S1 chain {size}", size
    elif scenario == "S2":
        workflow, check = scenarios.fan(cl, size, is_async)
        label, tasks = f"S2 fan-out {size}", size + 2
    elif scenario == "S2L":
        workflow, check = scenarios.fan(cl, size, is_async, limits=["bench"])
        label, tasks = f"S2L fan-out {size}, one limit", size + 2
    elif scenario == "M":
        workflow, check = scenarios.mapped(cl, size, is_async)
        label, tasks = f"M map {size}", size + 2
    else:
        workflow, check = scenarios.payload(cl, is_async, size)
        megabytes = len(json.dumps({"rows": scenarios.rows_of(size)})) / 1e6
        label, tasks = f"S3 {megabytes:.1f} MB chain", 10
    executor = cl.UnifiedExecutor(max_concurrency=os.cpu_count() * 4 if os.cpu_count() else 8)
    await executor.initialize(url)
    if scenario == "S2L":
        await executor.set_limit("bench", concurrency=int(os.environ.get("S2L_CAP", "8")))
    check(await executor.execute(workflow))  # warm-up
    walls, expands = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        result = await executor.execute(workflow)
        walls.append(time.perf_counter() - started)
        check(result)
        if scenario == "M":
            expands.append(scenarios.map_marks["first_instance"] - scenarios.map_marks["root_end"])
    await executor.shutdown()
    print(json.dumps({"label": label, "tasks": tasks, "walls": walls, "expands": expands}))


def print_table(title: str, rows: List[List[str]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)), flush=True)


def print_map_summary(results: Dict[str, Measurement], s4: Measurement, *, quick: bool) -> None:
    """Dynamic map against S2 of the same build: expand time, instances/s, memory per item."""
    print("\ndynamic map (instances are tasks: goal, at least S2 2,000's tasks/s; RSS per item flat):")
    for kind in ("async", "sync"):
        s2 = statistics.median(2_002 / w for w in results[f"S2-2000-{kind}"].walls)
        for size in (10_000,) if quick else (10_000, 100_000):
            m = results[f"M-{size}-{kind}"]
            rate = statistics.median(size / w for w in m.walls)
            expand = statistics.median(m.expands) * 1000
            above = m.peak_rss_mb - s4.peak_rss_mb
            print(f"  M {size:>7} {kind:<5}  {rate:,.0f} instances/s ({rate / s2:.2f}x S2 2,000's {s2:,.0f}), "
                  f"root end -> first instance {expand:.0f} ms, peak RSS {m.peak_rss_mb:.0f} MB "
                  f"({above * 1024 / size:.2f} KB per item above S4's)")
        if not quick:
            small, large = results[f"M-10000-{kind}"], results[f"M-100000-{kind}"]
            per_item = (large.peak_rss_mb - small.peak_rss_mb) * 1024 / 90_000
            print(f"  M memory per extra item ({kind}): {per_item:.2f} KB (10,000 -> 100,000 items)")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--url", required=True, help="database URL (SQLite: a directory for the files)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip the growth runs")
    args = parser.parse_args(argv)
    module = f"cloacina_{args.backend}"

    def url(name: str) -> str:
        if args.backend == "sqlite":
            return str(Path(args.url) / f"{name}.db")
        return args.url

    plan = [("S1", 100), ("S2", 200), ("S2L", 200), ("S2", 2_000), ("S3", scenarios.ROWS), ("M", 10_000)]
    if not args.quick:
        plan += [("S1", 1_000), ("S1", 10_000), ("S2", 10_000), ("S3", 10 * scenarios.ROWS), ("M", 100_000)]
    rows: List[List[str]] = []
    results: Dict[str, Measurement] = {}
    for scenario, size in plan:
        for kind in ("async", "sync"):
            m = measure(module, url(f"{scenario}_{size}_{kind}"), scenario, kind, size, args.repeat)
            results[f"{scenario}-{size}-{kind}"] = m
            rows.append(m.row())
            print(f"  done: {m.scenario} {kind}", file=sys.stderr, flush=True)
    counter = iter(range(1_000_000))
    s4 = measure_startup(module, lambda i: url(f"S4_{i}_{next(counter)}"), args.repeat)
    rows.append(s4.row())
    print_table(f"Cloacina benchmarks on {args.backend} ({args.repeat} runs each, after one warm-up)", rows)
    payload_mb = scenarios.deep_size({"rows": scenarios.rows_of(scenarios.ROWS)}) / 2**20
    for kind in ("async", "sync"):
        above = results[f"S3-{scenarios.ROWS}-{kind}"].peak_rss_mb - s4.peak_rss_mb
        print(
            f"S3 {kind}: peak RSS {above:.0f} MB above S4's, {above / payload_mb:.1f}x the payload's "
            f"{payload_mb:.1f} MB in memory (target <= 2.5x)"
        )
    print_map_summary(results, s4, quick=args.quick)
    if not args.quick:
        print("\ngrowth (median per-task cost relative to the small run; target <= 1.5x):")
        for kind in ("async", "sync"):
            base1 = statistics.median(results[f"S1-100-{kind}"].walls) / 100
            for size in (1_000, 10_000):
                big = statistics.median(results[f"S1-{size}-{kind}"].walls) / size
                print(f"  S1 {size:>6} {kind:<5}  {big / base1:.2f}x")
            base2 = statistics.median(results[f"S2-200-{kind}"].walls) / 202
            big2 = statistics.median(results[f"S2-10000-{kind}"].walls) / 10_002
            print(f"  S2  10000 {kind:<5}  {big2 / base2:.2f}x")
            small, large = results[f"S2-200-{kind}"], results[f"S2-10000-{kind}"]
            per_task_kb = (large.peak_rss_mb - small.peak_rss_mb) * 1024 / (10_000 - 200)
            print(f"  S2 memory per task in flight ({kind}): {per_task_kb:.1f} KB")
            base3 = statistics.median(results[f"S3-{scenarios.ROWS}-{kind}"].walls)
            big3 = statistics.median(results[f"S3-{10 * scenarios.ROWS}-{kind}"].walls)
            print(f"  S3 10x payload {kind:<5}  {big3 / base3:.2f}x the time (linear: 10x)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        module, url, scenario, kind, size, repeat = sys.argv[2:8]
        asyncio.run(child_main(module, url, scenario, kind, int(size), int(repeat)))
    else:
        sys.exit(main())

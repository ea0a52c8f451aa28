"""Compares two installs of Cloacina on the same scenarios, their runs interleaved.

Each round runs every scenario once per install, alternating which goes first, so a machine that
gets busier or quieter during the comparison affects both alike. Each run is a fresh child
process (``run_benchmarks.py --child``) doing one warm-up execution and ``--repeat`` timed ones.

Usage: python interleaved.py --backend sqlite|postgres --url URL --before VENV --after VENV
       [--before-url URL] [--rounds 5] [--repeat 3] [--only S1,S2,S2W,S3]

``VENV`` is a virtualenv with ``cloacina-<backend>`` installed; ``URL`` is a directory for the
SQLite files, or a PostgreSQL URL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scenarios  # noqa: E402  (next to this file)

# (name, scenario, size, tasks per execution); S2W is S2 with 2,000 parallel tasks.
SCENARIOS: List[Tuple[str, str, int, int]] = [
    ("S1", "S1", 1_000, 1_000),
    ("S2", "S2", 200, 202),
    ("S2W", "S2", 2_000, 2_002),
    ("S3", "S3", scenarios.ROWS, 10),
]


def run(python: Path, module: str, url: str, scenario: str, kind: str, size: int, repeat: int) -> List[float]:
    """The timed walls (seconds) of one child run."""
    out = subprocess.run(
        [str(python), str(HERE / "run_benchmarks.py"), "--child", module, url, scenario, kind, str(size), str(repeat)],
        check=True, capture_output=True, text=True,
    ).stdout
    walls: List[float] = json.loads(out.strip().splitlines()[-1])["walls"]
    return walls


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--before-url", default=None,
                        help="PostgreSQL URL for the version before, when its schema must stay apart "
                             "(default: --url)")
    parser.add_argument("--before", type=Path, required=True, help="virtualenv of the version before")
    parser.add_argument("--after", type=Path, required=True, help="virtualenv of the version after")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(name for name, *_ in SCENARIOS),
                        help="comma-separated scenario names to run (default: all)")
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - {name for name, *_ in SCENARIOS})
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)} in --only; choose from "
                     f"{', '.join(name for name, *_ in SCENARIOS)}")
    chosen = [s for s in SCENARIOS if s[0] in wanted]
    module = f"cloacina_{args.backend}"
    pythons = {"before": args.before / "bin" / "python", "after": args.after / "bin" / "python"}
    per_task: Dict[Tuple[str, str, str], List[float]] = {}
    serial = iter(range(1_000_000))
    for round_ in range(args.rounds):
        order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
        for name, scenario, size, tasks in chosen:
            for kind in ("sync", "async"):
                for version in order:
                    url = args.before_url if version == "before" and args.before_url else args.url
                    if args.backend == "sqlite":
                        url = str(Path(args.url) / f"{version}_{name}_{kind}_{next(serial)}.db")
                    walls = run(pythons[version], module, url, scenario, kind, size, args.repeat)
                    per_task.setdefault((name, kind, version), []).extend(w / tasks * 1000 for w in walls)
        print(f"  round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"\n{args.backend}: ms/task, median (min-max) of {args.rounds} interleaved rounds x {args.repeat} runs")
    print(f"{'scenario':<14}{'kind':<7}{'before':<24}{'after':<24}change")
    for name, scenario, size, _ in chosen:
        for kind in ("sync", "async"):
            cells = []
            for version in ("before", "after"):
                values = per_task[(name, kind, version)]
                cells.append((statistics.median(values), min(values), max(values)))
            (b, bmin, bmax), (a, amin, amax) = cells
            print(f"{scenario + ' ' + str(size):<14}{kind:<7}{f'{b:.3f} ({bmin:.3f}-{bmax:.3f})':<24}"
                  f"{f'{a:.3f} ({amin:.3f}-{amax:.3f})':<24}{(a - b) / b * 100:+.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())

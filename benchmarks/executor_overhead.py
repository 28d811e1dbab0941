"""What the Ray executor costs against the serial one: the smoke preset run both ways, side by side.

    BENCHSUITE_DATA_DIR=../shared/data/hub python benchmarks/executor_overhead.py [--rounds 3] [--threads 2]

Each round runs ``benchsuite run --preset smoke --threads N`` once with ``--executor serial`` and once
with ``--executor ray`` (a local Ray instance the run starts and stops), alternating which goes first,
each into a fresh results folder and against one warm cache (a first, untimed run fine-tunes the
baselines), so both compute the same cells from the same baselines. The wall time of the whole command
is timed, start-up included. Writes ``benchmarks/results/executor_overhead.json`` with every time, the
medians, their ratio and difference, the machine and the commit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchsuite.fileio import write_text_atomic
from benchsuite.machine import cpu_model, cpu_vector_flags
from benchsuite.records import _git

ROOT = Path(__file__).resolve().parents[1]


def timed_run(executor: str, threads: int, cache: Path, results: Path) -> float:
    command = [sys.executable, "-m", "benchsuite.cli", "run", "--preset", "smoke", "--threads", str(threads),
               "--executor", executor, "--cache-dir", str(cache), "--results-dir", str(results)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cells = len(list(results.rglob("*.predictions.jsonl")))
    print(f"{executor:6} {seconds:7.1f} s  ({cells} cells)", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "executor_overhead.json")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"serial": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="benchsuite-overhead-") as tmp:
        cache = Path(tmp) / "cache"
        timed_run("serial", args.threads, cache, Path(tmp) / "warm-up")  # fine-tunes the baselines, untimed
        for round_ in range(args.rounds):
            order = ("serial", "ray") if round_ % 2 == 0 else ("ray", "serial")
            for executor in order:
                times[executor].append(timed_run(executor, args.threads, cache, Path(tmp) / f"{executor}-{round_}"))
    serial, ray = statistics.median(times["serial"]), statistics.median(times["ray"])
    git = _git()
    result = {
        "what": "wall time of 'benchsuite run --preset smoke' (the reference model, 4 tasks, the baseline cell "
                "each), serial against Ray on a local instance, warm cache, fresh results folder per run",
        "command": f"python benchmarks/executor_overhead.py --rounds {args.rounds} --threads {args.threads}",
        "threads": args.threads,
        "seconds": times,
        "median_s": {"serial": round(serial, 1), "ray": round(ray, 1)},
        "ray_over_serial": round(ray / serial, 3),
        "ray_minus_serial_s": round(ray - serial, 1),
        "machine": {"cpu": cpu_model(), "cpu_vector_flags": cpu_vector_flags(), "logical_cpus": os.cpu_count()},
        "commit": git.commit, "dirty": git.dirty,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_s", "ray_over_serial", "ray_minus_serial_s")}))


if __name__ == "__main__":
    main()

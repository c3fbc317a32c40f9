"""What the cost estimate costs, and how close it comes (issue 23's targets), in one go.

1. `study run configs/quick.toml --dry-run` on a cold cache: its wall time (target <= 10 s on
   2 cores), then the study run for real: actual over estimated (target within +-35 %).
2. The 500-run SVM sweep (benchmarks/studies/svm_sweep.toml) run from nothing (target <= 60
   s), and its live ETA's estimates alone, on a cold cache in a fresh process, as `study run`
   makes them before its first run (target <= about 10 % of the study).
3. `study status` on the finished sweep's store, median of 5 (target <= 0.5 s).

Every command runs as a user would run it, in a fresh process, with its own temporary store
and cache. Prints a markdown table; about 6 minutes on 2 cores.

    python benchmarks/estimate_cost.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnistbench.cost.estimate import Estimator
from mnistbench.cost.probe import Probes, cache_path_for
from mnistbench.measure import cpu_model
from mnistbench.study.file import load_study
from mnistbench.study.run import expand

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs" / "quick.toml"
SWEEP = REPO / "benchmarks" / "studies" / "svm_sweep.toml"
MNISTBENCH = [sys.executable, "-m", "mnistbench"]


def timed(*args: str, cache: Path) -> float:
    """Wall seconds of one mnistbench command (it must succeed)."""
    environment = os.environ | {"MNISTBENCH_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    subprocess.run([*MNISTBENCH, *args], check=True, capture_output=True, env=environment)
    return time.perf_counter() - started


def estimated_seconds(study_file: Path, store: Path) -> float:
    """The runs' estimates as the dry run made them: from the probe cache alone."""
    estimator = Estimator(Probes(cache_path_for(store)), None)
    runs = {run.key: run.spec for run in expand(load_study(study_file))}
    return sum(estimator.seconds(spec)[0] or 0.0 for spec in runs.values())


def quick_study(work: Path) -> list[tuple[str, str, str]]:
    store, cache = work / "quick" / "results.db", work / "quick-cache"
    dry = timed("study", "run", str(QUICK), "--dry-run", "--store", str(store), cache=cache)
    estimate = estimated_seconds(QUICK, store)
    actual = timed("study", "run", str(QUICK), "--quiet", "--store", str(store), cache=cache)
    return [
        ("quick.toml dry run, cold cache", f"{dry:.1f} s", "<= 10 s"),
        ("quick.toml: estimated runs / actual `study run`", f"{estimate:.0f} s / {actual:.0f} s "
         f"= {actual / estimate:.2f}", "0.65-1.35"),
    ]  # fmt: skip


ESTIMATE_ALONE = """
import sys, time
from pathlib import Path
from mnistbench.cost.estimate import live_estimates
from mnistbench.progress import PlainReporter
from mnistbench.study.file import load_study
from mnistbench.study.run import plan
from mnistbench.study.store import Store
study, store_path = load_study(Path(sys.argv[1])), Path(sys.argv[2])
with Store(store_path) as store:
    todo = plan(study, store)
    started = time.perf_counter()
    live_estimates(todo, store, PlainReporter())
    print(time.perf_counter() - started)
"""


def svm_sweep(work: Path) -> list[tuple[str, str, str]]:
    store, cache = work / "sweep" / "results.db", work / "sweep-cache"
    wall = timed("study", "run", str(SWEEP), "--store", str(store), cache=cache)
    status = statistics.median(
        timed("study", "status", "--store", str(store), cache=cache) for _ in range(5)
    )
    alone = subprocess.run(
        [sys.executable, "-c", ESTIMATE_ALONE, str(SWEEP), str(work / "cold" / "results.db")],
        check=True, capture_output=True, text=True,
        env=os.environ | {"MNISTBENCH_CACHE_DIR": str(work / "cold-cache")},
    )  # fmt: skip
    estimate = float(alone.stdout.strip().splitlines()[-1])
    return [
        ("500-run SVM sweep, `study run` from nothing", f"{wall:.1f} s", "<= 60 s"),
        ("its live estimates alone (cold cache)", f"{estimate:.1f} s = {100 * estimate / wall:.1f}"
         " % of the sweep", "<= ~10 %"),
        ("`study status` on the finished sweep (median of 5)", f"{status:.2f} s", "<= 0.5 s"),
    ]  # fmt: skip


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        rows = quick_study(work) + svm_sweep(work)
    print(f"{cpu_model()}, {os.cpu_count()} cores\n")
    print("| measure | here | target |\n|---|---:|---:|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    main()

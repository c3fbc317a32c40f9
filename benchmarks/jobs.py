"""Studies on the whole machine: `study run --jobs` N x threads against one process.

Runs the ResNet-18 runs of a study's experiment (by default configs/native.toml's MNIST grid,
cut down with --set overrides so that one pass takes a few minutes) once per --jobs setting,
each into its own temporary store, and prints the study's total training throughput:
images trained / wall seconds of the whole `study run` (start-up, worker spawn, evaluation and
checkpoints included: what a user waits for). The settings alternate across repeats, so a slow
spell on the machine hits all of them; the table gives medians.

    python benchmarks/jobs.py                       # 1 (1 x all cores), 2, auto; 1 repeat
    python benchmarks/jobs.py --repeats 3 --train-limit 3000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mnistbench.config import default_threads
from mnistbench.measure import cpu_model
from mnistbench.progress import Reporter
from mnistbench.study.file import load_study
from mnistbench.study.run import run_study
from mnistbench.study.store import Store


class _Quiet(Reporter):
    """Keeps the log lines (for the --jobs auto choice) and prints nothing."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def one_pass(args: argparse.Namespace, jobs: int | str) -> tuple[float, int, str]:
    """(images trained per wall second, runs, what auto chose) for one `study run`."""
    study = load_study(args.study).with_overrides(
        {
            "model": "resnet18",
            "epochs": 1,
            "train_limit": args.train_limit,
            "test_limit": args.test_limit,
            "device": "cpu",
        },
        [args.only],
    )
    reporter = _Quiet()
    with tempfile.TemporaryDirectory() as folder:
        store_path = Path(folder) / "store.db"
        started = time.perf_counter()
        outcome = run_study(study, store_path, only=[args.only], jobs=jobs, reporter=reporter)
        wall = time.perf_counter() - started
        with Store(store_path) as store:
            images = sum(r.result.history[-1].images for r in store.runs(study.name, args.only))
    choice = next((line for line in reporter.lines if line.startswith("--jobs auto")), "")
    if outcome.failed:
        raise SystemExit(f"--jobs {jobs}: {outcome.failed} run(s) failed")
    return images / wall, outcome.done, choice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="configs/native.toml")
    parser.add_argument("--only", default="q1a_mnist", help="the experiment to time")
    parser.add_argument("--train-limit", type=int, default=2000)
    parser.add_argument("--test-limit", type=int, default=1000)
    parser.add_argument("--jobs", nargs="+", default=["1", "2", "auto"])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    settings = [j if j == "auto" else int(j) for j in args.jobs]
    rates: dict[int | str, list[float]] = {setting: [] for setting in settings}
    choices, runs = {}, 0
    for _ in range(args.repeats):
        for setting in settings:
            rate, runs, choice = one_pass(args, setting)
            rates[setting].append(rate)
            choices[setting] = choice
    cores = default_threads()
    print(f"{cpu_model()}, {cores} cores; {args.study} {args.only}, ResNet-18, {runs} runs of "
          f"{args.train_limit} images x 1 epoch; medians of {args.repeats}\n")  # fmt: skip
    base = statistics.median(rates[settings[0]])
    print("| --jobs | workers x threads | total img/s | vs first |")
    print("|---|---|---|---|")
    for setting in settings:
        median = statistics.median(rates[setting])
        shape = choices[setting] or f"{setting} x {max(1, cores // int(setting))}"
        print(f"| {setting} | {shape} | {median:.0f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()

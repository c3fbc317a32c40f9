"""How close a study's estimate came: each finished run's estimate (calibration cache only, as
the dry run made it before anything ran) next to its actual wall time in the store.

Run after `mnistbench study run FILE --dry-run --store X` (which fills X's calibration cache)
and `time mnistbench study run FILE --store X`. Prints a markdown table per experiment and for
the study; `--wall SECONDS` (the `time` of the study run) adds the whole study's comparison,
start-up and data loading included.

    python benchmarks/estimate_check.py configs/quick.toml --store X --wall 151
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistbench.calibrate import Calibration, cache_path_for
from mnistbench.forecast import Estimator
from mnistbench.study.file import load_study
from mnistbench.study.run import expand
from mnistbench.study.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--wall", type=float, default=None, help="`time` of the study run, s")
    args = parser.parse_args()
    study = load_study(args.file)
    calibration = Calibration(cache_path_for(args.store))
    estimator = Estimator(calibration, None)  # no store: the estimate from before the runs
    rows: dict[str, list[float]] = {}
    seen: set[str] = set()
    with Store(args.store) as store:
        for run in expand(study):
            record = store.get(run.key)
            if run.key in seen or record is None or record.status != "done":
                continue
            seen.add(run.key)
            estimated, _ = estimator.seconds(run.spec)
            actual = record.finished_at - record.started_at
            row = rows.setdefault(run.experiment, [0, 0.0, 0.0])
            row[0] += 1
            row[1] += estimated or 0.0
            row[2] += actual
    print("| experiment | runs done | estimated | actual | actual / estimated |")
    print("|---|---:|---:|---:|---:|")
    total = [0, 0.0, 0.0]
    for name, (runs, estimated, actual) in rows.items():
        print(
            f"| {name} | {runs} | {estimated:.0f} s | {actual:.0f} s | {actual / estimated:.2f} |"
        )
        total = [total[0] + runs, total[1] + estimated, total[2] + actual]
    print(
        f"| runs | {total[0]} | {total[1]:.0f} s | {total[2]:.0f} s | {total[2] / total[1]:.2f} |"
    )
    if args.wall is not None:
        datasets = {run.spec.dataset for run in expand(study)}
        with_svm = any(run.spec.is_svm for run in expand(study))
        overhead = calibration.startup_seconds(with_svm) + 2 * sum(
            calibration.load_seconds(name) for name in datasets
        )
        estimated = total[1] + overhead
        print(
            f"| study (`time`, start-up and data included) | {total[0]} | {estimated:.0f} s "
            f"| {args.wall:.0f} s | {args.wall / estimated:.2f} |"
        )


if __name__ == "__main__":
    main()

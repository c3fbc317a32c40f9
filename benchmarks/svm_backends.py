"""SVM back-ends compared: accuracy, fit and predict seconds on full MNIST and FashionMNIST.

Every run goes through `mnistbench.engines.svm.train.run`, the code path a study uses, with the published
study's settings (C=10, gamma='scale', poly of degree 3 and rbf) on the official 60k/10k split.
Results are appended to a JSON-lines file as each run finishes, so an interrupted benchmark
keeps what it measured and `--table-from` can print the table again (and merge repeats).

    python benchmarks/svm_backends.py                 # full data: sklearn takes ~an hour
    python benchmarks/svm_backends.py --quick         # 5k train / 1k test, a minute
    python benchmarks/svm_backends.py --backends sklearnex --kernels rbf --datasets mnist
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from mnistbench import published
from mnistbench.config import RunSpec
from mnistbench.data.load import load_dataset
from mnistbench.engines.svm.backends import available_svm_backends
from mnistbench.engines.svm.train import run
from mnistbench.measure import cpu_model
from mnistbench.progress import PlainReporter

QUICK_LIMITS = {"train_limit": 5_000, "test_limit": 1_000}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5k train / 1k test images")
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    parser.add_argument("--kernels", nargs="+", default=["poly", "rbf"])
    parser.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="default: every back-end available here, fastest first (so the slow sklearn "
        "runs come last)",
    )
    parser.add_argument("--root", type=Path, default=None, help="data root (default ./data)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/svm_backends.jsonl"),
        help="JSON lines, one RunResult per run, appended as runs finish",
    )
    parser.add_argument(
        "--table-from",
        nargs="+",
        type=Path,
        default=None,
        metavar="FILE",
        help="run nothing; print the table of these JSON-lines files (repeated runs merge into "
        "their fastest fit and predict)",
    )
    return parser.parse_args(argv)


def run_all(args: argparse.Namespace) -> None:
    backends = args.backends or available_svm_backends()
    limits = QUICK_LIMITS if args.quick else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    reporter = PlainReporter(lambda line: print(line, file=sys.stderr, flush=True))
    datasets = {name: load_dataset(name, args.root) for name in args.datasets}
    # Back-end outermost: the fast back-ends' numbers arrive first, sklearn's hour-long ones last.
    for backend in backends:
        for dataset, data in datasets.items():
            for kernel in args.kernels:
                spec = RunSpec(
                    model="svm",
                    dataset=dataset,
                    kernel=kernel,
                    C=10.0,
                    gamma="scale",
                    svm_backend=backend,
                    **limits,
                )
                # Other work on the machine slows a fit down: record the load next to the time.
                load_before = os.getloadavg()[0]
                result = run(spec, data, reporter=reporter).to_dict()
                result["load_average"] = [load_before, os.getloadavg()[0]]
                with args.out.open("a") as out:
                    out.write(json.dumps(result) + "\n")
                print(
                    f"{dataset} {kernel} {result['backend']}: {result['test_accuracy']:.2f} %, "
                    f"fit {result['train_seconds']:.1f} s, predict {result['eval_seconds']:.1f} s, "
                    f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}",
                    flush=True,
                )


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    """One row per (dataset, kernel, back-end, size) over all runs in the JSON-lines files.

    Several runs of a config merge into the fastest fit and the fastest predict among them (on a
    shared machine the least disturbed run is the closest to the machine's own speed); 'runs'
    counts them and 'load_average' spans every load recorded for them.
    """
    runs: dict[tuple, list[dict[str, Any]]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                result = json.loads(line)
                spec, sizes = result["spec"], result["protocol"]["sizes"]
                key = (spec["dataset"], spec["kernel"], result["backend"], sizes["train"])
                runs.setdefault(key, []).append(result)
    merged = []
    for results in runs.values():
        row = dict(results[-1])
        row["train_seconds"] = min(r["train_seconds"] for r in results)
        row["eval_seconds"] = min(r["eval_seconds"] for r in results)
        row["runs"] = len(results)
        loads = [load for r in results for load in r.get("load_average", [])]
        row["load_average"] = [min(loads), max(loads)] if loads else None
        merged.append(row)
    return merged


def _confusion_distance(a: dict[str, Any], b: dict[str, Any]) -> int:
    """Half the L1 distance of two confusion matrices: a lower bound on the test images that the
    two models predict differently (the result keeps no per-image predictions)."""
    difference = sum(
        abs(x - y)
        for row_a, row_b in zip(a["confusion_matrix"], b["confusion_matrix"], strict=True)
        for x, y in zip(row_a, row_b, strict=True)
    )
    return difference // 2


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table; speedups are sklearn's seconds over the back-end's, same config.

    'Δ vs sklearn' is _confusion_distance; 'load' the range of the 1-minute load average
    before and after each run (2 = this machine's two cores busy).
    """
    sklearn_times = {
        (r["spec"]["dataset"], r["spec"]["kernel"], r["protocol"]["sizes"]["train"]): r
        for r in results
        if r["backend"].startswith("sklearn ")
    }
    lines = [
        "| dataset | kernel | back-end | train / test | accuracy % | fit s | predict s "
        "| fit speedup | predict speedup | n_support | Δ vs sklearn | runs | load "
        "| published (49k/14k) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    order = {"sklearn": 0, "sklearnex": 1, "cuml": 2}
    results = sorted(
        results,
        key=lambda r: (
            r["spec"]["dataset"],
            r["spec"]["kernel"],
            order.get(r["backend"].split()[0], 9),
        ),
    )
    for r in results:
        spec, sizes = r["spec"], r["protocol"]["sizes"]
        key = (spec["dataset"], spec["kernel"], sizes["train"])
        base = sklearn_times.get(key)
        fit_speedup = f"{base['train_seconds'] / r['train_seconds']:.1f}×" if base else "-"
        predict_speedup = f"{base['eval_seconds'] / r['eval_seconds']:.1f}×" if base else "-"
        moved = _confusion_distance(base, r) if base else "-"
        load = r.get("load_average")
        load_text = f"{load[0]:.1f}–{load[1]:.1f}" if load else "-"
        # The published study (assignment split: 49k train / 14k test).
        row = published.SVM.get((spec["dataset"], spec["kernel"]))
        published_text = f"{row.accuracy:.2f} % / {row.train_seconds:.0f} s" if row else "-"
        lines.append(
            f"| {spec['dataset']} | {spec['kernel']} | {r['backend']} "
            f"| {sizes['train']:,} / {sizes['test']:,} | {r['test_accuracy']:.2f} "
            f"| {r['train_seconds']:.1f} | {r['eval_seconds']:.1f} | {fit_speedup} "
            f"| {predict_speedup} | {r['n_support']:,} | {moved} | {r['runs']} | {load_text} "
            f"| {published_text} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_from is None:
        run_all(args)
    paths = args.table_from or [args.out]
    results = load_results(paths)
    threads = {r["environment"]["threads"] for r in results}
    sources = ", ".join(map(str, paths))
    print(f"\nmachine: {cpu_model()}, threads {sorted(threads)}; results from {sources}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long `mnistbench report` takes on big stores, and whether what it writes stays readable.

Builds two synthetic stores through the real Store API in a temporary directory (no training):
- 500 runs: an SVM sweep of 25 values of C × 20 of gamma (rbf, MNIST), as a user's grid search;
- 5,000 runs: SVM sweeps of 25 C × 46 gamma × {poly, rbf} × {MNIST, FashionMNIST} (4,600) and
  a ResNet-18/50 grid of batch × optimizer × 5 lr × 2 datasets with 5 seeds (400).
Accuracies follow a smooth surface with an under-fit corner near chance, plus noise, so the
report has regions, outliers and effects to find. Then it times the `mnistbench report` command
on each (a fresh process, imports included) and prints a markdown table.

    python benchmarks/report_scale.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnistbench.config import RunSpec
from mnistbench.result import EpochRecord, RunResult
from mnistbench.study.store import Store

COMMON = {"split": "official", "train_limit": 200, "test_limit": 500, "threads": 1}
ENVIRONMENT = {"cpu": "Synthetic CPU", "threads": 1, "torch": "2.5.1", "sklearn": "1.5.0"}


def geometric(low: float, high: float, count: int) -> list[float]:
    return [float(f"{low * (high / low) ** (i / (count - 1)):.3g}") for i in range(count)]


def svm_accuracy(rng: random.Random, kernel: str, c: float, gamma: float) -> float:
    """Near chance where C is small or gamma large (an rbf kernel that memorises), ~95 % else."""
    fit = 1 / (1 + math.exp(-2.5 * (math.log10(c) + 1.5)))
    spread = math.exp(-(max(0.0, math.log10(gamma) + 2) ** 2)) if kernel == "rbf" else 1.0
    return min(99.0, 10 + 85 * fit * spread + rng.gauss(0, 0.8))


def svm_runs(rng: random.Random, datasets, kernels, cs, gammas) -> list[tuple[RunSpec, RunResult]]:
    runs = []
    for dataset in datasets:
        for kernel in kernels:
            for c in cs:
                for gamma in gammas:
                    spec = RunSpec(model="svm", dataset=dataset, kernel=kernel, C=c, gamma=gamma,
                                   svm_backend="sklearn", **COMMON)  # fmt: skip
                    result = RunResult(
                        spec=spec.to_dict(),
                        test_accuracy=svm_accuracy(rng, kernel, c, gamma),
                        train_seconds=0.05 + rng.random() * 0.2,
                        backend="sklearn 1.5.0",
                        n_support=rng.randint(50, 200),
                        environment=ENVIRONMENT,
                    )
                    runs.append((spec, result))
    return runs


def resnet_runs(rng: random.Random, seeds: int) -> list[tuple[RunSpec, RunResult]]:
    runs = []
    for dataset in ("mnist", "fashion-mnist"):
        for model in ("resnet18", "resnet50"):
            for batch in (16, 32):
                for optimizer in ("sgd", "adam"):
                    for lr in geometric(1e-4, 1e-2, 5):
                        for seed in range(seeds):
                            spec = RunSpec(dataset=dataset, model=model, batch_size=batch,
                                           optimizer=optimizer, lr=lr, epochs=2, seed=seed,
                                           device="cpu", **COMMON)  # fmt: skip
                            accuracy = 95 - 3 * abs(math.log10(lr) + 3) + rng.gauss(0, 0.5)
                            seconds = (40 if model == "resnet18" else 100) * 32 / batch
                            history = [
                                EpochRecord(epoch=e, train_loss=1 / e, eval_split="test",
                                            eval_accuracy=accuracy - 4 + 2 * e)
                                for e in (1, 2)
                            ]  # fmt: skip
                            result = RunResult(
                                spec=spec.to_dict(), test_accuracy=accuracy,
                                train_seconds=seconds * rng.uniform(0.9, 1.1),
                                images_per_second=200 * batch / seconds, device="cpu",
                                history=history, environment=ENVIRONMENT,
                            )  # fmt: skip
                            runs.append((spec, result))
    return runs


def build_store(path: Path, experiments: dict[str, list[tuple[RunSpec, RunResult]]]) -> None:
    with Store(path) as store:
        for experiment, runs in experiments.items():
            store.register("scale", experiment, [spec for spec, _ in runs])
            for spec, result in runs:
                store.claim(spec.key())
                store.finish(spec.key(), result)


def time_report(store: Path, out: Path) -> tuple[float, str]:
    """Seconds of `mnistbench report` (a fresh process) and the markdown it wrote."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mnistbench", "report", "--store", str(store), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started, (out / "report.md").read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the stores and reports here")
    args = parser.parse_args()
    rng = random.Random(0)
    cs = geometric(1e-3, 1e3, 25)
    stores = {
        500: {"svm_sweep": svm_runs(rng, ["mnist"], ["rbf"], cs, geometric(1e-4, 1, 20))},
        5000: {
            "svm_sweep": svm_runs(
                rng, ["mnist", "fashion-mnist"], ["poly", "rbf"], cs, geometric(1e-4, 1, 46)
            ),
            "resnet_grid": resnet_runs(rng, seeds=5),
        },
    }
    root = args.keep or Path(tempfile.mkdtemp(prefix="report_scale_"))
    print(
        "| runs | store built (s) | `mnistbench report` (s) | insight sentences | plots | report.md lines |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for size, experiments in stores.items():
        assert sum(len(runs) for runs in experiments.values()) == size
        store = root / f"runs{size}.db"
        started = time.perf_counter()
        build_store(store, experiments)
        built = time.perf_counter() - started
        seconds, markdown = time_report(store, root / f"report{size}")
        insights = markdown.split("## Insights", 1)[1].split("\n## ", 1)[0]
        sentences = sum(line.startswith("- ") for line in insights.splitlines())
        plots = len(re.findall(r"^!\[", markdown, flags=re.M))
        print(
            f"| {size:,} | {built:.1f} | {seconds:.1f} | {sentences} | {plots} | {len(markdown.splitlines())} |"
        )


if __name__ == "__main__":
    main()

"""Time to accuracy: run configs/speedrun.toml and tabulate accuracy and training time per seed.

The runs go through the study runner into their own results store, so an interrupted benchmark
resumes where it stopped and a finished one only re-prints its table (--fresh measures again).
Training time is the engine's synchronised train_seconds: warm-up and evaluation are off it.

    python benchmarks/speedrun.py --quick     # MNIST, seed 0 only (about 2 minutes)
    python benchmarks/speedrun.py             # every experiment, every seed of the file

Precision: each CPU experiment trains in bf16 or fp32, whichever of the two trains its shape
faster on this machine (timed first, a few seconds; said in the output): bf16 is up to 1.5x fp32
at 28 px on a Zen 5 EPYC and 3-16x slower on a Zen 3 one. --precision file, or --set amp=...,
keeps what is asked.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from mnistbench import published
from mnistbench.config import RunSpec
from mnistbench.devices import concrete_spec
from mnistbench.engines.torch.memory_format import choose_layout
from mnistbench.progress import PlainReporter
from mnistbench.result import RunResult
from mnistbench.study.file import StudyFileError, StudySpec, load_study, parse_overrides
from mnistbench.study.run import expand, run_study
from mnistbench.study.store import Store

# The published study's best test accuracies, and this training-time budgets (2-core CPU).
BUDGET_SECONDS = {"mnist": 45.0, "fashion-mnist": 360.0}
TARGETS = {
    dataset: (published.best(dataset)[1].accuracy, seconds)
    for dataset, seconds in BUDGET_SECONDS.items()
}


def restrict(study: StudySpec, only: list[str] | None, seeds: list[int] | None) -> StudySpec:
    """The study cut to `only` (an unknown name is an error naming the known ones) and `seeds`."""
    experiments = tuple(
        dataclasses.replace(e, seeds=seeds) if seeds else e for e in study.select(only)
    )
    return dataclasses.replace(study, experiments=experiments)


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def finished(study: StudySpec, store: Store) -> dict[str, list[RunResult]]:
    """Each experiment's finished ('ok') results, in the file's order. The runs as `study run`
    keyed them on this machine (`expand`: device 'auto' made concrete), not the file's specs."""
    results: dict[str, list[RunResult]] = {e.name: [] for e in study.experiments}
    for run in expand(study):
        record = store.get(run.key)
        if record is not None and record.result is not None and record.result.status == "ok":
            results[run.experiment].append(record.result)
    return results


def table(study: StudySpec, store: Store) -> list[str]:
    lines = [
        "| experiment | seeds | test acc % (mean ± std) | train s (mean ± std) | best run "
        "| target | seeds meeting it |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, ok in finished(study, store).items():
        if not ok:
            lines.append(f"| {name} | 0 | not run | | | | |")
            continue
        dataset = ok[0].spec["dataset"]
        target_acc, budget = TARGETS[dataset]
        accuracies = [r.test_accuracy for r in ok]
        seconds = [r.train_seconds for r in ok]
        best = max(ok, key=lambda r: (r.test_accuracy, -r.train_seconds))
        met = sum(r.test_accuracy >= target_acc and r.train_seconds <= budget for r in ok)
        lines.append(
            f"| {name} | {len(ok)} | {mean_std(accuracies)} | {mean_std(seconds)} | "
            f"{best.test_accuracy:.2f} % in {best.train_seconds:.1f} s (seed {best.spec['seed']}) "
            f"| >= {target_acc:.2f} % in <= {budget:.0f} s | {met}/{len(ok)} |"
        )
    return lines


LEVERS = ("raw", "flip", "ema", "ema+flip")


def lever_table(study: StudySpec, store: Store) -> list[str]:
    """Each finished run's test accuracy with each evaluation lever it used (its protocol's
    test_accuracy_by_lever: one training run, evaluated raw, with mirror TTA, with the weight
    average and with both); empty when no run used one."""
    lines = []
    for name, results in finished(study, store).items():
        for result in results:
            spec = result.spec
            by_lever = result.protocol.get("test_accuracy_by_lever")
            if not by_lever:
                continue
            cells = " | ".join(
                f"{by_lever[lever]:.2f}" if lever in by_lever else "" for lever in LEVERS
            )
            lines.append(
                f"| {name} | {spec['seed']} | {spec['stem']} | {result.precision} | {spec['epochs']} "
                f"| {spec['augment']} "
                f"| {result.train_seconds:.1f} | {cells} |"
            )
    if not lines:
        return []
    header = [
        "| experiment | seed | stem | precision | epochs | augment | train s | "
        + " | ".join(LEVERS)
        + " |",
        "|---|---:|---|---|---:|---|---:|" + "---:|" * len(LEVERS),
    ]
    return ["", *header, *lines]


def faster_precision(spec: RunSpec) -> tuple[bool, str]:
    """amp for a CPU run of this shape: bf16 autocast (True) where its training step is faster
    here than fp32's, else False; with the two rates, said. Each rate is the fastest layout's,
    from the layout cache that `memory_format = "auto"` keeps (timed now where it has none, a
    few seconds per shape), so the run itself then finds its layout there."""
    device = torch.device("cpu")
    rates = {}
    for amp in (False, True):
        probe = spec.replace(amp=amp, memory_format="auto", small_map_convs="auto")
        measured = choose_layout(probe, device).images_per_second or {}
        rates[amp] = max(rate for name, rate in measured.items() if not name.startswith("eval"))
    bf16 = rates[True] > rates[False]
    return bf16, f"fp32 {rates[False]:.0f} img/s, bf16 {rates[True]:.0f} img/s"


def with_faster_precision(study: StudySpec, log: Callable[[str], None]) -> StudySpec:
    """The study with each CPU experiment's amp set to the faster precision on this machine
    (issue 15: the presets train in whichever precision wins here). GPU runs keep the file's."""
    for experiment in study.experiments:
        spec = concrete_spec(experiment.specs()[0])
        if spec.device != "cpu":
            continue
        bf16, rates = faster_precision(spec)
        log(f"{experiment.name}: {'bf16' if bf16 else 'fp32'} ({rates}; --precision file keeps "
            "the study file's)")  # fmt: skip
        study = study.with_overrides({"amp": bf16}, only=[experiment.name])
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("configs/speedrun.toml"))
    parser.add_argument("--store", type=Path, default=Path("results/speedrun.db"))
    parser.add_argument("--only", nargs="+", help="experiment names to run")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the file's seeds")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE",
        help="fields set in every run, as `study run --set` (e.g. amp=false on a CPU without "
        "native bf16)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=("auto", "file"), default="auto",
        help="auto: each CPU experiment in bf16 or fp32, whichever trains faster here (timed "
        "first, a few seconds); file: as the study file says",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="= --only mnist --seeds 0")
    parser.add_argument("--fresh", action="store_true", help="delete the store and re-measure")
    args = parser.parse_args()
    if args.quick:
        args.only, args.seeds = args.only or ["mnist"], args.seeds or [0]
    try:
        overrides = parse_overrides(args.set)
        study = restrict(load_study(args.study).with_overrides(overrides), args.only, args.seeds)
        if args.precision == "auto" and "amp" not in overrides:
            study = with_faster_precision(study, print)
    except StudyFileError as exc:
        raise SystemExit(str(exc)) from exc
    if args.fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{args.store}{suffix}").unlink(missing_ok=True)
    args.store.parent.mkdir(parents=True, exist_ok=True)
    outcome = run_study(study, args.store, reporter=PlainReporter(print))
    if outcome.failed:
        raise SystemExit(f"{outcome.failed} run(s) failed; see `mnistbench study status`")
    with Store(args.store) as store:
        print("\n".join(table(study, store) + lever_table(study, store)))


if __name__ == "__main__":
    main()

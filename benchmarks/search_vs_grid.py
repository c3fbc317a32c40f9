"""What an adaptive search needs to match a grid's best, and what a trial costs over a plain run.

1. A grid over a space (benchmarks/studies/search_vs_grid.toml: ResNet-18, FashionMNIST,
   28 px, subsets, cosine lr) runs every config; a TPE search with median pruning over the same
   space runs once per sampler seed. Each in a store of its own, so no search reuses another's
   runs. Compute is the training images each consumed (pruned trials count the epochs they
   ran) and its train seconds; a search's compute to match is what its runs had consumed, in
   the order asked, up to the first within 0.2 points of the grid's best validation accuracy.
   The goal: that, for at most a third of the grid's compute.
2. `--seed-spread TOP`: the grid's TOP configs again under other training seeds, to show how
   much of "the grid's best" is the seed.
3. A trial's overhead: the same spec as a plain run and as a search's trial (its epochs told
   to Optuna through the SQLite storage), train seconds and wall seconds, medians of repeats.

Every command runs as a user would run it (`mnistbench study run`, a fresh process). Prints
markdown tables for benchmarks/README.md (section 12).

    python benchmarks/search_vs_grid.py --seeds 5 --seed-spread 3   # about 45 min on 2 cores
    python benchmarks/search_vs_grid.py --seeds 1 --skip-overhead
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnistbench.measure import cpu_model
from mnistbench.study.store import Store

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "benchmarks" / "studies" / "search_vs_grid.toml"
MNISTBENCH = [sys.executable, "-m", "mnistbench"]
GRID_STORE = REPO / "results" / "search_vs_grid" / "grid.db"


OVERRIDES: list[str] = []
"""`--set KEY=VALUE` fields given to every `study run` (a variant of the study: its own runs)."""
TRIALS: list[int] = []
"""`--trials N`: the search's budget instead of the study file's."""
SEARCHES = {"points": "search", "lr-range": "search_lr_range"}
"""`--space`: the experiment searched. `points` samples the grid's own 24 points; `lr-range`
samples lr anywhere in the grid's range (log), the other fields at the grid's values."""


def run(store: Path, only: str, sampler_seed: int = 0, experiments: str = "") -> float:
    """`study run --only ONLY` (names split by spaces) of the benchmark's study (its search seeded `sampler_seed`, with
    `experiments` added to its file) into `store`; its wall seconds."""
    study = store.with_name(f"{store.stem}-{sampler_seed}.toml")
    text = re.sub(
        r"^seed = 0  # sampler.*$",
        f"seed = {sampler_seed}",
        STUDY.read_text() + experiments,
        flags=re.M,
    )
    if TRIALS:
        text = re.sub(r"^trials = \d+  # budget.*$", f"trials = {TRIALS[0]}", text, flags=re.M)
    study.write_text(text)
    started = time.perf_counter()
    subprocess.run([*MNISTBENCH, "study", "run", str(study), "--store", str(store), "--quiet",
                    "--only", *only.split(), *(["--set", *OVERRIDES] if OVERRIDES else [])],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - started


def spent(store: Path, experiment: str) -> dict[str, float]:
    """Best validation accuracy (and that run's test accuracy), training images, train seconds
    and runs of one experiment's runs in a store."""
    with Store(store) as opened:
        records = [r for r in opened.runs(None, experiment) if r.result is not None]
    finished = [r for r in records if r.status == "done" and r.result.val_accuracy is not None]
    best = max(finished, key=lambda r: r.result.val_accuracy)
    return {
        "best_val": best.result.val_accuracy,
        "best_test": best.result.test_accuracy,
        "images": sum(e.images for r in records for e in r.result.history),
        "seconds": sum(r.result.train_seconds or 0 for r in records),
        "runs": len(records),
        "pruned": sum(r.status == "pruned" for r in records),
    }


def images_to_match(store: Path, experiment: str, target: float) -> tuple[int, int] | None:
    """The runs, and the training images they consumed, up to and including the first run (in
    the order the search asked them) whose validation accuracy is within 0.2 points of
    `target`; None when none is."""
    with Store(store) as opened:
        records = sorted((r for r in opened.runs(None, experiment) if r.result is not None),
                         key=lambda r: r.created_at)  # fmt: skip
    images = 0
    for count, record in enumerate(records, start=1):
        images += sum(e.images for e in record.result.history)
        value = record.result.val_accuracy
        if record.status == "done" and value is not None and target - value <= 0.2:
            return count, images
    return None


def grid_store_path() -> Path:
    """The grid's store for this variant of the study: kept, so a second invocation reuses it."""
    variant = "-".join(OVERRIDES).replace("=", "_") or "as-written"
    return GRID_STORE.with_name(f"grid-{variant}.db")


def compare(seeds: int, work: Path, searched: str) -> None:
    grid_store = grid_store_path()
    run(grid_store, "grid")
    grid = spent(grid_store, "grid")
    variant = f" with --set {' '.join(OVERRIDES)}" if OVERRIDES else ""
    budget = f"; search trials: {TRIALS[0]}" if TRIALS else ""
    print(f"\nCPU: {cpu_model()}; study: {STUDY.relative_to(REPO)}{variant}; "
          f"searched: experiment {searched}{budget}\n")  # fmt: skip
    print("| run | best val % | its test % | runs (pruned) | training images | share of grid "
          "| train s | matched after runs | share at match |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| grid | {grid['best_val']:.2f} | {grid['best_test']:.2f} | {grid['runs']} | "
          f"{grid['images']:,} | 100% | {grid['seconds']:.0f} | | |")  # fmt: skip
    matched = 0
    for seed in range(seeds):
        store = work / f"search-{seed}.db"
        run(store, searched, sampler_seed=seed)
        found = spent(store, searched)
        share = found["images"] / grid["images"]
        match = images_to_match(store, searched, grid["best_val"])
        at_match = ("not matched", "") if match is None else (
            str(match[0]), f"{match[1] / grid['images']:.0%}")  # fmt: skip
        matched += match is not None and match[1] / grid["images"] <= 1 / 3
        print(f"| search, seed {seed} | {found['best_val']:.2f} | {found['best_test']:.2f} | "
              f"{found['runs']} ({found['pruned']}) | {found['images']:,} | {share:.0%} | "
              f"{found['seconds']:.0f} | {at_match[0]} | {at_match[1]} |")  # fmt: skip
    print(
        f"\n{matched} of {seeds} searches came within 0.2 points of the grid's best for at most "
        "a third of its training images."
    )


SPACE_FIELDS = ("lr", "batch_size", "optimizer", "weight_decay")


def seed_spread(top: int, seeds: int) -> None:
    """The grid's `top` configs again under `seeds` training seeds (into the grid's store):
    how far one config's validation accuracy moves with the seed alone, beside the 0.2 points
    the goal asks."""
    grid_store = grid_store_path()
    with Store(grid_store) as opened:
        finished = [r for r in opened.runs(None, "grid") if r.status == "done"]
    best = sorted(finished, key=lambda r: -r.result.val_accuracy)[:top]
    configs = [{name: getattr(r.spec, name) for name in SPACE_FIELDS} for r in best]
    experiments = "".join(
        f"\n[experiments.top{rank}]\nseeds = {list(range(seeds))}\nbase = {{ "
        + ", ".join(f"{name} = {json.dumps(value)}" for name, value in config.items())
        + " }\n"
        for rank, config in enumerate(configs)
    )
    run(grid_store, " ".join(f"top{rank}" for rank in range(top)), experiments=experiments)
    with Store(grid_store) as opened:
        records = [r for r in opened.runs() if r.status == "done"]
    print(f"\nCPU: {cpu_model()}; the grid's best {top} configs under seeds 0-{seeds - 1}\n")
    print("| config (grid rank) | val % per seed | mean | max - min |")
    print("|---|---|---:|---:|")
    for rank, config in enumerate(configs, start=1):
        values = [r.result.val_accuracy for r in sorted(records, key=lambda r: r.spec.seed)
                  if {name: getattr(r.spec, name) for name in SPACE_FIELDS} == config]  # fmt: skip
        label = ", ".join(f"{name} {value}" for name, value in config.items())
        print(f"| {label} ({rank}) | {', '.join(f'{v:.2f}' for v in values)} | "
              f"{statistics.mean(values):.2f} | {max(values) - min(values):.2f} |")  # fmt: skip


def overhead(repeats: int, work: Path) -> None:
    """A plain run against the same spec as a search's one trial (pruner: median)."""
    rows = {"plain run": [], "search trial": []}
    for repeat in range(repeats):
        for name, only in (("plain run", "single"), ("search trial", "single_search")):
            store = work / f"overhead-{repeat}-{only}.db"
            wall = run(store, only)
            with Store(store) as opened:
                (record,) = opened.runs(None, only)
            rows[name].append((record.result.train_seconds, wall))
    print("\n| the same spec as | train s (median) | wall s (median) |")
    print("|---|---:|---:|")
    for name, pairs in rows.items():
        train = statistics.median(p[0] for p in pairs)
        wall = statistics.median(p[1] for p in pairs)
        print(f"| {name} | {train:.2f} | {wall:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="searches, one per sampler seed")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the overhead pair")
    parser.add_argument("--trials", type=int, help="the search's budget of trials")
    parser.add_argument("--space", choices=SEARCHES, default="points",
                        help="the grid's points, or lr anywhere in its range (log)")  # fmt: skip
    parser.add_argument("--seed-spread", type=int, default=0, metavar="TOP",
                        help="also run the grid's TOP configs under --seeds training seeds")  # fmt: skip
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="fields set in every run, e.g. val_limit=5000")  # fmt: skip
    args = parser.parse_args()
    OVERRIDES[:] = args.set
    TRIALS[:] = [args.trials] if args.trials else []
    GRID_STORE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        if not args.skip_compare:
            compare(args.seeds, Path(work), SEARCHES[args.space])
        if args.seed_spread:
            seed_spread(args.seed_spread, args.seeds)
        if not args.skip_overhead:
            overhead(args.repeats, Path(work))


if __name__ == "__main__":
    main()

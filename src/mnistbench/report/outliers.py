"""Outliers (diverged and failed runs, configs far below their neighbours, lone bad seeds, runs at
chance) and caveats (one seed, subsets, missing and skipped runs).
"""

from __future__ import annotations

import statistics

from mnistbench.data.registry import UnknownDatasetError, get_dataset
from mnistbench.report.runs import (
    Group,
    Run,
    first_line,
    format_value,
    group_runs,
    model_name,
    plural,
    varying_fields,
)
from mnistbench.report.sentences import (
    CHANCE_MARGIN,
    OUTLIER_POINTS,
    THROUGHPUT_SPREAD,
    Insight,
    acc_text,
    experiments_of,
    not_finished,
)
from mnistbench.report.tables import fmt_percent


def _chance(dataset: str) -> float:
    try:
        return 100.0 / get_dataset(dataset).num_classes
    except UnknownDatasetError:
        return 10.0


def _diverged_at(run: Run) -> str:
    entries = [e for e in (run.result.history if run.result else []) if not e.ok]
    if not entries:
        return ""
    entry = entries[-1]
    step = f" at step {entry.diverged_step}" if entry.diverged_step is not None else ""
    return f" in epoch {entry.epoch}{step}"


def _where(run: Run) -> str:
    return f"{run.label()}, seed {run.spec.seed} ({', '.join(run.experiments)})"


def broken_runs(runs: list[Run]) -> list[Insight]:
    insights = []
    for run in runs:
        if run.state == "diverged":
            insights.append(
                Insight(
                    "outlier",
                    f"Diverged: {_where(run)}{_diverged_at(run)}: {first_line(run.reason)}.",
                )
            )
        elif run.state == "failed":
            insights.append(
                Insight("outlier", f"Failed: {_where(run)}: {first_line(run.reason)[:300]}.")
            )
    return insights


def _differs_in_one(a: Group, b: Group, fields: list[str]) -> bool:
    if a.spec.model != b.spec.model:
        return False
    ca, cb = a.spec.canonical(), b.spec.canonical()
    return sum(ca[f] != cb[f] for f in fields if f in ca and f in cb) == 1


def low_outliers(by_experiment: dict[str, list[Run]]) -> list[Insight]:
    """Configs far below their neighbours (same model, one setting different) and lone bad seeds."""
    insights = []
    for experiment, runs in by_experiment.items():
        groups = [g for g in group_runs(runs) if g.accuracy is not None]
        fields = varying_fields((g.spec for g in groups), exclude=("seed", "model"))
        for group in groups:
            neighbours = [
                g.accuracy.mean
                for g in groups
                if g is not group and _differs_in_one(group, g, fields)
            ]
            if neighbours:
                median = statistics.median(neighbours)
                if median - group.accuracy.mean > OUTLIER_POINTS:
                    insights.append(
                        Insight(
                            "outlier",
                            (
                                f"Outlier: {group.label()} ({experiment}) reached {acc_text(group.accuracy)}, "
                                f"{median - group.accuracy.mean:.2f} points below the median ({fmt_percent(median)}%) "
                                f"of its {len(neighbours)} neighbours (configs that differ in one setting; "
                                f"threshold {OUTLIER_POINTS:g} points)."
                            ),
                        )
                    )
            insights += _seed_outliers(group, experiment)
    return insights


def _seed_outliers(group: Group, experiment: str) -> list[Insight]:
    found = []
    runs = group.ok_runs
    if len(runs) < 3:
        return found
    for run in runs:
        others = statistics.median(r.accuracy for r in runs if r is not run)
        if others - run.accuracy > OUTLIER_POINTS:
            found.append(
                Insight(
                    "outlier",
                    (
                        f"Seed outlier: {_where(run)} reached {fmt_percent(run.accuracy)}%, "
                        f"{others - run.accuracy:.2f} points below the median of its other "
                        f"{len(runs) - 1} seeds ({fmt_percent(others)}%)."
                    ),
                )
            )
    return found


def chance_runs(runs: list[Run]) -> list[Insight]:
    insights = []
    for group in group_runs(runs):
        acc = group.accuracy
        chance = _chance(group.spec.dataset)
        if acc is not None and acc.mean <= chance + CHANCE_MARGIN:
            insights.append(
                Insight(
                    "outlier",
                    (
                        f"Near chance: {group.label()} ({experiments_of(group)}) reached {acc_text(acc)}, within "
                        f"{CHANCE_MARGIN:g} points of chance ({chance:.2f}%): it did not learn."
                    ),
                )
            )
    return insights


def outliers(runs: list[Run], by_experiment: dict[str, list[Run]]) -> list[Insight]:
    found = broken_runs(runs) + low_outliers(by_experiment) + chance_runs(runs)
    if not found and runs:
        found.append(
            Insight(
                "outlier",
                (
                    f"No outliers: no run diverged or failed, no config is more than {OUTLIER_POINTS:g} "
                    "points below its neighbours and none is near chance."
                ),
            )
        )
    return found


# --- caveats ------------------------------------------------------------------------------------


def throughput_spread(runs: list[Run]) -> list[Insight]:
    """Runs that should train equally fast but did not: their train times are not comparable."""
    insights = []
    similar: dict[tuple[object, ...], list[float]] = {}
    for run in runs:
        speed = run.result.images_per_second if run.ok and run.result else None
        if speed and not run.spec.is_svm:
            s = run.spec
            key = (
                s.model,
                s.image_size,
                s.channels,
                run.device_kind,
                s.loader,
                run.result.precision,
            )
            similar.setdefault(key, []).append(speed)
    for (model, size, channels, device, _, _), speeds in similar.items():
        if len(speeds) > 1 and max(speeds) / min(speeds) > THROUGHPUT_SPREAD:
            insights.append(
                Insight(
                    "caveat",
                    f"Training throughput of {model_name(model)} at {size}×{size}×{channels} on "
                    f"{device.upper()} ranges from {min(speeds):,.1f} to {max(speeds):,.1f} images/s "
                    f"({max(speeds) / min(speeds):.1f}×) over {len(speeds)} runs with the same "
                    "model, input, device and precision: a spread this wide usually means other "
                    "work shared the machine, so compare their train times with care.",
                )
            )
    return insights


def caveats(runs: list[Run]) -> list[Insight]:
    """What a reader must know before trusting the numbers: seeds, subsets, missing runs."""
    texts = [
        _seed_caveat(runs),
        _subset_caveat(runs),
        _waiting_caveat(runs),
        _skipped_caveat(runs),
    ]
    return throughput_spread(runs) + [Insight("caveat", text) for text in texts if text]


def _seed_caveat(runs: list[Run]) -> str | None:
    groups = [g for g in group_runs(runs) if g.accuracy is not None]
    single = [g for g in groups if g.accuracy.n < 2]
    if groups and len(single) == len(groups):
        seeds = ", ".join(str(s) for s in sorted({r.spec.seed for r in runs}))
        return (
            f"Every finished config has one seed (seed {seeds}): differences between configs are "
            "not tested for significance, and small gaps may be run-to-run noise."
        )
    if single:
        return (
            f"{len(single)} of {len(groups)} finished configs have one finished seed: their "
            "differences are not tested for significance."
        )
    return None


def _subset_caveat(runs: list[Run]) -> str | None:
    limits: dict[str, list[str]] = {}
    for run in runs:
        if run.spec.train_limit or run.spec.test_limit:
            text = f"{format_value('train_limit', run.spec.train_limit)} train / {format_value('test_limit', run.spec.test_limit)} test images"
            limits.setdefault(text, []).append(model_name(run.spec.model))
    if not limits:
        return None
    parts = "; ".join(
        f"{text} for {', '.join(dict.fromkeys(models))}" for text, models in limits.items()
    )
    return (
        f"Runs use subsets ({parts}): their accuracies are not comparable with full-dataset "
        "results such as the published study's."
    )


def _waiting_caveat(runs: list[Run]) -> str | None:
    waiting = [r for r in runs if r.state in ("not run", "running")]
    if not waiting:
        return None
    return (
        f"{len(waiting)} of {len(runs)} runs have no result yet ({not_finished(waiting)}): "
        "their cells say so; `mnistbench study run` runs what is missing."
    )


def _skipped_caveat(runs: list[Run]) -> str | None:
    skipped = [r for r in runs if r.state == "skipped"]
    if not skipped:
        return None
    reasons = "; ".join(dict.fromkeys(f"{r.label()} — {first_line(r.reason)}" for r in skipped))
    return (
        f"{plural(len(skipped), 'run')} {'was' if len(skipped) == 1 else 'were'} "
        f"skipped on this machine: {reasons}."
    )

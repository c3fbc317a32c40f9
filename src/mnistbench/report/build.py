"""Assemble a report from a store: sections per experiment, headline, insights, environment."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mnistbench.errors import UserError
from mnistbench.report import plots as _plots
from mnistbench.report.effects import effects
from mnistbench.report.headline import headline
from mnistbench.report.outliers import caveats, outliers
from mnistbench.report.runs import Run, best_run, dataset_name, load_runs, unique_runs
from mnistbench.report.sentences import Insight
from mnistbench.report.tables import Table, build_table, device_groups, speedup, table_kind
from mnistbench.store import Store


@dataclass
class Section:
    """One experiment: its table, its figures, and notes on figures that could not be drawn."""

    experiment: str
    table: Table
    runs: list[Run]
    plots: list[_plots.Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    """Everything the writers need, computed once: they format, they never compute."""

    title: str
    study: str | None
    description: str
    generated_at: str
    store_path: str
    runs: list[Run]
    """Every run once, in store order."""
    sections: list[Section]
    headline: list[Insight]
    insights: list[Insight]
    effect_tables: list[Table]
    confusion: list[_plots.Plot]
    environment: list[tuple[str, str]]

    @property
    def plots(self) -> list[_plots.Plot]:
        return [plot for section in self.sections for plot in section.plots] + self.confusion

    def status_line(self) -> str:
        """'16 runs: 12 ok, 1 diverged, 1 failed, 2 skipped'."""
        counts: dict[str, int] = {}
        for run in self.runs:
            counts[run.state] = counts.get(run.state, 0) + 1
        return f"{len(self.runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())


class EmptyReportError(UserError, ValueError):
    """The store holds no runs of the requested study."""


def build_report(
    store: Store,
    study: str | None = None,
    *,
    descriptions: Mapping[str, str] | None = None,
    study_description: str = "",
    plots: bool = True,
) -> Report:
    """Everything the renderers need, computed once from the store's runs."""
    by_key = load_runs(store, study)
    if not by_key:
        known = sorted({name for name, _ in store.experiments()})
        raise EmptyReportError(
            f"{store.path} has no runs"
            + (f" of study {study!r}" if study else "")
            + (f"; studies in it: {', '.join(known)}" if known else "")
        )
    studies = list(dict.fromkeys(name for name, _ in by_key))
    descriptions = descriptions or {}
    parts = [
        part
        for (name, exp), members in by_key.items()
        # Experiment names are unique within a study; prefix them only when studies mix.
        for part in _per_dataset(
            exp if len(studies) == 1 else f"{name}-{exp}", descriptions.get(exp, ""), members
        )
    ]
    by_experiment = {slug: members for slug, _, members in parts}
    runs = unique_runs(by_key)
    sections = [_section(slug, members, text, plots) for slug, text, members in parts]
    effect_insights, effect_tables = effects(by_experiment)
    return Report(
        title=f"mnistbench report: study {', '.join(studies)}",
        study=study or (studies[0] if len(studies) == 1 else None),
        description=study_description,
        generated_at=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        store_path=str(Path(store.path)),
        runs=runs,
        sections=sections,
        headline=headline(runs),
        insights=effect_insights + outliers(runs, by_experiment) + caveats(runs),
        effect_tables=effect_tables,
        confusion=_confusion_plots(runs) if plots else [],
        environment=environment(runs),
    )


def _per_dataset(slug: str, description: str, runs: list[Run]) -> list[tuple[str, str, list[Run]]]:
    """A ResNet grid over several datasets becomes one table per dataset, as published."""
    datasets = list(dict.fromkeys(run.spec.dataset for run in runs))
    if len(datasets) == 1 or table_kind(runs) != "grid":
        return [(slug, description, runs)]
    return [
        (
            f"{slug}-{dataset}",
            f"{description} ({dataset_name(dataset)})" if description else "",
            [run for run in runs if run.spec.dataset == dataset],
        )
        for dataset in datasets
    ]


def _section(experiment: str, runs: list[Run], description: str, plots: bool) -> Section:
    table = build_table(experiment, runs, description)
    section = Section(experiment, table, runs)
    if table.kind == "devices" and not any(speedup(k) for k in device_groups(runs).values()):
        section.notes.append(
            "No CPU-vs-GPU bar chart: no config has a finished run on both a CPU and a GPU "
            "(see the table for why the GPU cells are empty)."
        )
    if not plots:
        return section
    drawn = {
        "grid": [_plots.accuracy_heatmap(table), _plots.training_curves(experiment, runs)],
        "svm": [_plots.svm_scatter(experiment, runs)],
        "devices": [_plots.device_bars(experiment, runs), _plots.training_curves(experiment, runs)],
    }[table.kind]
    section.plots = [plot for plot in drawn if plot is not None]
    return section


def _confusion_plots(runs: list[Run]) -> list[_plots.Plot]:
    plots = []
    for dataset in dict.fromkeys(run.spec.dataset for run in runs):
        best = best_run(runs, dataset)
        if best is not None:
            plots.append(_plots.confusion(best))
    return plots


# Which environment entries to show, in this order, with the label a reader expects.
_ENVIRONMENT_KEYS = (
    ("hostname", "host"),
    ("platform", "platform"),
    ("cpu", "CPU"),
    ("cpu_count", "CPU cores"),
    ("threads", "threads per run"),
    ("gpu", "GPU"),
    ("cuda", "CUDA"),
    ("cudnn", "cuDNN"),
    ("python", "Python"),
    ("torch", "PyTorch"),
    ("torchvision", "torchvision"),
    ("sklearn", "scikit-learn"),
    ("numpy", "NumPy"),
    ("svm_backend", "SVM back-end"),
    ("mnistbench", "mnistbench"),
    ("git_commit", "git commit"),
)


def environment(runs: list[Run]) -> list[tuple[str, str]]:
    """Each entry's distinct values over the finished runs, with run counts when they differ."""
    values: dict[str, dict[str, int]] = {}
    for run in runs:
        if run.result is None:
            continue
        env = dict(run.result.environment)
        if run.device_kind == "cuda" and not run.spec.is_svm:
            env["gpu"] = env.get("device_name")
        if run.result.backend:
            env["svm_backend"] = run.result.backend
        for key, _ in _ENVIRONMENT_KEYS:
            if env.get(key) is not None:
                counter = values.setdefault(key, {})
                counter[str(env[key])] = counter.get(str(env[key]), 0) + 1
    rows = []
    for key, label in _ENVIRONMENT_KEYS:
        counter = values.get(key)
        if key == "gpu" and not counter:
            rows.append((label, "none (no run used a GPU)"))
        elif counter:
            text = (
                ", ".join(counter)
                if len(counter) == 1
                else ", ".join(f"{v} ({n} runs)" for v, n in counter.items())
            )
            rows.append((label, text))
    return rows

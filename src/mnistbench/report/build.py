"""Assemble a report from a store: one Experiment per section with its table and plots, the
headline, the insights and the machine context. The writers only format what is here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mnistbench.errors import UserError
from mnistbench.report import insights as said
from mnistbench.report import plots as drawn
from mnistbench.report import plots_compare as side
from mnistbench.report.compare import Experiment, Insight, effects, kind, outliers
from mnistbench.report.frame import finished, load_runs, numeric
from mnistbench.report.search import SearchSection, search_sections, searched_experiments
from mnistbench.report.tables import Table, build_table, machine_once
from mnistbench.report.text import counts, label, show
from mnistbench.study.store import Store

# Environment entries in the header, in this order, with the label a reader expects.
ENVIRONMENT = (
    ("env_cpu", "CPU"), ("env_cpu_count", "CPU cores"), ("env_threads", "threads per run"),
    ("env_gpu", "GPU"), ("env_cuda", "CUDA"), ("env_python", "Python"), ("env_torch", "PyTorch"),
    ("env_torchvision", "torchvision"), ("env_sklearn", "scikit-learn"), ("env_numpy", "NumPy"),
    ("backend", "SVM back-end"), ("env_mnistbench", "mnistbench"), ("env_git_commit", "git commit"),
    ("env_hostname", "host"),
)  # fmt: skip


@dataclass
class Section:
    exp: Experiment
    table: Table
    plots: list[drawn.Plot]


@dataclass
class Report:
    """Everything the writers need, computed once: they format, they never compute."""

    title: str
    description: str
    generated_at: str
    store_path: str
    runs: pd.DataFrame
    """The tidy table: one row per run."""
    sections: list[Section]
    headline: list[Insight]
    insights: list[Insight]
    confusion: list[drawn.Plot]
    environment: list[tuple[str, str]]
    best_models: list[tuple[str, str]]
    """(what, model file) for the best runs that kept their model."""
    searches: list[SearchSection] = field(default_factory=list)
    """A section per searched experiment (search.py)."""
    caveat: str = ""
    """The one caveat atop the report (configs with one seed: their gaps are untested)."""

    @property
    def plots(self) -> list[drawn.Plot]:
        figures = [plot for section in self.sections for plot in section.plots]
        figures += [plot for search in self.searches for plot in search.plots]
        return figures + self.confusion

    def status_line(self) -> str:
        """'16 runs: 12 ok, 1 diverged, 1 failed, 2 skipped'."""
        return f"{len(self.runs)} runs: {counts(self.runs['state'])}"


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
    runs = load_runs(store, study)
    if runs.empty:
        known = ", ".join(sorted({name for name, _ in store.experiments()}))
        which = f" of study {study!r}" if study else ""
        raise EmptyReportError(
            f"{store.path} has no runs{which}" + f"; studies in it: {known}" * bool(known)
        )
    studies = list(dict.fromkeys(s for pairs in runs["memberships"] for s, _ in pairs))
    searched = searched_experiments(store, study)  # their own sections: search.py
    exps = experiments(runs, descriptions or {}, several=len(studies) > 1, leave_out=set(searched))
    headline = said.best_configs(exps, "grid") + said.best_configs(exps, "svm")
    headline += said.gpu_speedup(exps)
    insights = said.model_sizes(exps) + [i for e in exps for i in effects(e)] + said.claims(exps)
    insights += [i for e in exps for i in outliers(e)] + said.caveats(runs)
    tables = machine_once([build_table(e) for e in exps])
    return Report(
        title=f"mnistbench report: study {', '.join(studies)}",
        description=study_description,
        generated_at=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        store_path=str(Path(store.path)),
        runs=runs,
        sections=[
            Section(e, t, figures(e) if plots else []) for e, t in zip(exps, tables, strict=True)
        ],
        headline=headline,
        insights=insights,
        searches=search_sections(store, study, plots),
        confusion=confusion_plots(runs) if plots else [],
        environment=environment(runs),
        best_models=best_models(runs, headline),
        caveat=said.seed_caveat(runs),
    )


def experiments(
    runs: pd.DataFrame,
    descriptions: Mapping[str, str],
    several: bool,
    leave_out: set[tuple[str, str]] = frozenset(),
) -> list[Experiment]:
    """One per (study, experiment) but those in `leave_out` (searches: their own sections); a
    ResNet grid over datasets becomes one per dataset, as published. Experiment names are
    prefixed by their study only when studies mix."""
    found = []
    for (study, name), members in runs.explode("memberships").groupby("memberships", sort=False):
        if (study, name) in leave_out:
            continue
        slug, text = f"{study}-{name}" if several else name, descriptions.get(name, "")
        if kind(members) != "grid" or members["dataset"].nunique() == 1:
            found.append(Experiment(slug, kind(members), members, text, runs))
        else:
            for dataset, part in members.groupby("dataset", sort=False):
                found.append(Experiment(f"{slug}-{dataset}", "grid", part, text, runs))
    return found


def figures(exp: Experiment) -> list[drawn.Plot]:
    """The section's figures, each where it has something to show: the accuracy heatmap,
    accuracy against train time, ResNet-18 against ResNet-50, train time by device (Q2), and
    the training curves."""
    numeric_axes = sum(numeric(exp.configs[a]) for a in exp.axes)  # Q2's table says the rest
    found = [drawn.heatmap(exp) if exp.kind != "devices" or numeric_axes >= 2 else None]
    if exp.kind == "svm":
        found.append(side.svm_scatter(exp))
    else:
        found += [side.resnet_scatter(exp) if exp.kind == "grid" else side.devices(exp)]
        found += [side.models(exp), drawn.curves(exp)]
    return [plot for plot in found if plot is not None]


ENGINES_FIRST = ("torch", "svm")
"""The order of each dataset's confusion matrices: ResNet, SVM, then any other engine."""
KINDS = {"torch": "ResNet", "svm": "SVM"}
"""How a confusion matrix's title names an engine's models: 'best ResNet'."""


def confusion_plots(runs: pd.DataFrame) -> list[drawn.Plot]:
    """Per dataset, the confusion matrix of the most accurate run of each engine that kept one:
    the best ResNet beside the best SVM, whichever is best overall."""
    done = finished(runs[runs["confusion"].notna()])
    order = {engine: i for i, engine in enumerate(ENGINES_FIRST)}
    engines = sorted(done["engine"].unique(), key=lambda e: order.get(e, len(order)))
    found = []
    for dataset in done["dataset"].unique():
        for engine in engines:
            part = done[done["dataset"].eq(dataset) & done["engine"].eq(engine)]
            if not part.empty:
                best = part.loc[part["test_accuracy"].idxmax()]
                found.append(drawn.confusion(best, KINDS.get(engine, engine)))
    return found


def environment(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """Each entry's distinct values over the finished runs, with run counts when they differ."""
    done, rows = runs[runs["state"].eq("ok")], []
    for column, title in ENVIRONMENT:
        values = done[column].dropna().map(lambda v, c=column: show(c, v)).value_counts(sort=False)
        each = [f"{v} ({n} runs)" if len(values) > 1 else v for v, n in values.items()]
        if each or column == "env_gpu":
            rows.append((title, ", ".join(each) or "none (no run used a GPU)"))
    return rows


def best_models(runs: pd.DataFrame, headline: list[Insight]) -> list[tuple[str, str]]:
    """The model files of the headline's best configs (the best seed of each)."""
    found = []
    for insight in (i for i in headline if i.topic in ("best", "svm")):
        kept = runs[runs["key"].isin(insight.runs) & runs["model_path"].notna()]
        if not kept.empty:
            row = kept.loc[kept["test_accuracy"].idxmax()]
            found.append((f"{label(row)}, seed {row['seed']}", str(row["model_path"])))
    return found

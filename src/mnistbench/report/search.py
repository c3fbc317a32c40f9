"""The report's search sections: per searched experiment, read from its Optuna storage and the
store, the best trial (its config, and its test accuracy, measured on it and not used to choose
it), the optimisation history, Optuna's parameter importances, the trials pruned and at which
epoch, and, where a grid of the same space ran in the store, the two side by side (best
accuracy, and the compute each spent: training images and seconds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from matplotlib.figure import Figure

from mnistbench.pruning import rdb_storage
from mnistbench.report.plots import Plot, to_plot
from mnistbench.report.tables import Table
from mnistbench.report.text import show
from mnistbench.study.search import RUN_KEY, SPEC, storage_path, storage_url
from mnistbench.study.store import RunRecord, Store

if TYPE_CHECKING:
    import optuna

    from mnistbench.config import RunSpec

METRIC_LABELS = {"val_accuracy": ("validation accuracy", "%"), "train_loss": ("train loss", "")}
"""How the report names a search's metric (search_space.METRICS), and its unit."""


def metric_label(metric: str, axis: bool = False) -> str:
    """'validation accuracy 83.00 %' in a sentence, 'validation accuracy (%)' on an axis."""
    name, unit = METRIC_LABELS.get(metric, (metric, ""))
    return f"{name} ({unit})" if axis and unit else name


NOT_SPACE = ("seed", "threads", "trial", "device")
"""Fields left out when two runs are compared for 'the same space' (how they ran, not what)."""


@dataclass
class SearchSection:
    experiment: str
    optuna_study: str
    storage: str
    lines: list[str]
    """The best trial, the importances, the pruned trials: one sentence each."""
    trials: Table
    versus: Table | None = None
    plots: list[Plot] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return f"search-{self.experiment}"


def searched_experiments(store: Store, study: str | None) -> dict[tuple[str, str], str]:
    """(study, experiment) -> the Optuna study's name, for each search in the store's storage."""
    import optuna

    if not storage_path(Path(store.path)).exists():
        return {}
    found = {}
    for summary in optuna.get_all_study_summaries(rdb_storage(storage_url(Path(store.path)))):
        owner = summary.user_attrs.get("mnistbench", {})
        if owner and (study is None or owner.get("study") == study):
            found[(owner["study"], owner["experiment"])] = summary.study_name
    return found


def search_sections(store: Store, study: str | None, plots: bool = True) -> list[SearchSection]:
    import optuna

    sections, url = [], storage_url(Path(store.path))
    for (study_name, experiment), name in searched_experiments(store, study).items():
        opened = optuna.load_study(study_name=name, storage=rdb_storage(url))
        trials = opened.get_trials(deepcopy=False)
        records = {t.number: store.get(t.user_attrs.get(RUN_KEY, "")) for t in trials}
        complete = _complete(trials)
        section = SearchSection(
            experiment, name, url,
            lines=_best_line(opened, complete, records) + _importance_line(opened, complete)
            + _pruned_lines(trials, records),
            trials=_trials_table(experiment, trials, records),
            versus=_versus(store, study_name, experiment, trials, records),
        )  # fmt: skip
        if plots:
            metric = opened.user_attrs.get("mnistbench", {}).get("metric", "value")
            maximize = opened.direction == optuna.study.StudyDirection.MAXIMIZE
            section.plots.append(history_plot(experiment, trials, metric, maximize))
        sections.append(section)
    return sections


def _complete(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    import optuna

    return [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]


def _best_line(
    opened: optuna.Study, complete: list, records: dict[int, RunRecord | None]
) -> list[str]:
    if not complete:
        return ["No trial has finished yet."]
    best = opened.best_trial
    record = records.get(best.number)
    test = record.result.test_accuracy if record and record.result else None
    config = ", ".join(f"{name} {show(name, value)}" for name, value in best.params.items())
    metric = opened.user_attrs.get("mnistbench", {}).get("metric", "value")
    tested = (f"; its test accuracy {test:.2f} % (measured on this trial only, not used to "
              "choose it)") if test is not None else ""  # fmt: skip
    unit = METRIC_LABELS.get(metric, ("", ""))[1]
    value = f"{best.value:.2f}" + (f" {unit}" if unit else "")
    return [f"Best trial: #{best.number} ({config}): {metric_label(metric)} {value}{tested}."]


def _importance_line(opened: optuna.Study, complete: list) -> list[str]:
    """Optuna's own importances (fANOVA), where there is enough to say anything."""
    import optuna

    if len(complete) < 4:
        return []
    try:
        importances = optuna.importance.get_param_importances(opened)
    except (RuntimeError, ValueError):  # a space of one point, or too few distinct trials
        return []
    text = ", ".join(f"{name} {share:.0%}" for name, share in importances.items())
    return [f"Parameter importances (Optuna's fANOVA over the complete trials): {text}."]


def _pruned_lines(trials: list, records: dict[int, RunRecord | None]) -> list[str]:
    import optuna

    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    if not pruned:
        return []
    where = "; ".join(f"#{t.number} after epoch {max(t.intermediate_values, default=0)}"
                      for t in pruned)  # fmt: skip
    return [f"{len(pruned)} of {len(trials)} trials pruned: {where}."]


def _trials_table(experiment: str, trials: list, records: dict[int, RunRecord | None]) -> Table:
    rows = []
    for trial in trials:
        record = records.get(trial.number)
        result = record.result if record else None
        rows.append({
            "trial": trial.number,
            **{name: show(name, value) for name, value in trial.params.items()},
            "state": trial.state.name.lower(),
            "epochs": max(trial.intermediate_values, default=0) or "",
            "value": f"{trial.value:.2f}" if trial.value is not None else "",
            "train s": f"{result.train_seconds:.1f}" if result and result.train_seconds else "",
            "run": trial.user_attrs.get(RUN_KEY, "")[:8],
        })  # fmt: skip
    cells = pd.DataFrame(rows).astype(str)
    values = pd.DataFrame(float("nan"), index=cells.index, columns=cells.columns)
    notes = ["value: the trial's metric on the validation split (its last epoch)."]
    return Table(
        f"search-{experiment}-trials", f"{experiment}: trials", "search", cells, values, notes
    )


def _fixed(spec: dict[str, Any], space: set[str]) -> str:
    return json.dumps({k: v for k, v in spec.items() if k not in space and k not in NOT_SPACE},
                      sort_keys=True, default=str)  # fmt: skip


def _versus(
    store: Store, study: str, experiment: str, trials: list, records: dict[int, RunRecord | None]
) -> Table | None:
    """The search beside each grid over the same space in the store: same fixed fields, every
    one of its runs a point of the space."""
    if not trials or SPEC not in trials[0].user_attrs:
        return None
    space = set(trials[0].distributions)
    fixed = _fixed(trials[0].user_attrs[SPEC], space)
    searched = list({r.key: r for r in records.values() if r}.values())  # a run once
    rows = [_spent(f"search {experiment}", searched)]
    for other_study, other in store.experiments():
        if (other_study, other) == (study, experiment):
            continue
        runs = store.runs(other_study, other)
        if runs and all(_in_space(r.spec, fixed, trials[0].distributions) for r in runs):
            rows.append(_spent(f"grid {other}", runs))
    if len(rows) < 2:
        return None
    cells = pd.DataFrame(rows).astype(str)
    values = pd.DataFrame(float("nan"), index=cells.index, columns=cells.columns)
    notes = ["compute: the training images every run consumed (a pruned trial: its epochs) and "
             "their train seconds; best: the highest validation accuracy, with that run's test "
             "accuracy."]  # fmt: skip
    return Table(f"search-{experiment}-versus", f"{experiment} against a grid of the same space",
                 "search", cells, values, notes)  # fmt: skip


def _in_space(spec: RunSpec, fixed: str, distributions: dict[str, Any]) -> bool:
    """Whether a run (not a trial) is a point of the search's space: its fixed fields the
    search's, its searched ones inside the search's ranges and lists."""
    values = spec.to_dict()
    return (
        spec.trial is None
        and _fixed(values, set(distributions)) == fixed
        and _inside(distributions, values)
    )


def _inside(distributions: dict[str, Any], values: dict[str, Any]) -> bool:
    """Whether a run's values of the searched fields are points of the search's space: a
    grid that reaches past it (a wider lr range) is no measure of what the search could find."""
    import optuna

    for name, distribution in distributions.items():
        value = values.get(name)
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            if value not in distribution.choices:
                return False
        elif (
            not isinstance(value, (int, float))
            or not distribution.low <= value <= distribution.high
        ):
            return False
    return True


def _spent(name: str, records: list[RunRecord]) -> dict[str, str]:
    finished = [r for r in records if r.result is not None]
    scored = [r for r in finished if r.status == "done" and r.result.val_accuracy is not None]
    best = max(scored, key=lambda r: r.result.val_accuracy) if scored else None
    images = sum(e.images for r in finished for e in r.result.history)
    seconds = sum(r.result.train_seconds or 0.0 for r in finished)
    return {
        "": name,
        "runs": str(len(records)),
        "pruned": str(sum(r.status == "pruned" for r in records)),
        "best val %": f"{best.result.val_accuracy:.2f}" if best else "",
        "its test %": f"{best.result.test_accuracy:.2f}"
        if best and best.result.test_accuracy is not None
        else "",
        "training images": f"{images:,}",
        "train s": f"{seconds:.0f}",
    }


def history_plot(experiment: str, trials: list, metric: str, maximize: bool) -> Plot:
    """Each trial's value by trial number, the best so far as a step line; pruned trials at
    their last reported value, marked apart."""
    import optuna

    states = optuna.trial.TrialState
    figure = Figure(figsize=(6.4, 3.6), layout="constrained")
    axes = figure.subplots()
    complete = [t for t in trials if t.state == states.COMPLETE]
    pruned = [t for t in trials if t.state == states.PRUNED and t.intermediate_values]
    axes.scatter([t.number for t in complete], [t.value for t in complete], label="complete")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        axes.scatter([t.number for t in pruned], last, marker="x", color="grey",
                     label="pruned (last epoch reported)")  # fmt: skip
    if complete:
        best, so_far = [], None
        for trial in complete:
            better = max if maximize else min
            so_far = trial.value if so_far is None else better(so_far, trial.value)
            best.append(so_far)
        axes.step([t.number for t in complete], best, where="post", color="C1", label="best so far")
    axes.set(
        xlabel="trial",
        ylabel=metric_label(metric, axis=True),
        title=f"{experiment}: optimisation history",
    )
    axes.legend(loc="lower right", fontsize=8)
    caption = (f"Each trial's {metric_label(metric)} in the order the trials were asked; the "
               "line is the best so far.")  # fmt: skip
    return to_plot(f"search-{experiment}-history", f"{experiment}: optimisation history",
                   caption, figure)  # fmt: skip

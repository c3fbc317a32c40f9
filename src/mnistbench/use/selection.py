"""Which model file a command uses: `--model PATH`, `--run KEY` (a unique prefix is enough) or
`--best` (the most accurate run of a study or experiment in the store that still has its model).

Every way a choice can fail is a UserError that says what there is instead: an unknown key, a
prefix that fits several runs (listed), a run whose model was not kept (and why: the study's
keep_models policy), a study with no model left.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mnistbench.errors import UserError
from mnistbench.study.cleanup import checkpoint_dir_for
from mnistbench.study.store import RunRecord, Store

MIN_PREFIX = 4  # shorter prefixes match too much to be meant


@dataclass(frozen=True)
class Choice:
    """The model file chosen, and the run it belongs to (None for `--model PATH`)."""

    path: Path
    record: RunRecord | None = None
    why: str | None = None
    """For `--best`: which run it chose and why."""

    def describe(self) -> str:
        if self.record is None:
            return str(self.path)
        result = self.record.result
        accuracy = (
            f", test accuracy {result.test_accuracy:.2f} %"
            if result and result.test_accuracy is not None
            else ""
        )
        return f"run {self.record.key} ({self.record.spec.label()}{accuracy}): {self.path}"


class SelectionError(UserError):
    flag = "--run"


def by_key(store: Store, prefix: str) -> Choice:
    """The run whose key starts with `prefix`, which must name exactly one run."""
    prefix = prefix.strip().lower()
    if len(prefix) < MIN_PREFIX:
        raise SelectionError(
            f"run key prefix {prefix!r} is too short: give {MIN_PREFIX}+ characters"
        )
    matches = [record for record in store.runs() if record.key.startswith(prefix)]
    if not matches:
        raise SelectionError(f"no run in {store.path} has a key starting with {prefix!r}")
    if len(matches) > 1:
        listed = "; ".join(f"{r.key} ({r.spec.label()})" for r in matches[:10])
        raise SelectionError(
            f"run key prefix {prefix!r} is ambiguous: {len(matches)} runs match: {listed}"
        )
    return Choice(model_file(matches[0], store.path), matches[0])


def best(
    store: Store, study: str | None, experiment: str | None = None, dataset: str | None = None
) -> Choice:
    """The run the report names best: the finished config with the highest mean test accuracy
    over its seeds, within `experiment`, or else among the report's headline experiments
    (`ranked_configs`); of that config, its most accurate seed whose model file is still there
    (a config with none left gives way to the next)."""
    from mnistbench.report.frame import load_runs

    where = " ".join(
        part for part in (
            f"study {study!r}" if study else "the store",
            f"experiment {experiment!r}" if experiment else "",
            f"dataset {dataset!r}" if dataset else "",
        ) if part
    )  # fmt: skip
    runs = load_runs(store, study)
    if not runs.empty and experiment is not None:
        runs = runs[runs["memberships"].map(lambda pairs: any(e == experiment for _, e in pairs))]
    if not runs.empty and dataset is not None:
        runs = runs[runs["dataset"].eq(dataset)]
    ranked = ranked_configs(runs, experiment)
    if ranked.empty:
        raise SelectionError(f"{where} has no finished run in {store.path}")
    records = {r.key: r for r in store.runs(study, experiment)}
    for position, row in enumerate(ranked.to_dict("records")):
        keys = runs.loc[runs["config"].eq(row["config"]), "key"]
        kept = [records[k] for k in keys if k in records and _finished(records[k])
                and existing_model(records[k], store.path) is not None]  # fmt: skip
        if kept:
            chosen = max(kept, key=lambda r: r.result.test_accuracy)
            return Choice(
                model_file(chosen, store.path),
                chosen,
                _why(chosen, row, ranked, position, experiment is not None),
            )
    raise SelectionError(
        f"none of the {len(ranked)} finished configs of {where} has a model file left (a "
        "study keeps the best model per experiment by default: keep_models; a model "
        "deleted by `study clean` is gone): train one again with `study run`"
    )


HEADLINE_KINDS = {"grid": 0, "svm": 1, "devices": 2}
"""Per dataset, `--best` without `--experiment` ranks the configs of the first kind here that
has a finished config, as the report's headline names its best (insights.best_configs): the
Q1(a) grids, else the SVMs; timed Q2 device runs only where neither ran."""


def ranked_configs(runs: pd.DataFrame, experiment: str | None = None) -> pd.DataFrame:
    """The finished configs `--best` chooses from, most accurate (mean over seeds) first, with
    the experiment (`exp`) each belongs to, as the report computes them (report/build.py)."""
    from mnistbench.report.build import experiments
    from mnistbench.report.compare import Experiment, kind

    if runs.empty:
        return pd.DataFrame(columns=["config", "dataset", "exp", "test_accuracy_mean"])
    if experiment is not None:
        exps = [Experiment(experiment, kind(runs), runs)]
    else:
        studies = {s for pairs in runs["memberships"] for s, _ in pairs}
        exps = experiments(runs, {}, several=len(studies) > 1)
    done = pd.concat([e.done.assign(exp=e.slug, kind=e.kind) for e in exps])
    if experiment is None:
        order = done["kind"].map(HEADLINE_KINDS)
        done = done[order.eq(order.groupby(done["dataset"]).transform("min"))]
    return done.sort_values("test_accuracy_mean", ascending=False)


def _finished(record: RunRecord) -> bool:
    return (record.status == "done" and record.result is not None
            and record.result.test_accuracy is not None)  # fmt: skip


def _why(record: RunRecord, row: dict, ranked: pd.DataFrame, position: int, scoped: bool) -> str:
    """'run KEY (label, experiment E): the highest mean test accuracy, 98.90 % over 2 seeds,
    among 8 finished configs of E'."""
    seeds, names = int(row["n_ok"]), ", ".join(dict.fromkeys(ranked["exp"]))
    scope = (
        names
        if scoped
        else (
            f"the report's headline experiments ({names}: per dataset the Q1(a) grids, else the "
            "SVMs, else the Q2 device runs)"
        )
    )
    text = (
        f"run {record.key} ({record.spec.label()}, experiment {row['exp']}): the highest mean "
        f"test accuracy, {row['test_accuracy_mean']:.2f} % over {seeds} seed{'s' * (seeds != 1)}"
        f", among {len(ranked)} finished config{'s' * (len(ranked) != 1)} of {scope}"
    )
    if position:
        text += f"; the {position} more accurate config(s) have no model file left"
    return text


def model_file(record: RunRecord, store_path: Path | None = None) -> Path:
    """A run's model file, or why it has none."""
    path = existing_model(record, store_path)
    if path is not None:
        return path
    if record.status != "done" or record.result is None:
        raise SelectionError(
            f"run {record.key} ({record.spec.label()}) is {record.status}: it has no model"
        )
    advertised = record.result.model_path
    if advertised:
        raise SelectionError(f"run {record.key}: its model file {advertised} is missing")
    raise SelectionError(
        f"run {record.key} ({record.spec.label()}) has no model file: its study did not keep it "
        "(keep_models keeps the best run's per experiment by default), or it was deleted by "
        "`study clean`; `--best` picks a run that has one"
    )


def existing_model(record: RunRecord, store_path: Path | None = None) -> Path | None:
    """The run's model file when it is there: at its stored model_path, or, for a path stored
    relative to the folder the study ran in, under the store's checkpoint folder."""
    stored = record.result.model_path if record.result else None
    if not stored:
        return None
    candidates = [Path(stored)]
    if store_path is not None and not Path(stored).is_absolute():
        candidates.append(checkpoint_dir_for(store_path) / Path(stored).name)
    return next((path for path in candidates if path.is_file()), None)


def model_path(path: Path) -> Choice:
    """`--model PATH`: a file that must exist."""
    if not path.is_file():
        why = "a folder, not a model file" if path.is_dir() else "no such model file"
        error = SelectionError(f"{path}: {why}")
        error.flag = "--model"
        raise error
    return Choice(path)

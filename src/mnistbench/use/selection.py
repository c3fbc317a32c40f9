"""Which model file a command uses: `--model PATH`, `--run KEY` (a unique prefix is enough) or
`--best` (the most accurate run of a study or experiment in the store that still has its model).

Every way a choice can fail is a UserError that says what there is instead: an unknown key, a
prefix that fits several runs (listed), a run whose model was not kept (and why: the study's
keep_models policy), a study with no model left.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnistbench.errors import UserError
from mnistbench.study.cleanup import checkpoint_dir_for
from mnistbench.study.store import RunRecord, Store

MIN_PREFIX = 4  # shorter prefixes match too much to be meant


@dataclass(frozen=True)
class Choice:
    """The model file chosen, and the run it belongs to (None for `--model PATH`)."""

    path: Path
    record: RunRecord | None = None

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
    """The most accurate done run (test accuracy) of the study / experiment / dataset whose
    model file is still there."""
    records = [
        r for r in store.runs(study, experiment)
        if r.status == "done" and r.result is not None and r.result.test_accuracy is not None
        and (dataset is None or r.spec.dataset == dataset)
    ]  # fmt: skip
    where = " ".join(
        part for part in (
            f"study {study!r}" if study else "the store",
            f"experiment {experiment!r}" if experiment else "",
            f"dataset {dataset!r}" if dataset else "",
        ) if part
    )  # fmt: skip
    if not records:
        raise SelectionError(f"{where} has no finished run in {store.path}")
    with_model = [r for r in records if existing_model(r, store.path) is not None]
    if not with_model:
        raise SelectionError(
            f"none of the {len(records)} finished runs of {where} has a model file left (a "
            "study keeps the best model per experiment by default: keep_models; a model "
            "deleted by `study clean` is gone): train one again with `study run`"
        )
    chosen = max(with_model, key=lambda r: r.result.test_accuracy)
    return Choice(model_file(chosen, store.path), chosen)


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
        error = SelectionError(f"{path}: no such model file")
        error.flag = "--model"
        raise error
    return Choice(path)

"""Final models and epoch checkpoints on disk: a study's keep policy, and `study clean`.

A study's runs keep their files in the checkpoint directory next to the store
(`checkpoint_dir_for`): `<key>.ckpt.pt`, the last finished epoch of a run that has not finished
(resumed from, removed when the run finishes), and `<key>.model.<extension>`, the final model
(`.model.pt` for a ResNet, `.model.skops` for an SVM: each engine's `model_suffix`), which the
stored result advertises as `model_path`. The names are checkpoint.py's and the engines' (a
test checks that they agree); this module imports no torch, so that `study clean` starts at
once.

Two rules hold everywhere here: a run that a live process holds is never touched
(`Store.unclaimed` keeps the write lock while its files go, so nobody claims it meanwhile), and
the model of a run that another study also has is never deleted (that study may keep it). A
deleted model is forgotten in the store (`Store.forget_model`), so no result advertises it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mnistbench.engines.modelfile import MODEL_MARK
from mnistbench.study.file import StudySpec
from mnistbench.study.store import RunRecord, Store, StoreError

CHECKPOINT_SUFFIX = ".ckpt.pt"


def checkpoint_dir_for(store_path: Path) -> Path:
    """Epoch checkpoints and final models live next to the store they belong to."""
    return store_path.parent / "checkpoints"


@dataclass
class Cleaned:
    """What a cleanup removed, and the runs it left alone and why."""

    files: int = 0
    bytes: int = 0
    runs: set[str] = field(default_factory=set)
    """Keys of the runs that lost a file."""
    claimed: set[str] = field(default_factory=set)
    """Runs left alone: a live process holds them."""
    shared: set[str] = field(default_factory=set)
    """Runs left alone: another study has them too."""


def run_files(
    directory: Path, key: str, *, models: bool = True, checkpoints: bool = True
) -> list[Path]:
    """The files a run has in the checkpoint directory (its checkpoint's name, there or not)."""
    found = [directory / f"{key}{CHECKPOINT_SUFFIX}"] if checkpoints else []
    if models:
        found += sorted(directory.glob(f"{key}{MODEL_MARK}*"))
    return found


def remove_run_files(
    store: Store,
    directory: Path,
    key: str,
    cleaned: Cleaned,
    *,
    record: RunRecord | None = None,
    checkpoints: bool = True,
) -> None:
    """Delete a run's checkpoint (when asked) and final model, unless a live process holds it,
    and forget the model in the store.

    Only files inside `directory`, this store's checkpoint directory, are deleted: a result's
    model_path elsewhere belongs to another copy of the store (a store copied to another
    folder still names the original's files), which this one must not empty.
    """
    paths = run_files(directory, key, checkpoints=checkpoints)
    advertised = record.result.model_path if record and record.result else None
    with store.unclaimed(key) as free:
        if not free:
            cleaned.claimed.add(key)
            return
        for path in dict.fromkeys(paths):
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            cleaned.files += 1
            cleaned.bytes += size
            cleaned.runs.add(key)
    if advertised:
        store.forget_model(key)


def _elsewhere(store: Store, key: str, study: str, beside: set[str] | None) -> bool:
    """Whether another study has this run too: in this store, or in a store beside it that
    shares the checkpoint directory (`beside`: their keys; None when one cannot be read, and
    then every run counts as shared, since none can be deleted for sure)."""
    if beside is None or key in beside:
        return True
    return any(name != study for name, _ in store.memberships(key))


def _best_with_model(store: Store, study: str, experiment: str) -> str | None:
    """The key of the experiment's most accurate done run that still has a model."""
    candidates = [
        record
        for record in store.runs(study, experiment, with_model=True)
        if record.status == "done"
        and record.result is not None
        and record.result.model_path is not None
        and record.result.test_accuracy is not None
    ]
    best = max(candidates, key=lambda r: r.result.test_accuracy, default=None)
    return best.key if best else None


def apply_keep_policy(store: Store, study: str, key: str, policy: str, directory: Path) -> Cleaned:
    """After run `key` of `study` is recorded: delete the final models the policy does not keep,
    among the runs of the experiments that `key` belongs to.

    "all" keeps every model; "none" keeps none; "best" keeps, per experiment, the model of the
    most accurate done run that has one (a run best in any of its experiments is kept).
    """
    cleaned = Cleaned()
    if policy == "all":
        return cleaned
    experiments = [name for owner, name in store.memberships(key) if owner == study]
    runs = {r.key: r for e in experiments for r in store.runs(study, e, with_model=True)}
    best: dict[str, str | None] = {}

    def is_best(run_key: str) -> bool:
        for owner, experiment in store.memberships(run_key):
            if owner == study and experiment not in best:
                best[experiment] = _best_with_model(store, study, experiment)
            if owner == study and best[experiment] == run_key:
                return True
        return False

    beside = keys_beside(store.path)
    for record in runs.values():
        if record.result is None or record.result.model_path is None:
            continue
        if _elsewhere(store, record.key, study, beside):
            cleaned.shared.add(record.key)
        elif policy == "none" or not is_best(record.key):
            remove_run_files(
                store, directory, record.key, cleaned, record=record, checkpoints=False
            )
    return cleaned


def clean_study(store: Store, study: str, directory: Path) -> Cleaned:
    """Delete the checkpoints and final models of every run of `study` (but claimed runs, and
    runs another study has too)."""
    cleaned = Cleaned()
    beside = keys_beside(store.path)
    for record in store.runs(study):
        if _elsewhere(store, record.key, study, beside):
            cleaned.shared.add(record.key)
        else:
            remove_run_files(store, directory, record.key, cleaned, record=record)
    return cleaned


def study_keys(study: StudySpec) -> set[str]:
    """The keys of every run the study file has, on any machine: a device 'auto' run counts
    under its own key and under that of each device kind it resolves to (`study.expand`)."""
    keys = set()
    for experiment in study.experiments:
        for spec in experiment.specs():
            keys.add(spec.key())
            if spec.device == "auto" and spec.reads("device"):
                keys.update(spec.replace(device=kind).key() for kind in ("cpu", "cuda", "mps"))
    return keys


def keys_beside(store_path: Path) -> set[str] | None:
    """The run keys of the other stores beside this one, which share its checkpoint directory
    (`results/speedrun.db` and `results/mnistbench.db`); None when a SQLite file there cannot be
    read as a store, so that no file can be called an orphan for sure."""
    keys: set[str] = set()
    for path in sorted(store_path.parent.iterdir()):
        if path == store_path or not path.is_file():
            continue
        with path.open("rb") as handle:
            if handle.read(16) != b"SQLite format 3\0":
                continue
        try:
            with Store(path) as other:
                keys.update(record.key for record in other.runs())
        except StoreError:
            return None
    return keys


def clean_orphans(
    store: Store, directory: Path, study: str, current: set[str], beside: set[str] | None
) -> Cleaned:
    """Delete the files of runs no longer in any study: runs stored as `study`'s that its file
    no longer has (`current`: the keys it expands to) and that no other study has, and files in
    the checkpoint directory of runs in no study of this store nor of the stores beside it
    (`beside`: their keys, None when unknown: then no such file is deleted)."""
    cleaned = Cleaned()
    for record in store.runs(study):
        if record.key in current:
            continue
        if _elsewhere(store, record.key, study, beside):
            cleaned.shared.add(record.key)
        else:
            remove_run_files(store, directory, record.key, cleaned, record=record)
    if beside is None:
        return cleaned
    known = {record.key for record in store.runs()} | beside
    # A model a result still points to is never an orphan, whatever its name says.
    known |= {
        _key_of(Path(r.result.model_path).name)
        for r in store.runs()
        if r.result is not None and r.result.model_path
    }
    for pattern in (f"*{CHECKPOINT_SUFFIX}", f"*{MODEL_MARK}*"):
        for path in sorted(directory.glob(pattern)):
            if path.name.startswith("."):  # a file being written (files.atomic_replace)
                continue
            key = _key_of(path.name)
            if key not in known:
                remove_run_files(store, directory, key, cleaned)
    return cleaned


def _key_of(name: str) -> str:
    """The run key a checkpoint's or model file's name starts with."""
    return name.removesuffix(CHECKPOINT_SUFFIX).split(MODEL_MARK)[0]

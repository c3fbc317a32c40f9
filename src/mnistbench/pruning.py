"""A run that is a search's trial tells its Optuna trial each epoch's metric and asks whether to
go on: the pruner (median, successive halving, Hyperband) is Optuna's, in its RDB storage, so
the run may be in this process, a worker process or a Ray task.

The link travels in the spec's `trial` field as JSON (study/search.py writes it): the storage
URL, the Optuna study's name, the trial's id, the metric's name and the pruner's (Optuna keeps
no pruner in its storage: each process that judges a trial makes the same one).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.pruners import BasePruner

PRUNERS = ("none", "median", "halving", "hyperband")
"""A search's `pruner`: none, Optuna's MedianPruner, SuccessiveHalvingPruner or HyperbandPruner."""
MEDIAN_STARTUP_TRIALS = 3
"""The median pruner stops nothing until this many trials have finished: a median of fewer
says little."""


def make_pruner(name: str) -> BasePruner:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def epoch_value(line: dict[str, Any], metric: str) -> float | None:
    """The metric in an epoch's progress line (EpochRecord.progress_line), or None when the
    epoch did not measure it (no evaluation that epoch, or one on the test split)."""
    value = line.get(metric)
    return float(value) if isinstance(value, (int, float)) else None


@dataclass(frozen=True)
class TrialLink:
    storage: str
    study: str
    trial_id: int
    metric: str
    """The EpochRecord value the trial hears: 'val_accuracy' or 'train_loss'."""
    pruner: str

    def to_text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_text(cls, text: str) -> TrialLink:
        return cls(**json.loads(text))

    def hears(self, epoch: int, line: dict[str, Any], last: bool) -> bool:
        """Tell the trial an epoch's progress line; True when the run should stop after it.
        The last epoch is told too (the pruner compares trials epoch by epoch), never stopped."""
        value = epoch_value(line, self.metric)
        if value is None:
            return False
        stop = self.should_stop(epoch, value)
        return stop and not last

    def should_stop(self, epoch: int, value: float) -> bool:
        """Report the epoch's value to the trial; True when its pruner says to stop here."""
        import optuna

        study = _study(self.storage, self.study, self.pruner)
        trial = optuna.trial.Trial(study, self.trial_id)
        trial.report(value, epoch)
        return trial.should_prune()


@functools.lru_cache(maxsize=4)
def _study(storage: str, name: str, pruner: str) -> Any:
    """One storage connection per process for every epoch of every trial it runs."""
    import optuna

    return optuna.load_study(
        study_name=name, storage=rdb_storage(storage), pruner=make_pruner(pruner)
    )


STORAGE_TIMEOUT_SECONDS = 60
"""How long a SQLite write waits for another process's (workers report every epoch while the
driver asks and tells): SQLite's 5 s default fails a run on a busy storage."""


def rdb_storage(url: str) -> Any:
    """Optuna's RDB storage at `url`, its SQLite connections patient (STORAGE_TIMEOUT_SECONDS);
    the one place a storage is made, so Optuna's per-trial INFO lines are quieted here too."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    connect = {"timeout": STORAGE_TIMEOUT_SECONDS} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect})

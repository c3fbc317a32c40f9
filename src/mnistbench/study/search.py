"""Adaptive search: a study experiment's trials asked of Optuna, each run as an ordinary run of
the store (same key, result, checkpoints and models), its result told back.

The Optuna study lives in an RDB storage beside the store (`mnistbench.db` -> `mnistbench.optuna.db`,
SQLite), so Optuna's own tools read it (`optuna-dashboard sqlite:///results/mnistbench.optuna.db`,
`optuna.load_study`). Its name says the study, the experiment and a digest of the search
(`Search.digest`): a changed space is a new search, a raised `trials` goes on with the old one.

Trials go in batches of `parallel` (the study's --jobs by default) through the study's executor;
each batch is told before the next is asked, so the sampler learns from every finished trial.
A killed search, run again, goes on: a trial left RUNNING in the storage is run again under its
own number (its run resumes from its checkpoint), and new trials are asked only up to `trials`.
A trial whose run the store already has (a sampled config that ran before) is told from the
stored result, never run twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistbench.config import RunSpec
from mnistbench.devices import concrete_spec
from mnistbench.pruning import TrialLink, epoch_value, make_pruner, rdb_storage
from mnistbench.result import RunResult
from mnistbench.study.file import Experiment, StudySpec
from mnistbench.study.store import RunRecord, Store

if TYPE_CHECKING:
    import optuna

RUN_KEY = "run_key"
"""The user attribute of a trial that names its run in the store."""
SPEC = "spec"
"""The user attribute of a trial with its run's spec (to run it again after a kill)."""
TO_RUN = ("pending", "running")  # store statuses of a trial's run that still has to compute


def storage_path(store_path: Path) -> Path:
    """The Optuna storage of a store: a SQLite file beside it."""
    return Path(store_path).with_name(Path(store_path).stem + ".optuna.db")


def storage_url(store_path: Path) -> str:
    return f"sqlite:///{storage_path(store_path).resolve()}"


def optuna_name(study: StudySpec, experiment: Experiment) -> str:
    assert experiment.search is not None
    return f"{study.name}.{experiment.name}.{experiment.search.digest(experiment.fixed)}"


def open_search(
    store_path: Path, study: StudySpec, experiment: Experiment, *, create: bool = True
) -> optuna.Study | None:
    """The experiment's Optuna study, made when `create` (None when it is not and has none)."""
    import optuna

    search = experiment.search
    assert search is not None
    name, url = optuna_name(study, experiment), storage_url(store_path)
    if not create:
        if not storage_path(store_path).exists():
            return None
        try:
            return optuna.load_study(
                study_name=name, storage=url, pruner=make_pruner(search.pruner)
            )
        except KeyError:
            return None
    opened = optuna.create_study(study_name=name, storage=rdb_storage(url), pruner=make_pruner(search.pruner),
                                 direction=search.direction, load_if_exists=True)  # fmt: skip
    opened.sampler = search.make_sampler(asked=len(opened.get_trials(deepcopy=False)))
    opened.set_user_attr("mnistbench", {"study": study.name, "experiment": experiment.name,
                                        "metric": search.metric, "trials": search.trials})  # fmt: skip
    return opened


@dataclass(frozen=True)
class TrialRun:
    """One trial's run, as the executors take runs (experiment, spec, key)."""

    experiment: str
    spec: RunSpec
    trial_id: int
    number: int

    @property
    def key(self) -> str:
        return self.spec.key()


@dataclass
class SearchCounts:
    """Where a search stands: trials finished by state, in flight, and still to ask."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    left: int = 0

    @classmethod
    def of(cls, opened: optuna.Study | None, trials: int) -> SearchCounts:
        import optuna

        counts = cls()
        states = optuna.trial.TrialState
        names = {states.COMPLETE: "complete", states.PRUNED: "pruned", states.FAIL: "failed",
                 states.RUNNING: "running", states.WAITING: "running"}  # fmt: skip
        for trial in opened.get_trials(deepcopy=False) if opened is not None else []:
            name = names[trial.state]
            setattr(counts, name, getattr(counts, name) + 1)
        counts.left = max(0, trials - counts.asked)
        return counts

    @property
    def asked(self) -> int:
        return self.complete + self.pruned + self.failed + self.running

    @property
    def to_run(self) -> int:
        """Trials still to run: those not asked yet and those in flight (a killed search's)."""
        return self.left + self.running


def search_counts(store_path: Path, study: StudySpec, experiment: Experiment) -> SearchCounts:
    """Where an experiment's search stands in the storage (all left when it has none yet)."""
    assert experiment.search is not None
    opened = open_search(store_path, study, experiment, create=False)
    return SearchCounts.of(opened, experiment.search.trials)


def trials_at_once(
    store_path: Path, study: StudySpec, experiment: Experiment, jobs: int | str
) -> int:
    """How many trials a search asks at once: its `parallel`, else --jobs. Under --jobs auto, as
    many as --jobs auto would run of its trials still to run: one per core (and memory) on the
    CPU, or as many as its GPU fraction fits on the GPUs."""
    search = experiment.search
    assert search is not None
    if search.parallel:
        return search.parallel
    if jobs != "auto":
        return int(jobs)
    from mnistbench.config import default_threads
    from mnistbench.devices import visible_gpus
    from mnistbench.measure import available_memory
    from mnistbench.study.scheduler import auto_jobs, gpu_share, gpu_slots

    to_run = search_counts(store_path, study, experiment).to_run
    gpus = visible_gpus()
    edge = {dimension.name: dimension.ends()[0] for dimension in search.space}
    share = gpu_share(concrete_spec(experiment.trial_spec(edge)), experiment.resources, gpus)
    if share is not None:
        return max(1, min(to_run, gpu_slots([share], gpus)))
    return auto_jobs(to_run, default_threads(), available_memory())


def trials_to_run(store_path: Path, study: StudySpec, only: list[str] | None) -> int:
    """The trials the study's searches have still to run (a killed search's included)."""
    return sum(
        search_counts(store_path, study, experiment).to_run
        for experiment in study.select(only)
        if experiment.search is not None
    )


RunBatch = Callable[[list[TrialRun]], None]
"""Runs a batch of trials' runs through the study's executor (claims, records, keep policy)."""


def run_search(
    store: Store,
    store_path: Path,
    study: StudySpec,
    experiment: Experiment,
    run_batch: RunBatch,
    parallel: int,
    log: Callable[[str], None],
) -> SearchCounts:
    """Ask, run and tell trials until the search has its `trials`; the counts at the end."""
    search = experiment.search
    assert search is not None
    opened = open_search(store_path, study, experiment)
    link = {"storage": storage_url(store_path), "study": opened.study_name,
            "metric": search.metric, "pruner": search.pruner}  # fmt: skip
    while True:
        batch = _resumed(opened, experiment, link) + _asked(opened, experiment, link, parallel)
        if not batch:
            break
        for run in batch:  # as a grid would: the link says how a run is judged, not what it is
            store.register(study.name, experiment.name, [run.spec.replace(trial=None)])
        to_run = list({run.key: run for run in batch if _status(store, run.key) in TO_RUN}.values())
        if to_run:
            run_batch(to_run)
        if _tell(opened, batch, store, search.metric) == 0:
            log(f"{experiment.name}: trials still in flight in another process; run again later")
            break
    return SearchCounts.of(opened, search.trials)


def _resumed(opened: optuna.Study, experiment: Experiment, link: dict[str, Any]) -> list[TrialRun]:
    """Trials a killed search left RUNNING: run again under their own numbers."""
    import optuna

    running = opened.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return [_trial_run(experiment, trial, link) for trial in running]


def _asked(
    opened: optuna.Study, experiment: Experiment, link: dict[str, Any], parallel: int
) -> list[TrialRun]:
    """New trials, as many as `parallel` leaves room for beside the resumed ones, never past the
    search's `trials` (a killed search's RUNNING trials count: `_resumed` runs them)."""
    import optuna

    search = experiment.search
    assert search is not None
    counts = SearchCounts.of(opened, search.trials)
    runs = []
    for _ in range(min(counts.left, max(0, parallel - counts.running))):
        trial = opened.ask(search.distributions())
        try:
            spec = concrete_spec(experiment.trial_spec(trial.params))  # keyed as `expand` keys
        except ValueError as exc:  # a point inside the space no run can be: a failed trial
            trial.set_user_attr("error", str(exc))
            opened.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        trial.set_user_attr(RUN_KEY, spec.key())
        trial.set_user_attr(SPEC, spec.to_dict())
        runs.append(_linked(experiment, spec, trial._trial_id, trial.number, link))
    return runs


def _trial_run(experiment: Experiment, trial: optuna.trial.FrozenTrial, link: dict) -> TrialRun:
    """A RUNNING trial's run: its stored spec, or one made from its params (a kill between
    `ask` and storing the spec)."""
    stored = trial.user_attrs.get(SPEC)
    spec = (
        RunSpec.from_dict(stored) if stored else concrete_spec(experiment.trial_spec(trial.params))
    )
    return _linked(experiment, spec, trial._trial_id, trial.number, link)


def _linked(
    experiment: Experiment, spec: RunSpec, trial_id: int, number: int, link: dict[str, Any]
) -> TrialRun:
    """The trial's run, its spec carrying the link its engine reports each epoch through."""
    linked = spec.replace(trial=TrialLink(trial_id=trial_id, **link).to_text())
    return TrialRun(experiment.name, linked, trial_id, number)


def _status(store: Store, key: str) -> str:
    record = store.get(key)
    return record.status if record is not None else "pending"


def _tell(opened: optuna.Study, batch: list[TrialRun], store: Store, metric: str) -> int:
    """Tell each trial of the batch what its run came to; how many were told (a run still in
    flight in another process is not)."""
    import optuna

    told = 0
    for run in batch:
        record = store.get(run.key)
        if record is None or record.status in TO_RUN:
            continue
        value = trial_value(record, metric)
        if value is not None:
            told_as: dict[str, Any] = {"values": value}
        elif record.status == "pruned":
            told_as = {"state": optuna.trial.TrialState.PRUNED}
        else:  # failed, skipped, diverged: no value to learn from
            told_as = {"state": optuna.trial.TrialState.FAIL}
        # Another `study run` on this search may have told it first.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            opened.tell(run.number, skip_if_finished=True, **told_as)
        told += 1
    return told


def trial_value(record: RunRecord, metric: str) -> float | None:
    """The metric of a finished run: its last epoch's, as the pruner heard it (an SVM: its
    result's validation accuracy); None for a run that did not finish normally."""
    result: RunResult | None = record.result
    if record.status != "done" or result is None or result.status != "ok":
        return None
    for entry in reversed(result.history):
        value = epoch_value(entry.progress_line(), metric)
        if value is not None:
            return value
    return getattr(result, metric, None)

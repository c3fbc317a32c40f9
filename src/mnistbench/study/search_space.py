"""A study experiment's `search` table: the space Optuna samples, its sampler and pruner, the
number of trials and the metric, checked key by key like the rest of a study file.

    [experiments.NAME.search]
    trials = 20
    sampler = "tpe"        # tpe, random, cmaes or grid; `seed` seeds it
    pruner = "median"      # none, median, halving (successive halving) or hyperband
    metric = "val_accuracy"

    [experiments.NAME.search.space]
    lr = { low = 1e-4, high = 1e-1, log = true }   # a float range (log or not)
    epochs = { low = 1, high = 5 }                 # integers at both ends: an int range
    optimizer = ["sgd", "adam"]                    # a list: categorical

Only the objects are built here (Optuna's own samplers, pruners and distributions); the
search itself runs in study/search.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mnistbench.config import RunSpec
from mnistbench.pruning import PRUNERS
from mnistbench.specfields import by_hand_fields, field_role

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.samplers import BaseSampler

SAMPLERS = ("tpe", "random", "cmaes", "grid")
METRICS = {"val_accuracy": "maximize", "train_loss": "minimize"}
"""What a trial's value is, from its run's result, and the direction that is better. Never the
test split: the search chooses on validation, and the test accuracy of the best trial is then
an honest estimate."""
DIRECTIONS = ("maximize", "minimize")
SEARCH_KEYS = {"trials", "sampler", "seed", "pruner", "metric", "direction", "space", "parallel"}
RANGE_KEYS = {"low", "high", "log", "step"}
# Fields a search never samples: what the trial is (its seed comes from the experiment) or
# how it runs, not what it computes.
NOT_SEARCHABLE = {"seed", "threads", "device", "dataset", "model"}
SPEED_ONLY = {f.name for f in dataclasses.fields(RunSpec) if field_role(f).identity == "never"}
"""Fields that change how fast a run goes, not what it computes: every value is one run."""


class SearchTableError(ValueError):
    """A bad `search` table; the study file adds the file and experiment to the message."""


@dataclass(frozen=True)
class Dimension:
    """One axis of the space: categorical `choices`, or a `low`..`high` range."""

    name: str
    choices: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    @property
    def is_int(self) -> bool:
        return not self.choices and isinstance(self.low, int) and isinstance(self.high, int)

    def distribution(self) -> BaseDistribution:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.choices:
            return CategoricalDistribution(self.choices)
        if self.is_int:
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=self.step or 1)
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def ends(self) -> tuple[Any, ...]:
        """The values at the space's edges: every choice, or both ends of a range."""
        return self.choices or (self.low, self.high)


@dataclass(frozen=True)
class Search:
    """A parsed `search` table."""

    space: tuple[Dimension, ...]
    trials: int = 20
    sampler: str = "tpe"
    seed: int = 0
    pruner: str = "none"
    """engines.pruning.PRUNERS; each process that judges a trial makes it (make_pruner)."""
    metric: str = "val_accuracy"
    direction: str = "maximize"
    parallel: int | None = None
    """Trials asked at once (default: the study's --jobs); each batch is told before the next."""
    table: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def random_trials(self) -> int:
        """TPE's random trials before it models the space: Optuna's 10, or a quarter of a
        smaller budget (at least 2), so that a search of 8 trials is not all random."""
        return max(2, min(10, self.trials // 4))

    def distributions(self) -> dict[str, BaseDistribution]:
        return {dimension.name: dimension.distribution() for dimension in self.space}

    def make_sampler(self, asked: int = 0) -> BaseSampler:
        """Optuna's sampler, seeded with `seed` plus the trials the search has `asked` so far:
        a search resumed in a new process goes on with fresh draws instead of repeating the
        first ones (a sampler's generator starts over in each process)."""
        import optuna

        seed = self.seed + asked
        if self.sampler == "tpe":  # constant_liar: trials in flight at once spread out
            return optuna.samplers.TPESampler(
                seed=seed, constant_liar=True, n_startup_trials=self.random_trials
            )
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        grid = {dimension.name: list(dimension.choices) for dimension in self.space}
        # The grid's seed only shuffles its points, which trials name by index: one order for
        # every process, or a resumed search would map an index to another point.
        return grid_sampler_without_stop()(grid, seed=self.seed)

    def digest(self, base: dict[str, Any]) -> str:
        """What makes two searches the same search (the trials count aside: raising it goes on
        with the same one): its parsed space, sampler, seed, pruner, metric and direction, and
        the fixed fields of its runs (their seed included)."""
        same = {name: getattr(self, name)
                for name in ("sampler", "seed", "pruner", "metric", "direction")}  # fmt: skip
        same["space"] = [dataclasses.asdict(dimension) for dimension in self.space]
        text = json.dumps({"search": same, "base": base}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def parse_search(table: object, base: dict[str, Any]) -> Search:
    """A `search` table, checked: each error names the key. `base` is the experiment's fixed
    fields, to check that every edge of the space makes a valid run."""
    if not isinstance(table, dict):
        raise SearchTableError("search must be a table")
    for key in table:
        if key not in SEARCH_KEYS:
            raise SearchTableError(
                f"search: unknown key {key!r}; expected one of {sorted(SEARCH_KEYS)}"
            )
    values = {
        "trials": _positive_int(table, "trials", 20),
        "sampler": _choice(table, "sampler", "tpe", SAMPLERS),
        "seed": _integer(table, "seed", 0),
        "pruner": _choice(table, "pruner", "none", PRUNERS),
        "metric": _metric(table),
    }
    values["direction"] = _choice(table, "direction", METRICS[values["metric"]], DIRECTIONS)
    if values["direction"] != METRICS[values["metric"]]:
        raise SearchTableError(
            f"search.direction = {values['direction']!r}: {values['metric']} is better "
            f"{METRICS[values['metric']].removesuffix('imize')}imized"
        )
    values["parallel"] = _positive_int(table, "parallel", None)
    space = _space(table.get("space"))
    if values["sampler"] == "grid" and any(not dimension.choices for dimension in space):
        raise SearchTableError(
            'search.sampler = "grid" samples lists only: give each space key a list'
        )
    search = Search(space, **values, table=table)
    check_runs(search, base)
    return search


def _metric(table: dict[str, Any]) -> str:
    metric = table.get("metric", "val_accuracy")
    if metric == "test_accuracy":
        raise SearchTableError(
            "search.metric = 'test_accuracy': a search chooses on the validation split, never"
            " the test split (use val_accuracy)"
        )
    return _choice(table, "metric", "val_accuracy", tuple(METRICS))


def _space(space: object) -> tuple[Dimension, ...]:
    if not isinstance(space, dict) or not space:
        raise SearchTableError(
            "search.space: give at least one field to search, e.g. lr = { low = 1e-4, high = 1e-1, log = true }"
        )
    known = set(by_hand_fields(RunSpec))
    dimensions = []
    for name, value in space.items():
        where = f"search.space.{name}"
        if name not in known:
            raise SearchTableError(
                f"{where}: unknown key {name!r} (RunSpec fields: {sorted(known)})"
            )
        if name in NOT_SEARCHABLE or name in SPEED_ONLY:
            raise SearchTableError(f"{where}: {name} is not searched (set it in base or a grid)")
        dimensions.append(_dimension(where, name, value))
    return tuple(dimensions)


def _dimension(where: str, name: str, value: object) -> Dimension:
    if isinstance(value, list):
        if not value:
            raise SearchTableError(f"{where}: an empty list")
        return Dimension(name, choices=tuple(value))
    if not isinstance(value, dict):
        raise SearchTableError(f"{where}: a list of choices or {{ low = ..., high = ... }}")
    unknown = set(value) - RANGE_KEYS
    if unknown or not {"low", "high"} <= set(value):
        raise SearchTableError(
            f"{where}: a range is {{ low = ..., high = ..., log = false, step = ... }}"
        )
    low, high, log, step = value["low"], value["high"], value.get("log", False), value.get("step")
    numbers = (int, float)
    if any(isinstance(v, bool) or not isinstance(v, numbers) for v in (low, high)) or low >= high:
        raise SearchTableError(f"{where}: low and high must be numbers with low < high")
    if not isinstance(log, bool):
        raise SearchTableError(f"{where}.log must be true or false")
    if log and (low <= 0 or step is not None):
        raise SearchTableError(f"{where}: a log range needs low > 0 and no step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, numbers) or step <= 0):
        raise SearchTableError(f"{where}.step must be a positive number")
    if _field_type(name) == "int" and not all(isinstance(v, int) for v in (low, high, step or 1)):
        raise SearchTableError(f"{where}: {name} is an integer: give integer low, high and step")
    if _field_type(name) != "int":  # a float field: a float range, however the ends are written
        low, high = float(low), float(high)
    return Dimension(name, low=low, high=high, log=log, step=step)


def _field_type(name: str) -> str:
    """'int', 'float', ... as RunSpec declares the field (None-able or not)."""
    declared = next(f for f in dataclasses.fields(RunSpec) if f.name == name)
    kind = declared.type if isinstance(declared.type, str) else declared.type.__name__
    return kind.split(" | ")[0]


def check_runs(search: Search, base: dict[str, Any]) -> None:
    """Every edge of the space makes a valid run over `base` (the experiment's fields, --set
    overrides included) that the metric can be read from."""
    for dimension in search.space:
        for value in dimension.ends():
            try:
                spec = RunSpec.from_dict({**base, dimension.name: value})
            except ValueError as exc:
                raise SearchTableError(f"search.space.{dimension.name} = {value!r}: {exc}") from exc
    spec = RunSpec.from_dict({**base, **{d.name: d.ends()[0] for d in search.space}})
    if search.metric == "val_accuracy" and spec.split != "assignment" and spec.val_fraction == 0:
        raise SearchTableError(
            "search.metric = 'val_accuracy' needs a validation split: set val_fraction"
            " (e.g. 0.1) in base, or split = 'assignment'"
        )
    if search.metric == "train_loss" and spec.is_svm:
        raise SearchTableError("search.metric = 'train_loss': an SVM has none; use val_accuracy")
    if search.pruner != "none" and search.metric == "val_accuracy" and not spec.eval_each_epoch:
        raise SearchTableError(
            f"search.pruner = {search.pruner!r} judges each epoch: eval_each_epoch must be true"
        )


def _choice(table: dict[str, Any], key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = table.get(key, default)
    if value not in allowed:
        raise SearchTableError(f"search.{key} = {value!r}: choose one of {', '.join(allowed)}")
    return value


def _integer(table: dict[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SearchTableError(f"search.{key} = {value!r}: must be an integer")
    return value


def _positive_int(table: dict[str, Any], key: str, default: int | None) -> int | None:
    value = table.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise SearchTableError(f"search.{key} = {value!r}: must be a positive integer")
    return value


def grid_sampler_without_stop() -> type:
    import optuna

    class GridNoStop(optuna.samplers.GridSampler):
        """Optuna's GridSampler, but it never calls `study.stop()` when the grid is used up:
        that raises outside `optimize`, and a search asks and tells trials itself. A search of
        more trials than grid points samples points again; the store runs each once."""

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return GridNoStop

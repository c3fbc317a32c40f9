"""What a search will cost here at most: the trials it has left (a killed search's included),
each at the estimate of its space's dearest corner. A pruned trial costs less, so the search
never costs more than that."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from mnistbench.config import RunSpec
from mnistbench.cost.estimate import Estimator
from mnistbench.cost.probe import Probes
from mnistbench.devices import concrete_spec
from mnistbench.study.file import Experiment, StudySpec
from mnistbench.study.search import SearchCounts, search_counts
from mnistbench.study.store import Store

CORNERS_AT_MOST = 32
"""The space's corners estimated (each range's ends times each choice); a bigger space is
estimated on its first ones, the ranges' ends kept."""


@dataclass(frozen=True)
class SearchForecast:
    experiment: str
    trials: int
    counts: SearchCounts
    seconds_each: float | None
    """The dearest corner's estimate here, None when none could be estimated."""
    dearest: str
    """That corner's label, or why there is no estimate."""

    @property
    def to_run(self) -> int:
        return self.counts.to_run

    @property
    def seconds_at_most(self) -> float | None:
        return None if self.seconds_each is None else self.seconds_each * self.to_run


def corner_specs(experiment: Experiment) -> list[RunSpec]:
    """The runs at the space's corners, as this machine would key them."""
    assert experiment.search is not None
    names = [dimension.name for dimension in experiment.search.space]
    ends = [dimension.ends() for dimension in experiment.search.space]
    corners = itertools.islice(itertools.product(*ends), CORNERS_AT_MOST)
    return [concrete_spec(experiment.trial_spec(dict(zip(names, c, strict=True)))) for c in corners]


def forecast_searches(
    study: StudySpec,
    only: list[str] | None,
    store_path: Path,
    store: Store | None,
    probes: Probes,
) -> list[SearchForecast]:
    """Per searched experiment: where its search stands and what its trials left cost here at
    most (probing the corners' speeds not in the cache)."""
    forecasts = []
    estimator = Estimator(probes, store)
    for experiment in study.select(only):
        if experiment.search is None:
            continue
        counts = search_counts(store_path, study, experiment)
        dearest, label = None, "nothing left to run"
        if counts.to_run:
            estimates = [(estimator.seconds(spec), spec) for spec in corner_specs(experiment)]
            known = [(seconds, spec) for (seconds, _), spec in estimates if seconds is not None]
            if known:
                dearest, spec = max(known, key=lambda pair: pair[0])
                label = spec.label()
            else:
                label = estimates[0][0][1]  # why the first corner has no estimate
        forecasts.append(SearchForecast(experiment.name, experiment.search.trials, counts,
                                        dearest, label))  # fmt: skip
    return forecasts

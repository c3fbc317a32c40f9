"""Study files: named experiments in TOML, expanded into RunSpecs.

A study file has a [study] header (name, description, seeds, resources, keep_models),
[defaults] (RunSpec fields shared by every experiment) and [experiments.NAME] tables with
`base`, `grid` (cartesian product), `extra` (explicit runs), `search` (an adaptive search on
Optuna: search_space.py), `seeds` and `resources` (Ray-style num_cpus/num_gpus). Every error names the file, the experiment and the key. `study run --set
KEY=VALUE` overrides RunSpec fields in every run (`parse_overrides`, `StudySpec.with_overrides`),
checked the same way.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistbench.config import RunSpec
from mnistbench.errors import UserError
from mnistbench.specfields import SpecError, by_hand_fields
from mnistbench.study.search_space import Search, SearchTableError, check_runs, parse_search


class StudyFileError(UserError, ValueError):
    """A bad study file: names the file, the experiment and the key."""


_EXPERIMENT_KEYS = {"description", "base", "grid", "extra", "search", "seeds", "resources"}
_RESOURCE_KEYS = {"num_cpus", "num_gpus", "max_retries"}
_HEADER_KEYS = {"name", "description", "seeds", "resources", "keep_models"}
KEEP_MODELS = ("best", "all", "none")
"""Which final models (`<key>.model.pt`) a study keeps: the most accurate run's per experiment,
every run's, or none (cleanup.py applies it as each run is recorded)."""
DEFAULT_KEEP_MODELS = "best"


@dataclass(frozen=True)
class Experiment:
    """A named group of runs: a base spec, grid axes (cartesian product) and explicit extras."""

    name: str
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    """RunSpec fields shared by every run of the experiment."""
    grid: dict[str, list[Any]] = field(default_factory=dict)
    """Axes: field -> values; every combination is one run (in file order, last axis fastest)."""
    extra: list[dict[str, Any]] = field(default_factory=list)
    """Explicit runs beyond the grid, each merged onto base."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Every run is repeated once per seed."""
    resources: dict[str, float] = field(default_factory=dict)
    """Ray resources per run: num_cpus, num_gpus (fractions allowed), max_retries."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Fields set in every run, over base, grid, extra and seeds (`study run --set`)."""
    search: Search | None = None
    """An adaptive search over a space (its trials are asked from Optuna as the study runs,
    study/search.py), beside the grid's and extra's runs or instead of them."""

    @property
    def fixed(self) -> dict[str, Any]:
        """The fields every run of the experiment shares: base under the --set overrides."""
        return {**self.base, **self.overrides}

    def trial_spec(self, params: dict[str, Any], **run: Any) -> RunSpec:
        """The run of one search trial: base, the sampled params, the experiment's (first) seed,
        then the overrides, which win over the space (a smoke's --set epochs=1 holds)."""
        return RunSpec.from_dict(
            {**self.base, **params, "seed": self.seeds[0], **self.overrides, **run}
        )

    def specs(self) -> list[RunSpec]:
        """Every run of the experiment, expanded and validated."""
        axes = list(self.grid.items())
        combos = [dict(zip([name for name, _ in axes], values, strict=True))
                  for values in itertools.product(*(values for _, values in axes))]  # fmt: skip
        variants = [{**self.base, **combo} for combo in combos] if axes else []
        variants += [{**self.base, **extra} for extra in self.extra]
        if not axes and not self.extra and self.search is None:
            variants = [dict(self.base)]
        specs, seen = [], set()
        for variant in variants:
            for seed in self.seeds:
                spec = RunSpec.from_dict({**variant, "seed": seed, **self.overrides})
                if spec.key() not in seen:  # a grid may produce the same run twice
                    seen.add(spec.key())
                    specs.append(spec)
        return specs


@dataclass(frozen=True)
class StudySpec:
    """A study file: named experiments, loaded from TOML."""

    name: str
    path: Path | None
    description: str
    experiments: tuple[Experiment, ...]
    keep_models: str = DEFAULT_KEEP_MODELS
    """See KEEP_MODELS."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """`study run --set` fields, already applied to the selected experiments."""

    def experiment(self, name: str) -> Experiment:
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        known = ", ".join(e.name for e in self.experiments)
        raise StudyFileError(f"{self.path}: no experiment {name!r}; it has: {known}")

    def select(self, names: list[str] | None) -> list[Experiment]:
        return [self.experiment(name) for name in names] if names else list(self.experiments)

    def with_overrides(self, overrides: dict[str, Any], only: list[str] | None = None) -> StudySpec:
        """The study with `overrides` set in every run of the selected experiments (all when
        `only` is None), checked like study-file values: an error names the key and the value.

        The overrides are spec fields, so they are part of each run's identity: a variant never
        reuses another run's result.
        """
        if not overrides:
            return self
        for key, value in overrides.items():
            _check_spec_keys(f"{self.path}: --set {key}={value!r}", {key: value})
        selected = {experiment.name for experiment in self.select(only)}
        experiments = []
        for experiment in self.experiments:
            if experiment.name in selected:
                experiment = dataclasses.replace(
                    experiment, overrides={**experiment.overrides, **overrides}
                )
                _check_specs(f"{self.path}: --set, experiment {experiment.name!r}", experiment)
            experiments.append(experiment)
        return dataclasses.replace(
            self, experiments=tuple(experiments), overrides={**self.overrides, **overrides}
        )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings as {key: value}; the value in TOML syntax (`1`, `1e-3`, `true`,
    `[1, 2]`, `"text"`), else taken as a plain string (`cuda`, `pca:50`)."""
    tomllib = _tomllib()
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise StudyFileError(f"--set {item!r}: expected KEY=VALUE, e.g. epochs=1")
        try:
            parsed = tomllib.loads(f"v = {text}")
        except tomllib.TOMLDecodeError:
            parsed = {}
        overrides[key] = parsed["v"] if list(parsed) == ["v"] else text.strip()
    return overrides


def _check_spec_keys(where: str, values: dict[str, Any]) -> None:
    known = set(by_hand_fields(RunSpec))
    for key in values:
        if key not in known:
            raise StudyFileError(f"{where}: unknown key {key!r} (RunSpec fields: {sorted(known)})")


def load_study(path: str | os.PathLike[str]) -> StudySpec:
    """Read and validate a study file. Every error names the file, the experiment and the key."""
    path = Path(path)
    document = _read_toml(path)
    unknown = set(document) - {"study", "defaults", "experiments"}
    if unknown:
        raise StudyFileError(f"{path}: unknown top-level key(s) {sorted(unknown)}; "
                             "expected [study], [defaults], [experiments.NAME]")  # fmt: skip
    header = document.get("study", {})
    for key in header:
        if key not in _HEADER_KEYS:
            raise StudyFileError(
                f"{path}: [study]: unknown key {key!r}; expected one of {sorted(_HEADER_KEYS)}"
            )
    keep_models = header.get("keep_models", DEFAULT_KEEP_MODELS)
    if keep_models not in KEEP_MODELS:
        choices = ", ".join(KEEP_MODELS)
        raise StudyFileError(f"{path}: [study]: keep_models={keep_models!r}: choose {choices}")
    defaults = document.get("defaults", {})
    _check_spec_keys(f"{path}: [defaults]", defaults)
    if not document.get("experiments"):
        raise StudyFileError(f"{path}: no [experiments.NAME] tables")
    experiments = tuple(
        _experiment(f"{path}: experiment {name!r}", name, table, defaults, header)
        for name, table in document["experiments"].items()
    )
    return StudySpec(
        header.get("name", path.stem),
        path,
        header.get("description", ""),
        experiments,
        keep_models=keep_models,
    )


def _tomllib() -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def _read_toml(path: Path) -> dict[str, Any]:
    tomllib = _tomllib()
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise StudyFileError(f"{path}: no such study file") from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyFileError(f"{path}: not valid TOML: {exc}") from exc


def _experiment(
    where: str,
    name: str,
    table: dict[str, Any],
    defaults: dict[str, Any],
    header: dict[str, Any],
) -> Experiment:
    """One [experiments.NAME] table, checked key by key and expanded once to validate its runs."""
    for key in table:
        if key not in _EXPERIMENT_KEYS:
            raise StudyFileError(
                f"{where}: unknown key {key!r}; expected one of {sorted(_EXPERIMENT_KEYS)}"
                " (RunSpec fields go in base = {...} or [experiments.NAME.grid])"
            )
    base = {**defaults, **table.get("base", {})}
    _check_spec_keys(f"{where}: base", base)
    grid = table.get("grid", {})
    _check_spec_keys(f"{where}: grid", grid)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise StudyFileError(f"{where}: grid.{key} must be a non-empty list")
    extra = table.get("extra", [])
    for index, run in enumerate(extra):
        _check_spec_keys(f"{where}: extra[{index}]", run)
    seeds = table.get("seeds", header.get("seeds", [0]))
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise StudyFileError(f"{where}: seeds must be a list of integers")
    resources = {**header.get("resources", {}), **table.get("resources", {})}
    for key in resources:
        if key not in _RESOURCE_KEYS:
            raise StudyFileError(f"{where}: resources: unknown key {key!r}")
    search = None
    if "search" in table:
        try:
            search = parse_search(table["search"], base)
        except SearchTableError as exc:
            raise StudyFileError(f"{where}: {exc}") from None
    experiment = Experiment(
        name, table.get("description", ""), base, grid, extra, seeds, resources, search=search
    )
    _check_specs(where, experiment)
    return experiment


def _check_specs(where: str, experiment: Experiment) -> None:
    """Expand the experiment once, and a search's space over its fixed fields (--set ones
    included): a bad value is a StudyFileError naming the key and value."""
    try:
        experiment.specs()
        if experiment.search is not None:
            check_runs(experiment.search, experiment.fixed)
    except (SpecError, SearchTableError) as exc:
        raise StudyFileError(f"{where}: {exc}") from exc

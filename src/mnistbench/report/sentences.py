"""What every insight sentence is made of: the Insight type, number formats, config labels,
rankings and the significance test.

Where the data cannot support a statement the sentence says so instead of guessing: one seed
per config means differences are not tested for significance. Thresholds that decide what
counts as an outlier are named constants, quoted in the sentences they produce.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from mnistbench.report.runs import (
    USUAL_FIELDS,
    Group,
    Run,
    Stat,
    field_label,
    format_value,
    varying_fields,
)
from mnistbench.report.tables import DEVICE_KINDS, fmt_percent, fmt_seconds

OUTLIER_POINTS = 10.0
"""A config this many accuracy points below the median of its neighbours is an outlier."""
CHANCE_MARGIN = 5.0
"""A run within this many points of chance (100 / classes) did not learn."""
SIGNIFICANCE = 0.05
THROUGHPUT_SPREAD = 3.0
"""Same model, input and device, yet images/s differ more than this factor: timings are suspect."""


@dataclass(frozen=True)
class Insight:
    topic: str
    """'best', 'svm', 'versus', 'speedup', 'confusion', 'effect', 'outlier' or 'caveat'."""
    text: str


def acc_text(value: Stat) -> str:
    """'98.70%' or '98.70 ± 0.12% (3 seeds)'."""
    if value.std is None:
        return f"{fmt_percent(value.mean)}%"
    return f"{fmt_percent(value.mean)} ± {fmt_percent(value.std)}% ({value.n} seeds)"


def seconds_text(value: Stat | None) -> str:
    return f"{fmt_seconds(value.mean)} s" if value is not None else "n/a"


def settings_text(group: Group, extra: Iterable[str]) -> str:
    """'B16, SGD, lr 0.001' plus the extra fields that tell this config from its rivals."""
    spec = group.spec
    if spec.is_svm:
        parts = [f"{spec.kernel} kernel", f"C={spec.C:g}"]
    else:
        parts = [
            f"B{spec.batch_size}",
            format_value("optimizer", spec.optimizer),
            f"lr {spec.lr:g}",
        ]
    for name in extra:
        if name == "device":  # what ran, not what was asked ('auto')
            kinds = dict.fromkeys(run.device_kind for run in group.runs)
            parts.append(f"on {', '.join(DEVICE_KINDS.get(k, k) for k in kinds)}")
        else:
            parts.append(f"{field_label(name)} {format_value(name, spec.canonical().get(name))}")
    return ", ".join(parts)


def extra_fields(groups: list[Group]) -> list[str]:
    return varying_fields((g.spec for g in groups), exclude=USUAL_FIELDS)


def experiments_of(group: Group) -> str:
    return ", ".join(dict.fromkeys(e for run in group.runs for e in run.experiments))


def rank(groups: list[Group]) -> list[tuple[Group, Stat]]:
    scored = [(group, group.accuracy) for group in groups]
    return sorted(((g, s) for g, s in scored if s is not None), key=lambda item: -item[1].mean)


def compare_with_runner_up(
    best: tuple[Group, Stat], runner: tuple[Group, Stat], extra: list[str]
) -> str:
    """The runner-up and whether the gap between them is supported by the seeds."""
    (_, best_acc), (group, acc) = best, runner
    gap = best_acc.mean - acc.mean
    text = f"Runner-up: {settings_text(group, extra)} at {acc_text(acc)}, {gap:.2f} points lower; "
    if best_acc.n < 2 or acc.n < 2:
        return text + "with one seed per config the gap is not tested for significance."
    p = welch_p(best_acc.values, acc.values)
    verdict = "significant" if p < SIGNIFICANCE else "not significant"
    return text + f"Welch's t-test p = {p:.3f}: {verdict} at the {SIGNIFICANCE:.0%} level."


def welch_p(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances)."""
    from scipy import stats  # a dependency of scikit-learn, so always there

    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return 0.0 if statistics.fmean(a) != statistics.fmean(b) else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def by_fields(runs: Iterable[Run], *fields: str) -> dict[tuple[str, ...], list[Run]]:
    out: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        out.setdefault(tuple(getattr(run.spec, f) for f in fields), []).append(run)
    return out


def not_finished(runs: list[Run]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.state] = counts.get(run.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())

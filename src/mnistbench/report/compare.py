"""Conclusions that survive an outlier: like-with-like comparisons, outliers and regions.

A comparison of two values of one axis (batch 16 vs 32) pairs the configs of one experiment that
agree on every other axis, takes each config's median over its seeds, and counts the pairs that
agree with the direction it states. Configs far below their neighbours stay in and are flagged,
with why where the data shows it (undertrained: few optimizer steps at a small lr); only failed
and diverged runs, which have no accuracy, are left out. One seed per config leaves a gap
untested (the report says so once, at its top); with two or more, seeds matched across a pair
give a paired t-test, else Welch's test. A time ratio is stated only for an axis that changes the
work per image, and only where runs of identical shape ran at a steady throughput.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from mnistbench.data.registry import UnknownDatasetError, get_dataset
from mnistbench.report.frame import axes, configs, finished, levels, numeric
from mnistbench.report.text import field_label, label, percent, plural, ratio, show
from mnistbench.report.timing import STEADY, changes_work, throughput_spread

OUTLIER_POINTS = 10.0
"""A config this many accuracy points below the median of its neighbours is an outlier."""
CHANCE_MARGIN = 5.0
"""A config within this many points of chance (100 / classes) did not learn."""
SIGNIFICANCE = 0.05
BOX_FILLED = 1.25
"""Flagged configs fill their box when it holds at most this many times as many configs."""
AT_MOST = 3
"""Findings of one kind in one experiment named one by one; more become one region sentence."""
FEW_STEPS = 500
SMALL_LR = 1e-3
"""A low torch config with fewer optimizer steps than FEW_STEPS at an lr of at most SMALL_LR is
undertrained: a ResNet from scratch needs more updates than that to learn."""
UNTESTED = "untested: one seed per config"


@dataclass(frozen=True)
class Insight:
    topic: str
    """best, svm, speedup, models, effect, claim, outlier or caveat."""
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    """The numbers behind the sentence."""
    runs: tuple[str, ...] = ()
    """Keys of the runs the sentence used."""


@dataclass
class Experiment:
    """One section's runs and what derives from them: configs, axes, outliers."""

    slug: str
    kind: str
    """'grid' (Q1(a)), 'svm' (Q1(b)) or 'devices' (Q2)."""
    runs: pd.DataFrame
    description: str = ""
    study_runs: pd.DataFrame | None = None
    """Every run of the report, for the throughput check (None: this experiment's runs)."""

    @cached_property
    def configs(self) -> pd.DataFrame:
        return configs(self.runs)

    @cached_property
    def axes(self) -> list[str]:
        return axes(self.runs)

    @cached_property
    def outliers(self) -> pd.Series:
        """Points below the neighbours' median, for configs more than OUTLIER_POINTS below."""
        return low_outliers(self.configs, self.axes)

    @cached_property
    def done(self) -> pd.DataFrame:
        """Configs with an accuracy: a seed finished (skipped or failed runs never count)."""
        return self.configs[self.configs["acc"].notna()]

    @cached_property
    def clean(self) -> pd.DataFrame:
        """What comparisons use: every finished config, low ones included (flagged, not left
        out); failed and diverged runs have no accuracy to use."""
        return self.done

    @cached_property
    def times_comparable(self) -> bool:
        """Runs of identical shape in the study kept a steady throughput (within STEADY×)."""
        spread = throughput_spread(self.runs if self.study_runs is None else self.study_runs)
        return spread.empty or bool((spread["max"] <= STEADY * spread["min"]).all())


def training_steps(exp: Experiment, row: dict) -> int | None:
    """A torch config's optimizer steps: epochs × ceil(train images / batch size); None for
    another engine's, or where the runs do not say their train images."""
    runs = exp.runs[exp.runs["config"].eq(row["config"])]
    images = runs["train_images"].max()
    if not runs["engine"].eq("torch").all() or pd.isna(images):
        return None
    return int(row["epochs"]) * math.ceil(images / row["batch_size"])


def undertrained(exp: Experiment, row: dict) -> str:
    """'undertrained: 63 optimizer steps at lr 0.0001' for a low torch config with few steps
    at a small lr; '' when the data does not say."""
    steps, lr = training_steps(exp, row), row.get("lr")
    if steps is None or pd.isna(lr) or steps >= FEW_STEPS or lr > SMALL_LR:
        return ""
    return f"undertrained: {steps:,} optimizer steps at lr {show('lr', lr)}"


def kind(runs: pd.DataFrame) -> str:
    """'svm' when every run is the SVM engine's (Q1(b)'s table); else 'devices' when the other
    runs ran on more than one kind of device (Q2's); else 'grid', a column per model, which
    fits the runs of any engine."""
    if runs["engine"].eq("svm").all():
        return "svm"
    others = runs.loc[runs["engine"].ne("svm"), "device_kind"]
    return "devices" if others.nunique() > 1 else "grid"


def chance(dataset: str) -> float:
    try:
        return 100.0 / get_dataset(dataset).num_classes
    except UnknownDatasetError:
        return 10.0


def keys(exp: Experiment, configs: Iterable[str]) -> tuple[str, ...]:
    """The keys of the runs of these configs."""
    return tuple(exp.runs.loc[exp.runs["config"].isin(list(configs)), "key"])


def low_outliers(configs: pd.DataFrame, axes: list[str]) -> pd.Series:
    """Configs far below their neighbours along every axis: a lone dip that no single setting
    explains. Neighbours differ in one axis: the next value either side on a numeric axis, any
    other value of a categorical one (never another model or dataset); a config inside a poor
    region has poor neighbours and is no outlier (`region` says where such regions are). A sort
    or a merge per axis keeps this O(n log n) in the configs, not a look at every pair.
    Returns, for the outliers, the smallest drop below an axis' neighbours (median)."""
    done, drops = configs[configs["acc"].notna()].assign(_all=0), []
    for axis in [a for a in axes if a not in ("model", "dataset")]:
        others = [a for a in axes if a != axis] + ["_all"]
        if numeric(done[axis]):
            near = done.sort_values(axis).groupby(others, dropna=False, sort=False)["acc"]
            found = pd.concat([near.shift(1), near.shift(-1)])
        else:
            slim = done[[*others, "acc"]].reset_index(names="row")
            pairs = slim.merge(slim, on=others)
            found = pairs[pairs.row_x != pairs.row_y].set_index("row_x")["acc_y"]
        drops.append(found.dropna().groupby(level=0).median() - done["acc"])
    drop = pd.concat(drops, axis=1).min(axis=1) if drops else pd.Series(dtype=float)
    return drop[drop > OUTLIER_POINTS]


def region(flagged: pd.DataFrame, among: pd.DataFrame, axes: list[str]) -> tuple[str, int]:
    """The box of axis values the flagged configs lie in ('C ≤ 0.3 and gamma ≥ 0.1'; '' when
    they span every axis), and how many configs of `among` lie in it."""
    inside, parts = pd.Series(True, index=among.index), []
    for axis in axes:
        values, every, name = flagged[axis].dropna(), among[axis].dropna(), field_label(axis)
        if numeric(every) and not values.empty:
            low, high = values.min(), values.max()
            inside &= among[axis].between(low, high)
            if low > every.min() and high < every.max():
                parts.append(f"{low:g} ≤ {name} ≤ {high:g}")
            elif low > every.min() or high < every.max():
                parts.append(f"{name} ≥ {low:g}" if low > every.min() else f"{name} ≤ {high:g}")
        elif set(values) != set(every):
            inside &= among[axis].isin(set(values))
            parts.append(f"{name} {'/'.join(show(axis, v) for v in dict.fromkeys(values))}")
    return " and ".join(parts), int(inside.sum())


def thresholds(flagged: pd.DataFrame, among: pd.DataFrame, axes: list[str]) -> list[str]:
    """A few rules 'kernel rbf, gamma ≥ 0.3 (40 of 45)' that hold most flagged configs and few
    others (the under-fit or memorising ends of a sweep): greedily, the threshold on a numeric
    axis, for one value of a categorical axis or all, that adds the most flagged and the fewest
    other configs, while it adds more of the first. Sorted cumulative sums: O(n log n)."""
    hit, rules = pd.Series(among.index.isin(flagged.index), among.index), []
    covered = pd.Series(False, among.index)
    categorical = [a for a in axes if not numeric(among[a])]
    subsets = [("", pd.Series(True, among.index))] + [
        (f"{field_label(a)} {show(a, v)}, ", among[a].eq(v))
        for a in categorical
        for v in among[a].dropna().unique()
    ]
    for _ in range(3):
        gain = (hit & ~covered).astype(int) - (~hit & ~covered).astype(int)
        best = (0, "", "", "", 0.0)
        for axis in (a for a in axes if numeric(among[a])):
            for where, subset in subsets:
                per_value = gain[subset].groupby(among.loc[subset, axis]).sum()
                if per_value.empty:  # an axis none of the subset has (poly's degree, rbf)
                    continue
                for side, total in (("≤", per_value.cumsum()), ("≥", per_value[::-1].cumsum())):
                    found = (total.max(), where, axis, side, total.idxmax())
                    best = found if found[0] > best[0] else best
        if best[0] <= 0:
            break
        _, where, axis, side, edge = best
        subset = dict(subsets)[where]
        inside = subset & (among[axis] <= edge if side == "≤" else among[axis] >= edge)
        rules.append(
            f"{where}{field_label(axis)} {side} {edge:g} ({(inside & hit).sum()} of {inside.sum()})"
        )
        covered |= inside
    return rules + [f"{(hit & ~covered).sum()} elsewhere"] * bool((hit & ~covered).any())


def findings(
    flagged: pd.DataFrame, exp: Experiment, each: Callable[[dict], str], together: str
) -> list[Insight]:
    """One sentence per flagged config when there are few ('<config> reached 60.00%, <each>');
    for more, one that says where they are: the box of axis values they fill, else thresholds
    on the axes that hold most of them."""
    if len(flagged) <= AT_MOST:
        found = []
        for row in flagged.to_dict("records"):
            what = f"{label(row, exp.axes)} ({exp.slug})"
            text = f"{what} reached {percent(row['acc'])}%, {each(row)}"
            found.append(Insight("outlier", text, row, keys(exp, [row["config"]])))
        return found
    box, inside = region(flagged, exp.configs, exp.axes)
    if box and inside <= BOX_FILLED * len(flagged):  # they fill a box: 'C ≤ 0.3 and gamma ≥ 0.1'
        text = f"{len(flagged)} of the {inside} configs with {box} ({exp.slug}) {together}"
    else:  # scattered, or along the ends of several axes: the rules that hold most of them
        box = "; ".join(thresholds(flagged, exp.configs, exp.axes))
        text = f"{len(flagged)} of {len(exp.configs)} configs ({exp.slug}) {together}"
        text += f" Where: {box}." if box else ""
    data = {"configs": len(flagged), "region": box, "inside": inside}
    return [Insight("outlier", text, data, keys(exp, flagged["config"]))]


def outliers(exp: Experiment) -> list[Insight]:
    """Configs far below their neighbours (kept in comparisons, flagged with why where the data
    shows it), and configs near chance (runs that failed or diverged are in the notes of their
    table)."""
    threshold = f"threshold {OUTLIER_POINTS:g} points"
    below = f"points below its neighbours along every axis (configs one setting away; {threshold})"
    low = exp.configs.loc[exp.outliers.index].assign(gap=exp.outliers)
    low["why"] = [undertrained(exp, row) for row in low.to_dict("records")]
    many = (low["why"] != "").sum()
    why = f"; {many} undertrained (under {FEW_STEPS} optimizer steps at lr ≤ {SMALL_LR:g})"
    far = f"are far below their neighbours ({threshold}){why * bool(many)}: kept in comparisons."

    def each(row: dict) -> str:
        return f"at least {row['gap']:.2f} {below}" + f"; {row['why']}" * bool(row["why"]) + "."

    found = findings(low, exp, each, far)
    limit = exp.done["dataset"].map(chance).astype(float) + CHANCE_MARGIN
    near = f"within {CHANCE_MARGIN:g} points of chance"
    together = f"are {near} (≤ {percent(limit.max())}%): they did not learn."
    return found + findings(exp.done[exp.done["acc"] <= limit], exp, lambda r: f"{near}.", together)


# --- like-with-like comparisons -----------------------------------------------------------------


def contexts(table: pd.DataFrame, axes: list[str], factor: str) -> pd.Series:
    """A number per config, shared by the configs that agree on every axis but `factor`."""
    others = [a for a in axes if a != factor]
    if not others:
        return pd.Series(0, index=table.index)
    return table.groupby(others, dropna=False, sort=False).ngroup()


def context_name(exp: Experiment, factor: str) -> str:
    return " × ".join(field_label(a) for a in exp.axes if a != factor) or "config"


def pivot(exp: Experiment, factor: str, table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the configs with their context number, one row per context × (metric, value))."""
    table = table.assign(ctx=contexts(table, exp.axes, factor))
    wide = table.pivot_table(
        index="ctx", columns=factor, values=["acc", "secs"], aggfunc="median", dropna=False
    )
    return table, wide


def versus(
    exp: Experiment, factor: str, a: Any, b: Any, table: pd.DataFrame | None = None
) -> dict | None:
    """Value a against value b of `factor` over the pairs of configs that differ only there."""
    table = exp.clean if table is None else table
    table, wide = pivot(exp, factor, table[table[factor].isin([a, b])])
    if wide.empty or a not in wide["acc"] or b not in wide["acc"]:
        return None
    pairs = wide[wide["acc"][a].notna() & wide["acc"][b].notna()]
    if pairs.empty:
        return None
    diff, used = pairs["acc"][a] - pairs["acc"][b], table[table["ctx"].isin(pairs.index)]
    test, p = gap_test(exp, used, factor, a, b)
    return {
        "factor": factor, "a": a, "b": b, "pairs": len(pairs), "a_wins": int((diff > 0).sum()),
        "b_wins": int((diff < 0).sum()), "median_diff": float(diff.median()),
        "time_ratio": float((pairs["secs"][a] / pairs["secs"][b]).median()), "test": test,
        "p": p, "runs": keys(exp, used["config"]),
    }  # fmt: skip


def gap_test(exp: Experiment, used: pd.DataFrame, factor: str, a: Any, b: Any) -> tuple[str, Any]:
    """'untested' with one seed per config; else a paired t-test over seeds matched within
    each pair, or Welch's test where seeds do not match. Returns (what it says, p)."""
    if used["n_ok"].min() < 2:
        return UNTESTED, None
    from scipy import stats  # here: importing it takes a second, and one seed needs no test

    runs = finished(exp.runs)
    runs = runs.assign(ctx=runs["config"].map(used.set_index("config")["ctx"])).dropna(subset="ctx")
    matched = runs.pivot_table(index=["ctx", "seed"], columns=factor, values="test_accuracy")
    matched = matched[[a, b]].dropna()
    if len(matched) >= 2 and (matched[a] - matched[b]).std() > 0:  # else no variance to pair
        test, p = "paired t-test", stats.ttest_rel(matched[a], matched[b]).pvalue
    else:
        groups = [runs.loc[runs[factor].eq(v), "test_accuracy"] for v in (a, b)]
        test, p = "Welch's t-test", stats.ttest_ind(*groups, equal_var=False).pvalue
    return tested(test, p), None if pd.isna(p) else float(p)


def tested(test: str, p: float) -> str:
    """'paired t-test p = 0.012, significant at 5%', or why there is no p."""
    if pd.isna(p):
        return f"{test}: no variance to test"
    verdict = f"{'' if p < SIGNIFICANCE else 'not '}significant at {SIGNIFICANCE:.0%}"
    return f"{test} p {'< 0.001' if p < 0.001 else f'= {p:.3f}'}, {verdict}"


def versus_text(exp: Experiment, result: dict) -> str:
    """'batch size 16 is more accurate than 32 in 3 of 4 optimizer × lr pairs (median +1.20
    points) and trains 1.49× slower (median time ratio); paired t-test p = 0.012, ...'. The time
    is said only where `pace` has something to say; one seed per config is said atop the report."""
    factor, a, b = result["factor"], result["a"], result["b"]
    wins, gap, speed = result["a_wins"], result["median_diff"], result["time_ratio"]
    if result["b_wins"] > wins or (result["b_wins"] == wins and gap < 0):
        a, b, wins, gap, speed = b, a, result["b_wins"], -gap, 1 / speed
    named = "" if factor in ("model", "optimizer", "kernel") else f"{field_label(factor)} "
    pairs = plural(result["pairs"], f"{context_name(exp, factor)} pair")
    than = f"is more accurate than {show(factor, b)} in {wins:,} of {pairs}"
    test = f"; {result['test']}" * (result["test"] != UNTESTED)
    return f"{named}{show(factor, a)} {than} (median {gap:+.2f} points){pace(exp, factor, speed)}{test}"


def pace(exp: Experiment, factor: str, speed: float) -> str:
    """' and trains 1.49× slower (median time ratio)', or nothing where the ratio is noise: the
    axis does not change the work per image, or the machine was shared (times_comparable)."""
    if pd.isna(speed) or not changes_work(set(exp.runs["engine"]), factor):
        return ""
    if not exp.times_comparable:
        return "; times not compared (the machine was shared)"
    said = f"{ratio(speed)} slower" if speed >= 1 else f"{ratio(1 / speed)} faster"
    said = "about as fast" if 0.95 < speed < 1.05 else said
    return f" and trains {said} (median time ratio)"


def low_note(exp: Experiment) -> str:
    """What a comparison in this experiment kept that is low, and why, said once per sentence;
    and the diverged runs it could not use."""
    out = exp.configs.loc[exp.outliers.index].to_dict("records")
    whys = [undertrained(exp, r) for r in out]
    named = [label(r, exp.axes) + f" ({why})" * bool(why) for r, why in zip(out, whys, strict=True)]
    names = "; ".join(named[:AT_MOST]) + "; …" * (len(out) > AT_MOST)
    note = f" Includes {plural(len(out), 'low config')}, flagged: {names}." if out else ""
    diverged = int(exp.runs["state"].eq("diverged").sum())
    return note + f" {plural(diverged, 'diverged run')} had no accuracy to use." * (diverged > 0)


def effects(exp: Experiment, at_most: int = 4) -> list[Insight]:
    """A sentence per axis (the first `at_most`): two values compared pair by pair, or for more
    values, which is best in how many contexts."""
    insights, note = [], low_note(exp)
    for factor in [a for a in exp.axes if a not in ("dataset", "model", "device_kind")][:at_most]:
        values = levels(exp.clean[factor])
        if len(values) == 2 and (result := versus(exp, factor, *values)):
            runs = result.pop("runs")
            text = f"{exp.slug}: {versus_text(exp, result)}.{note}"
            insights.append(Insight("effect", text, result, runs))
        elif len(values) > 2:
            table, wide = pivot(exp, factor, exp.clean)
            acc = wide["acc"][wide["acc"].notna().sum(axis=1) >= 2]
            wins = acc.idxmax(axis=1).value_counts()
            top = ", ".join(f"{show(factor, v)} in {n}" for v, n in wins.head(3).items())
            where = f"per {context_name(exp, factor)}: {top} of {plural(len(acc), 'context')}"
            text = f"{exp.slug}: best {field_label(factor)} {where}.{note}"
            data = {"factor": factor, "contexts": len(acc), "wins": wins.to_dict()}
            used = keys(exp, table.loc[table["ctx"].isin(acc.index), "config"])
            insights += [Insight("effect", text, data, used)] if len(acc) else []
    return insights

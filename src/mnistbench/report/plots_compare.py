"""Figures that set configs side by side: accuracy against train time (SVMs, ResNets), train
time on CPU against GPU with the speedup, and ResNet-18 against ResNet-50 config by config.

A figure with a time axis is drawn only where the times can say something: the machine kept a
steady pace (Experiment.times_comparable) and the configs' times differ by more than noise.
Nothing is drawn for a number that was not measured: a device that did not run has no bar and
no speedup, only what happened to its runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mnistbench.report.compare import Experiment, contexts
from mnistbench.report.frame import GRID_AXES, levels
from mnistbench.report.insights import model_pairs
from mnistbench.report.plots import Plot, to_plot
from mnistbench.report.text import field_label, label, name, percent, ratio, seconds, settings, show

TIME_RATIO = 1.5
"""An accuracy-vs-time panel is drawn only where its slowest config took at least this many
times as long as its fastest..."""
TIME_NOISE_SECONDS = 0.2
"""...and longer by more than this or than 3 × the largest spread over seeds: sub-second fits
that differ by a tenth of a second show the timer and the machine, not the configs."""
PAIRS_AT_MOST = 16
"""Bar pairs in one figure (the first ones): more would not leave their labels readable."""
SMALL = {"ha": "center", "va": "bottom", "fontsize": 7}


def context(row: Mapping[str, Any], axes: Iterable[str]) -> str:
    """'ResNet-18, B16, SGD': the values of `axes` in a row, the model and dataset named too
    where they are among them (a bar's label within one experiment)."""
    named = [name(row[a]) for a in ("model", "dataset") if a in axes]
    return ", ".join([*named, settings(row, axes)] if settings(row, axes) else named)


def times_differ(done: pd.DataFrame) -> bool:
    """The configs' median train times differ beyond noise (TIME_RATIO, TIME_NOISE_SECONDS)."""
    secs, spread = done["secs"], done["train_seconds_std"].fillna(0).max()
    noise = max(TIME_NOISE_SECONDS, 3 * spread)
    return bool(secs.max() >= TIME_RATIO * secs.min() and secs.max() - secs.min() > noise)


def time_scatter(exp: Experiment, colour: str, what: str) -> Plot | None:
    """Accuracy against train time, a panel per dataset whose times differ (times_differ), a
    point per config coloured by `colour` and named by the other axes when few. None where no
    dataset's times differ, or the machine was shared."""
    done = exp.done[exp.done["secs"].gt(0)]
    parts = [(d, part) for d, part in done.groupby("dataset", sort=False) if times_differ(part)]
    if not exp.times_comparable or not parts:
        return None
    colours = {value: f"C{i}" for i, value in enumerate(levels(done[colour]))}
    others = [a for a in exp.axes if a not in ("dataset", colour)]
    figure = Figure(figsize=(1.5 + 5.5 * len(parts), 4.5), layout="constrained")
    for index, (dataset, part) in enumerate(parts):
        axes = figure.add_subplot(1, len(parts), index + 1)
        for value, group in part.groupby(colour, sort=False):
            size = 36 if len(part) <= 40 else 8
            axes.scatter(
                group["secs"], group["acc"], s=size, color=colours[value], label=show(colour, value)
            )
        for row in part.to_dict("records") if len(part) <= 16 else []:
            at, said = (row["secs"], row["acc"]), settings(row, others)
            axes.annotate(said, at, xytext=(6, 4), textcoords="offset points", fontsize=8)
        axes.set_xscale("log" if part["secs"].max() > 20 * part["secs"].min() else "linear")
        axes.margins(x=0.15)  # room for the names of the points at the ends
        axes.set(
            xlabel="train time (s)", ylabel="test accuracy (%)", title=f"{name(dataset)}: {what}"
        )
        axes.grid(alpha=0.3)
        if part[colour].nunique() > 1:  # one colour needs no key
            axes.legend(title=field_label(colour), fontsize=8)
    left = [name(d) for d in done["dataset"].unique() if d not in dict(parts)]
    note = f" Left out, train times within noise: {', '.join(left)}." if left else ""
    caption = f"Each point is one config (median over seeds).{note}"
    return to_plot(f"{exp.slug}-time", f"{exp.slug}: {what}", caption, figure)


def svm_scatter(exp: Experiment) -> Plot | None:
    return time_scatter(exp, "kernel", "SVM accuracy vs train time")


def resnet_scatter(exp: Experiment) -> Plot | None:
    return time_scatter(exp, "model", "accuracy vs train time")


def _bar(axes: Axes, at: float, value: float, width: float, text: str, **style: Any) -> None:
    axes.bar(at, value, width, **style)
    axes.annotate(text, (at, value), xytext=(0, 2), textcoords="offset points", **SMALL)


def devices(exp: Experiment) -> Plot | None:
    """Train time per device, bars side by side per config, CPU time / GPU time written over
    each pair that both finished; a device whose runs did not finish has no bar, only what
    happened to them. None when no run finished."""
    configs = exp.configs
    if exp.done.empty or "device_kind" not in exp.axes:
        return None
    kinds = sorted(levels(configs["device_kind"]), key=lambda d: d != "cpu")
    groups = list(configs.groupby(contexts(configs, exp.axes, "device_kind"), sort=False))
    groups = [group for _, group in groups[:PAIRS_AT_MOST]]
    figure = Figure(
        figsize=(min(14, 3 + 1.2 * len(groups) * len(kinds)), 4.8), layout="constrained"
    )
    axes, missing = figure.add_subplot(), {}
    for g, group in enumerate(groups):
        times = _device_bars(exp, axes, g, group, kinds, missing)
        gpu = [k for k in times if k != "cpu"]
        if "cpu" in times and gpu:
            faster = f"{ratio(times['cpu'] / times[gpu[0]])} faster on {name(gpu[0])}"
            said = faster if exp.times_comparable else "machine shared: no speedup"
            at = (g, max(times.values()))
            axes.annotate(
                said, at, xytext=(0, 14), textcoords="offset points", weight="bold", **SMALL
            )
    return _devices_finish(exp, figure, axes, groups, missing)


def _device_bars(
    exp: Experiment, axes: Axes, g: int, group: pd.DataFrame, kinds: list[str], missing: dict
) -> dict[str, float]:
    """One config's bar per device that finished it, a 'not run' mark for one that did not
    (its state and reason go to `missing`); returns the finished devices' train times."""
    times, width = {}, 0.8 / len(kinds)
    for d, kind in enumerate(kinds):
        at, rows = g - 0.4 + width * (d + 0.5), group[group["device_kind"].eq(kind)]
        if rows.empty:
            continue
        row = rows.iloc[0]
        if pd.notna(row["acc"]) and row["secs"] > 0:
            times[kind] = row["secs"]
            first = name(kind) not in axes.get_legend_handles_labels()[1]
            said = f"{seconds(row['secs'])} s"
            _bar(
                axes,
                at,
                row["secs"],
                width,
                said,
                color=f"C{d}",
                label=name(kind) if first else None,
            )
        else:
            mark = {"xytext": (0, 4), "textcoords": "offset points", "color": "#8a5a00"}
            axes.annotate(f"{name(kind)}:\nnot run", (at, 0), **mark, **SMALL | {"fontsize": 9})
            reasons = exp.runs.loc[exp.runs["config"].eq(row["config"]), "reason"]
            missing[kind] = f"{row['missing']}: {reasons.iloc[0]}"
    return times


def _devices_finish(
    exp: Experiment, figure: Figure, axes: Axes, groups: list[pd.DataFrame], missing: dict
) -> Plot:
    """Ticks, scale, legend and caption of the devices figure."""
    # A linear scale, so that bars 18× apart look 18× apart; the times are written on them.
    axes.set_ylim(top=max(p.get_height() for p in axes.patches) * 1.25)
    others = [a for a in exp.axes if a != "device_kind"]
    ticks = [
        context(g.iloc[0], others) or label(g.iloc[0], GRID_AXES, dataset=False) for g in groups
    ]
    axes.set_xticks(range(len(groups)), ticks, fontsize=8)
    axes.set_xlim(-0.6, len(groups) - 0.4)  # a 'not run' mark is no bar: it widens nothing
    title = f"{exp.slug}: train time by device" + ", ".join(
        ["", *(f"{name(k)} not run here" for k in missing)]
    )
    axes.set(ylabel="train time (s)", title=title)
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=8)
    why = "; ".join(f"{name(k)} not run here ({reason})" for k, reason in missing.items())
    caption = "Median train time over seeds per device; over each pair, CPU time / GPU time."
    caption += f" {why}: no bar and no speedup." if why else ""
    return to_plot(f"{exp.slug}-devices", title, caption, figure)


def models(exp: Experiment) -> Plot | None:
    """Test accuracy of ResNet-18 beside ResNet-50 on each config both finished, the value on
    each bar; a bar hatched and marked where that pair's less accurate model is undertrained
    (few steps at a small lr: the gap then says which learns faster, not which is better)."""
    pairs = model_pairs(exp).to_dict("records")[:PAIRS_AT_MOST]
    if not pairs:
        return None
    others = [a for a in exp.axes if a != "model"]
    figure = Figure(figsize=(min(14, 3.5 + 1.1 * len(pairs)), 4.5), layout="constrained")
    axes = figure.add_subplot()
    for i, pair in enumerate(pairs):
        for j, which in enumerate(("small", "large")):
            row = pair[which]
            short = bool(pair["why"]) and row["config"] == pair["low"]["config"]
            said = percent(row["acc"]) + "\nundertrained" * short
            style = {"color": f"C{j}", "hatch": "//" if short else None, "edgecolor": "white"}
            _bar(axes, i - 0.2 + 0.4 * j, row["acc"], 0.4, said, **style)
    # The shared settings name a lone pair: 'B16, Adam, lr 0.0001', not an empty tick.
    ticks = [settings(p["small"], others or GRID_AXES) for p in pairs]
    axes.set_xticks(range(len(pairs)), ticks, fontsize=8)
    title = f"{exp.slug}: ResNet-18 vs ResNet-50"
    axes.set(ylabel="test accuracy (%)", ylim=(0, 105), title=title)
    axes.grid(alpha=0.3, axis="y")
    keys = [
        Patch(color=f"C{j}", label=name(pairs[0][w]["model"]))
        for j, w in enumerate(("small", "large"))
    ]
    whys = list(dict.fromkeys(p["why"] for p in pairs if p["why"]))
    keys += [Patch(facecolor="none", edgecolor="grey", hatch="//", label="undertrained")] * bool(
        whys
    )
    axes.legend(handles=keys, fontsize=8, loc="lower right")
    caption = "Median test accuracy over seeds of each config both models finished."
    if whys:
        caption += f" Hatched: {'; '.join(whys)}, so that pair does not compare the architectures."
    return to_plot(f"{exp.slug}-models", title, caption, figure)

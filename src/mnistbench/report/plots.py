"""The report's figures as PNG bytes, drawn from the configs' table with matplotlib's object API.

`matplotlib.figure.Figure` is used directly, never pyplot: no global backend, no registry of
figures to leak, so a report can be drawn from any thread on a headless machine.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mnistbench.data.registry import UnknownDatasetError, get_dataset
from mnistbench.report.compare import Experiment, contexts
from mnistbench.report.frame import GRID_AXES, SVM_AXES, levels, numeric
from mnistbench.report.text import field_label, label, name, percent, show

LINES_AT_MOST = 12
"""Training curves of at most this many configs (the most accurate): a legend stays readable."""
TICKS_AT_MOST = 12
TEXT = {"ha": "center", "va": "center", "fontsize": 7}


@dataclass(frozen=True)
class Plot:
    slug: str
    """File name stem: '<slug>.png'."""
    title: str
    caption: str
    png: bytes


def _plot(slug: str, title: str, caption: str, figure: Figure) -> Plot:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)  # every figure has a constrained layout
    return Plot(slug, title, caption, buffer.getvalue())


def geometric(values: np.ndarray) -> bool:
    """Three or more positive values with a near-constant ratio: evenly spaced cells are then a
    log scale, and the axis says so."""
    steps = np.diff(np.log(values)) if len(values) > 2 and (values > 0).all() else np.array([1.0])
    return bool(len(values) > 2 and steps.min() > 0 and steps.max() / steps.min() < 1.5)


def _panel(axes: Axes, grid: pd.DataFrame, x: str, y: str, limits: tuple[float, float]):
    """One heatmap panel: cells coloured by accuracy, numbered when few, ticks thinned out."""
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    values = grid.to_numpy(float)
    image = axes.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", origin="lower")
    image.set_clim(*limits)
    for (r, c), value in np.ndenumerate(values if values.size <= 150 else np.empty((0, 0))):
        if np.isfinite(value):  # black on light cells, white on dark ones
            light = np.dot((0.2126, 0.7152, 0.0722), image.cmap(image.norm(value))[:3]) > 0.5
            axes.text(c, r, f"{value:.1f}", color="black" if light else "white", **TEXT)
    for axis, field, ticks in ((axes.yaxis, y, grid.index), (axes.xaxis, x, grid.columns)):
        shown = range(0, len(ticks), -(-len(ticks) // TICKS_AT_MOST))
        axis.set_ticks(shown, [show(field, ticks[i]) for i in shown], fontsize=7)
        log = numeric(ticks.to_series()) and geometric(np.array(ticks, float))
        axis.set_label_text(field_label(field) + " (log scale)" * log)
    return image


def heatmap(exp: Experiment, panels_at_most: int = 6) -> Plot | None:
    """Mean accuracy over the two axes with most values (numeric first, the model last) as y
    and x, a panel per setting of the other axes; grey cells have no finished run."""
    configs, axes = exp.configs, exp.axes
    ranked = sorted(
        axes, key=lambda a: (a == "model", not numeric(configs[a]), -configs[a].nunique())
    )
    if len(ranked) < 2:
        return None
    (y, x), rest = ranked[:2], [a for a in axes if a not in ranked[:2]]
    rows, columns = levels(configs[y]), levels(configs[x])
    facets = contexts(configs, [*rest, x], x)
    panels = list(configs.groupby(facets, sort=False))[:panels_at_most]
    across, down = min(len(panels), 3), -(-len(panels) // 3)
    width, height = (min(6.0, 2.4 + 0.35 * len(v)) for v in (columns, rows))
    figure = Figure(figsize=(1.5 + width * across, 0.5 + height * down), layout="constrained")
    limits = configs["test_accuracy_mean"].min(), configs["test_accuracy_mean"].max()
    for index, (_, part) in enumerate(panels):
        axes = figure.add_subplot(down, across, index + 1)
        grid = part.pivot_table(index=y, columns=x, values="test_accuracy_mean", dropna=False)
        image = _panel(axes, grid.reindex(index=rows, columns=columns), x, y, limits)
        title = label(part.iloc[0], rest, dataset="dataset" in rest) if rest else exp.slug
        axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=figure.axes, label="test accuracy (%)")
    some = f" (the first {len(panels)} of {facets.nunique()} panels)"
    some *= facets.nunique() > len(panels)
    caption = f"Mean test accuracy (%) over {field_label(y)} × {field_label(x)}{some}; grey: none finished."
    return _plot(f"{exp.slug}-heatmap", f"{exp.slug}: accuracy heatmap", caption, figure)


def curves(exp: Experiment) -> Plot | None:
    """Train loss and held-out accuracy per epoch, a line per config (mean over seeds); none
    when every run has one epoch (one point per config is not a curve)."""
    epochs = [
        (config, e.epoch, e.train_loss, e.eval_accuracy, e.eval_split)
        for config, history in zip(exp.runs["config"], exp.runs["history"], strict=True) for e in history if e.ok
    ]  # fmt: skip
    long = pd.DataFrame(epochs, columns=["config", "epoch", "loss", "acc", "split"])
    if long.empty or long["epoch"].max() < 2:
        return None
    split = "validation" if long["split"].eq("val").any() else "test"
    means = long.groupby(["config", "epoch"], sort=False)[["loss", "acc"]].mean()
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    loss_axes, acc_axes = figure.subplots(1, 2)
    for row in exp.configs.nlargest(LINES_AT_MOST, "acc").to_dict("records"):
        if row["config"] in means.index:
            curve, what = means.loc[row["config"]], label(row, exp.axes)
            line = loss_axes.plot(curve.index, curve["loss"], marker="o", label=what)
            acc_axes.plot(curve.index, curve["acc"], marker="o", color=line[0].get_color())
    for axes, what in ((loss_axes, "train loss (epoch mean)"), (acc_axes, f"{split} accuracy (%)")):
        axes.set(xlabel="epoch", ylabel=what, title=f"{exp.slug}: {what}")
        axes.grid(alpha=0.3)
    figure.legend(loc="outside right center", fontsize=8)
    some = f" (the {LINES_AT_MOST} most accurate)" * (len(exp.configs) > LINES_AT_MOST)
    caption = f"Mean train loss and {split} accuracy per epoch of each config{some}, over seeds."
    return _plot(f"{exp.slug}-curves", f"{exp.slug}: training curves", caption, figure)


def svm_scatter(exp: Experiment) -> Plot | None:
    """Accuracy against train time, a point per SVM config, named when few."""
    done = exp.configs[exp.configs["acc"].notna() & exp.configs["secs"].gt(0)]
    if done.empty:
        return None
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes, size = figure.add_subplot(), 36 if len(done) <= 40 else 8
    for (dataset, kernel), part in done.groupby(["dataset", "kernel"], sort=False):
        axes.scatter(part["secs"], part["acc"], label=f"{name(dataset)}, {kernel}", s=size)
    others = [a for a in exp.axes if a not in ("dataset", "kernel")]
    for row in done.to_dict("records") if len(done) <= 16 else []:
        what = label(row, others, dataset=False).removeprefix("SVM").strip(", ")
        at = (row["secs"], row["acc"])
        axes.annotate(what, at, xytext=(6, 4), textcoords="offset points", fontsize=8)
    axes.set_xscale("log" if done["secs"].max() > 20 * done["secs"].min() else "linear")
    title = f"{exp.slug}: SVM accuracy vs train time"
    axes.set(xlabel="train time (s)", ylabel="test accuracy (%)", title=title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    caption = "Each point is one SVM config (median over seeds)."
    return _plot(f"{exp.slug}-svm", title, caption, figure)


def confusion(run: pd.Series, kind: str) -> Plot:
    """The confusion matrix of the best run of a `kind` of model ('ResNet', 'SVM') on its
    dataset: counts, coloured by the share of the true class."""
    matrix = np.array(run["confusion"], dtype=float)
    shares = 100 * matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    try:
        names = list(get_dataset(run["dataset"]).classes)
    except UnknownDatasetError:
        names = []
    names = names if len(names) == len(matrix) else [str(i) for i in range(len(matrix))]
    figure = Figure(figsize=(7.6, 6.4), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=100)
    for (r, c), count in np.ndenumerate(matrix):
        if count:
            axes.text(c, r, f"{count:.0f}", color="white" if shares[r, c] > 50 else "black", **TEXT)
    rotate = max(map(len, names)) > 3  # FashionMNIST's names, not MNIST's digits
    align = "right" if rotate else "center"
    axes.set_xticks(range(len(names)), names, rotation=45 * rotate, ha=align)
    axes.set_yticks(range(len(names)), names)
    config = label(run, (*GRID_AXES, *SVM_AXES), dataset=False)
    accuracy = percent(run["test_accuracy"])
    title = f"{name(run['dataset'])} — best {name(kind)}: {config} ({accuracy} %)"
    what = f"seed {run['seed']}, {int(matrix.sum()):,} test images"
    axes.set(xlabel="predicted class", ylabel="true class", title=f"{title}\n{what}")
    figure.colorbar(image, ax=axes, label="share of the true class (%)")
    caption = "Test images by true class (rows) and predicted class (columns); colour: row share."
    return _plot(f"confusion-{run['dataset']}-{run['engine']}", title, caption, figure)

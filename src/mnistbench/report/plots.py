"""The report's figures as PNG bytes, drawn from the configs' table with matplotlib's object API.

`matplotlib.figure.Figure` is used directly, never pyplot: no global backend, no registry of
figures to leak, so a report can be drawn from any thread on a headless machine.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mnistbench.data.registry import UnknownDatasetError, get_dataset
from mnistbench.report.compare import Experiment, contexts
from mnistbench.report.frame import GRID_AXES, SVM_AXES, levels, numeric
from mnistbench.report.text import field_label, label, name, percent, settings, show

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
    figure: Figure | None = field(default=None, repr=False, compare=False)
    """What was drawn, kept so that a test can read the panels' titles, scales and marks."""


def to_plot(slug: str, title: str, caption: str, figure: Figure) -> Plot:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)  # every figure has a constrained layout
    return Plot(slug, title, caption, buffer.getvalue(), figure)


def geometric(values: np.ndarray) -> bool:
    """Three or more positive values with a near-constant ratio: evenly spaced cells are then a
    log scale, and the axis says so."""
    steps = np.diff(np.log(values)) if len(values) > 2 and (values > 0).all() else np.array([1.0])
    return bool(len(values) > 2 and steps.min() > 0 and steps.max() / steps.min() < 1.5)


def _panel(axes: Axes, grid: pd.DataFrame, x: str, y: str | None, limits: tuple[float, float]):
    """One heatmap panel: cells coloured by accuracy, numbered when few, ticks thinned out; a
    single row when there is no y axis."""
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    values = grid.to_numpy(float)
    image = axes.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", origin="lower")
    image.set_clim(*limits)
    for (r, c), value in np.ndenumerate(values if values.size <= 150 else np.empty((0, 0))):
        if np.isfinite(value):  # black on light cells, white on dark ones
            light = np.dot((0.2126, 0.7152, 0.0722), image.cmap(image.norm(value))[:3]) > 0.5
            axes.text(c, r, f"{value:.1f}", color="black" if light else "white", **TEXT)
    for axis, along, ticks in ((axes.yaxis, y, grid.index), (axes.xaxis, x, grid.columns)):
        if along is None:
            axis.set_ticks([])
            continue
        shown = range(0, len(ticks), -(-len(ticks) // TICKS_AT_MOST))
        axis.set_ticks(shown, [show(along, ticks[i]) for i in shown], fontsize=7)
        log = numeric(ticks.to_series()) and geometric(np.array(ticks, float))
        axis.set_label_text(field_label(along) + " (log scale)" * log)
    return image


def limits_of(accuracies: pd.Series) -> tuple[float, float]:
    """A dataset's colour scale: its lowest to its highest mean accuracy (a point either side
    of a lone value, which would otherwise make a scale of zero width)."""
    low, high = accuracies.min(), accuracies.max()
    return (low, high) if high - low >= 0.01 else (low - 1, high + 1)


def heatmap(exp: Experiment, panels_at_most: int = 6) -> Plot | None:
    """Mean accuracy over the two axes with most values (numeric first, the model last) as y
    and x, a panel per setting of the other axes; grey cells have no finished run. Each dataset
    has its own row of panels and colour scale (MNIST's 99 % beside FashionMNIST's 90 % on one
    scale would flatten the gaps within each), so one axis beside the dataset is enough."""
    configs, datasets = exp.configs, levels(exp.configs["dataset"])
    plane = sorted(
        (a for a in exp.axes if a != "dataset"),
        key=lambda a: (a == "model", not numeric(configs[a]), -configs[a].nunique()),
    )
    if len(plane) < 2 - (len(datasets) > 1):
        return None
    y, x = (plane[0], plane[1]) if len(plane) > 1 else (None, plane[0])
    rest = [a for a in exp.axes if a not in ("dataset", x, y)]
    each = max(1, panels_at_most // len(datasets))
    blocks = [list(part.groupby(contexts(part, [*rest, x], x), sort=False))[:each]
              for _, part in configs.groupby("dataset", sort=False)]  # fmt: skip
    downs, across = [-(-len(b) // 3) for b in blocks], min(3, max(map(len, blocks)))
    shape = levels(configs[y]) if y else [0], levels(configs[x])
    width, height = (min(6.0, 2.4 + 0.35 * len(v)) for v in reversed(shape))
    height = height if y else 1.6  # one row of cells
    size = (1.8 + width * across, sum(0.6 + height * d for d in downs))
    figure = Figure(figsize=size, layout="constrained")
    rows = figure.subfigures(len(blocks), 1, height_ratios=downs) if len(blocks) > 1 else [figure]
    for row, panels, down in zip(np.atleast_1d(rows), blocks, downs, strict=True):
        limits = limits_of(pd.concat([part["test_accuracy_mean"] for _, part in panels]))
        for index, (_, part) in enumerate(panels):
            axes = row.add_subplot(down, across, index + 1)
            grid = part.assign(_=0).pivot_table(
                index=y or "_", columns=x, values="test_accuracy_mean", dropna=False
            )
            image = _panel(axes, grid.reindex(index=shape[0], columns=shape[1]), x, y, limits)
            title = panel_title(part.iloc[0], rest, model="model" not in (x, y))
            axes.set_title(title, fontsize=9)
        row.colorbar(image, ax=row.axes, label="test accuracy (%)")
    shown, total = sum(map(len, blocks)), configs.groupby(["dataset", *rest], dropna=False).ngroups
    some = f" (the first {shown} of {total} panels)" * (total > shown)
    over = f"{field_label(y)} × {field_label(x)}" if y else field_label(x)
    scales = ", one colour scale per dataset" * (len(datasets) > 1)
    caption = f"Mean test accuracy (%) over {over}{scales}{some}; grey: none finished."
    return to_plot(f"{exp.slug}-heatmap", f"{exp.slug}: accuracy heatmap", caption, figure)


def panel_title(row: pd.Series, rest: list[str], model: bool) -> str:
    """'MNIST: SVM, rbf': the panel's dataset, then its model (unless the model is a heatmap
    axis) and its settings of the other axes."""
    said = [name(row["model"])] * model + [settings(row, rest)] * bool(settings(row, rest))
    return f"{name(row['dataset'])}: {', '.join(said)}"


def _points(exp: Experiment) -> tuple[pd.Series, pd.DataFrame, bool]:
    """(loss, accuracy, whether a loss trace was kept), means over seeds by config and x on a
    continuous epoch axis: the loss at the middle of each chunk of an epoch's steps where the
    epoch kept a trace (EpochRecord.loss_trace), else the epoch's mean at its end; the held-out
    accuracy after each epoch."""
    loss, accuracy = [], []
    for config, history in zip(exp.runs["config"], exp.runs["history"], strict=True):
        for e in (e for e in history if e.ok):
            trace = e.loss_trace or []
            if len(trace) > 1:
                loss += [
                    (config, e.epoch - 1 + (i + 0.5) / len(trace), v) for i, v in enumerate(trace)
                ]
            else:
                loss.append((config, e.epoch, e.train_loss))
            accuracy.append((config, e.epoch, e.eval_accuracy, e.eval_split))
    loss = pd.DataFrame(loss, columns=["config", "x", "loss"]).dropna()
    traced = bool(len(loss) > len(accuracy))
    accuracy = pd.DataFrame(accuracy, columns=["config", "x", "acc", "split"])
    return loss.groupby(["config", "x"], sort=False)["loss"].mean(), accuracy, traced


def curves(exp: Experiment) -> Plot | None:
    """Train loss and held-out accuracy per epoch, a line per config (mean over seeds); the
    loss within each epoch where the runs kept a trace of it. None when every run has one
    epoch and no trace (one point per config is not a curve)."""
    loss, accuracy, traced = _points(exp)
    epochs = int(accuracy["x"].max()) if not accuracy.empty else 0
    if loss.empty or (epochs < 2 and not traced):
        return None
    split = "validation" if accuracy["split"].eq("val").any() else "test"
    means = accuracy.groupby(["config", "x"], sort=False)["acc"].mean()
    figure = Figure(figsize=(11 if epochs > 1 else 8, 4.2), layout="constrained")
    panels = np.atleast_1d(figure.subplots(1, 2 if epochs > 1 else 1))
    for row in exp.configs.nlargest(LINES_AT_MOST, "acc").to_dict("records"):
        if row["config"] in loss.index:
            curve = loss.loc[row["config"]]
            dense = len(curve) > epochs  # a trace: many points, small markers
            line = panels[0].plot(
                curve.index,
                curve.values,
                marker="o",
                ms=2.5 if dense else 5,
                lw=1.2,
                label=label(row, exp.axes),
            )
            if epochs > 1:
                acc = means.loc[row["config"]]
                panels[1].plot(acc.index, acc.values, marker="o", color=line[0].get_color())
    what = "train loss (mean per chunk of steps)" if traced else "train loss (epoch mean)"
    for axes, said in zip(panels, (what, f"{split} accuracy (%)"), strict=False):
        axes.set(xlabel="epoch", ylabel=said, title=f"{exp.slug}: {said}")
        axes.grid(alpha=0.3)
    panels[0].set_xlim(0 if traced else 0.8, epochs + (0 if traced else 0.2))
    figure.legend(loc="outside right center", fontsize=8)
    some = f" (the {LINES_AT_MOST} most accurate)" * (len(exp.configs) > LINES_AT_MOST)
    loss_said = (
        "train loss over each of 20–40 equal chunks of an epoch's steps"
        if traced
        else "train loss per epoch"
    )
    after = f" and {split} accuracy after each epoch" * (epochs > 1)
    caption = f"Mean {loss_said}{after} of each config{some}, over seeds."
    return to_plot(f"{exp.slug}-curves", f"{exp.slug}: training curves", caption, figure)


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
    return to_plot(f"confusion-{run['dataset']}-{run['engine']}", title, caption, figure)

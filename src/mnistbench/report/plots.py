"""The report's figures as PNG bytes, drawn with matplotlib's object API on the Agg canvas.

`matplotlib.figure.Figure` is used directly, never pyplot: no global backend to switch, no
figure registry to leak, and the report can be built from any thread or a headless machine.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from mnistbench.report.runs import (
    Group,
    Run,
    class_names,
    dataset_name,
    field_label,
    format_value,
    group_runs,
    model_name,
    varying_fields,
)
from mnistbench.report.tables import DEVICE_KINDS, Table, device_groups, speedup
from mnistbench.result import EpochRecord

DPI = 110
MISSING_COLOR = "#d9d9d9"


@dataclass(frozen=True)
class Plot:
    slug: str
    """File name stem: '<slug>.png'."""
    title: str
    caption: str
    png: bytes


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _text_color(rgba: tuple[float, ...]) -> str:
    """Black on light cells, white on dark ones (relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


# --- accuracy heatmap ---------------------------------------------------------------------------


def accuracy_heatmap(table: Table) -> Plot | None:
    """Grid tables: rows = settings, columns = models, colour = mean test accuracy."""
    columns = [i for i, name in enumerate(table.header) if name.endswith(" %")]
    keys = [i for i, cell in enumerate(table.rows[0]) if cell.state == "key"] if table.rows else []
    if not columns or not table.rows:
        return None
    values = np.array(
        [
            [row[c].value if row[c].value is not None else np.nan for c in columns]
            for row in table.rows
        ]
    )
    labels = [" / ".join(row[k].text for k in keys) or "(fixed)" for row in table.rows]
    models = [table.header[c].removesuffix(" %") for c in columns]
    # Not constrained: long row labels would squeeze the axes to nothing; tight bbox instead.
    figure = Figure(figsize=(2.6 + 1.5 * len(models), max(2.6, 1.2 + 0.42 * len(labels))))
    axes = figure.add_subplot()
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 100.0)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=MISSING_COLOR)
    image = axes.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=low, vmax=high, aspect="auto")
    for (r, c), value in np.ndenumerate(values):
        cell = table.rows[r][columns[c]]
        if math.isfinite(value):
            color = _text_color(image.cmap(image.norm(value)))
            axes.text(c, r, f"{value:.2f}", ha="center", va="center", color=color, fontsize=9)
        else:
            axes.text(
                c,
                r,
                cell.text,
                ha="center",
                va="center",
                color="#444444",
                fontsize=8,
                style="italic",
            )
    axes.set_xticks(range(len(models)), models)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("model")
    axes.set_ylabel(" / ".join(table.header[k] for k in keys) or "setting")
    axes.set_title(f"{table.slug}: test accuracy (%)")
    figure.colorbar(image, ax=axes, label="test accuracy (%)")
    return Plot(
        f"{table.slug}-heatmap",
        f"{table.slug}: accuracy heatmap",
        "Mean test accuracy (%) per setting and model; grey cells name why a number is missing.",
        _png(figure),
    )


# --- training curves ----------------------------------------------------------------------------


def _eval_split(runs: list[Run]) -> str:
    splits = {e.eval_split for r in runs if r.result for e in r.result.history}
    return "val" if "val" in splits else "test"


def _mean_curve(
    group: Group, value: Callable[[EpochRecord], float | None]
) -> tuple[list[int], list[float]]:
    """Per epoch, the mean of `value` over the seeds that logged it."""
    per_epoch: dict[int, list[float]] = {}
    for run in group.runs:
        for entry in run.result.history if run.result else []:
            if value(entry) is not None:
                per_epoch.setdefault(entry.epoch, []).append(float(value(entry)))
    epochs = sorted(per_epoch)
    return epochs, [float(np.mean(per_epoch[e])) for e in epochs]


def training_curves(experiment: str, runs: list[Run]) -> Plot | None:
    """Train loss and held-out accuracy per epoch, one line per config (mean over seeds)."""
    groups = [
        g
        for g in group_runs(r for r in runs if not r.spec.is_svm)
        if any(r.result and r.result.history for r in g.runs)
    ]
    if not groups:
        return None
    split = _eval_split(runs)
    name = "validation" if split == "val" else "test"
    fields = varying_fields((g.spec for g in groups), exclude=("seed",)) or ["model"]
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    loss_axes, acc_axes = figure.subplots(1, 2)
    max_epoch = 1
    for group in groups:
        label = ", ".join(
            f"{field_label(f) if f not in ('model', 'optimizer') else ''} {format_value(f, group.spec.canonical().get(f))}".strip()
            for f in fields
        )
        if group.missing_state:
            label += f" ({group.missing_state})"
        epochs, losses = _mean_curve(group, lambda e: e.train_loss)
        line = loss_axes.plot(epochs, losses, marker="o", label=label)[0]
        epochs_acc, accs = _mean_curve(
            group, lambda e: e.eval_accuracy if e.eval_split == split else None
        )
        acc_axes.plot(epochs_acc, accs, marker="o", color=line.get_color())
        max_epoch = max([max_epoch, *epochs, *epochs_acc])
    for axes, ylabel in (
        (loss_axes, "train loss (cross-entropy, epoch mean)"),
        (acc_axes, f"{name} accuracy (%)"),
    ):
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.set_xticks(range(1, max_epoch + 1))
        axes.set_xlim(0.5, max_epoch + 0.5)
        axes.grid(alpha=0.3)
    loss_axes.set_title(f"{experiment}: training loss")
    acc_axes.set_title(f"{experiment}: {name} accuracy after each epoch")
    figure.legend(loc="outside right center", fontsize=8)
    return Plot(
        f"{experiment}-curves",
        f"{experiment}: training curves",
        f"Mean training loss and {name} accuracy per epoch for each config (mean over seeds)"
        + (": one epoch, so one point per config." if max_epoch == 1 else "."),
        _png(figure),
    )


# --- SVM accuracy vs train time -----------------------------------------------------------------

_MARKERS = "osD^vP*X"


def svm_scatter(experiment: str, runs: list[Run]) -> Plot | None:
    groups = [
        g
        for g in group_runs(runs)
        if g.spec.is_svm and g.accuracy is not None and g.train_seconds is not None
    ]
    if not groups:
        return None
    datasets = list(dict.fromkeys(g.spec.dataset for g in groups))
    kernels = list(dict.fromkeys(g.spec.kernel for g in groups))
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    colors = [f"C{i}" for i in range(len(datasets))]
    for group in groups:
        acc, secs = group.accuracy, group.train_seconds
        axes.errorbar(
            secs.mean,
            acc.mean,
            xerr=secs.std or 0,
            yerr=acc.std or 0,
            marker=_MARKERS[kernels.index(group.spec.kernel) % len(_MARKERS)],
            markersize=9,
            color=colors[datasets.index(group.spec.dataset)],
            linestyle="none",
        )
        axes.annotate(
            f"{group.spec.kernel}, C={group.spec.C:g}",
            (secs.mean, acc.mean),
            textcoords="offset points",
            xytext=(7, 5),
            fontsize=8,
        )
    times = [g.train_seconds.mean for g in groups]
    if min(times) > 0 and max(times) / min(times) > 20:
        axes.set_xscale("log")
    axes.set_xlabel("train time (s)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(f"{experiment}: SVM accuracy vs train time")
    axes.grid(alpha=0.3)
    for i, dataset in enumerate(datasets):
        axes.plot([], [], "s", color=colors[i], label=dataset_name(dataset))
    for i, kernel in enumerate(kernels):
        axes.plot([], [], _MARKERS[i % len(_MARKERS)], color="grey", label=f"{kernel} kernel")
    axes.legend(fontsize=8, loc="best")
    axes.margins(x=0.25, y=0.15)
    return Plot(
        f"{experiment}-svm",
        f"{experiment}: SVM accuracy vs train time",
        "Each point is one SVM config (error bars: std over seeds, when there are several).",
        _png(figure),
    )


# --- CPU vs GPU ---------------------------------------------------------------------------------


def device_bars(experiment: str, runs: list[Run]) -> Plot | None:
    """Train time on CPU and GPU per config, labelled with the speedup; None without a pair."""
    pairs = [
        (kinds, value)
        for kinds in device_groups(runs).values()
        if (value := speedup(kinds)) is not None
    ]
    if not pairs:
        return None
    figure = Figure(figsize=(2.5 + 2.2 * len(pairs), 4.5), layout="constrained")
    axes = figure.add_subplot()
    width = 0.38
    labels = []
    for i, (kinds, value) in enumerate(pairs):
        gpu_kind = "cuda" if "cuda" in kinds else "mps"
        for offset, kind, color in ((-width / 2, "cpu", "C0"), (width / 2, gpu_kind, "C1")):
            seconds = kinds[kind].train_seconds.mean
            bar = axes.bar(
                i + offset,
                seconds,
                width,
                color=color,
                label=DEVICE_KINDS[kind] if i == 0 else None,
            )
            axes.bar_label(bar, [f"{seconds:,.1f} s"], fontsize=8)
        top = kinds["cpu"].train_seconds.mean
        axes.annotate(
            f"{value:.1f}× faster on GPU",
            (i + width / 2, top),
            textcoords="offset points",
            xytext=(0, 14),
            ha="center",
            fontsize=9,
            weight="bold",
        )
        spec = kinds["cpu"].spec
        labels.append(f"{model_name(spec.model)}\n{dataset_name(spec.dataset)}, B{spec.batch_size}")
    axes.set_xticks(range(len(pairs)), labels)
    axes.set_ylabel("train time (s)")
    axes.set_title(f"{experiment}: train time, CPU vs GPU")
    axes.margins(y=0.25)
    axes.legend(fontsize=8)
    return Plot(
        f"{experiment}-devices",
        f"{experiment}: CPU vs GPU train time",
        "Mean train time (s) on each device; the label is CPU time / GPU time.",
        _png(figure),
    )


# --- confusion matrix ---------------------------------------------------------------------------


def confusion(run: Run) -> Plot:
    matrix = np.array(run.result.confusion_matrix, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(100 * matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    names = class_names(run.spec.dataset, len(matrix))
    figure = Figure(figsize=(7.6, 6.4), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=100)
    for (r, c), count in np.ndenumerate(matrix):
        if count:
            axes.text(
                c,
                r,
                f"{count:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color=_text_color(image.cmap(image.norm(shares[r, c]))),
            )
    long_names = max(len(name) for name in names) > 3  # FashionMNIST's, not MNIST's digits
    axes.set_xticks(
        range(len(names)),
        names,
        rotation=45 if long_names else 0,
        ha="right" if long_names else "center",
    )
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(
        f"Best run on {dataset_name(run.spec.dataset)}: {run.label().replace(', ' + dataset_name(run.spec.dataset), '')}, "
        f"seed {run.spec.seed}\ntest accuracy {run.accuracy:.2f}% ({int(matrix.sum()):,} test images)",
        fontsize=10,
    )
    figure.colorbar(image, ax=axes, label="share of the true class (%)")
    return Plot(
        f"confusion-{run.spec.dataset}",
        f"Confusion matrix, best run on {dataset_name(run.spec.dataset)}",
        "Counts of test images per true class (rows) and predicted class (columns); colour is the row share.",
        _png(figure),
    )

"""The effect of optimizer × lr and of batch size in each grid: mean accuracy and train time per
setting, as a table and as a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

from mnistbench.report.runs import Run, Stat, dataset_name, field_label, format_value, stat
from mnistbench.report.sentences import Insight, by_fields, seconds_text
from mnistbench.report.tables import (
    Cell,
    Table,
    fmt_percent,
    fmt_seconds,
    grid_row_fields,
    key_cell,
    table_kind,
)


@dataclass(frozen=True)
class Setting:
    label: str
    """'batch size 16', 'SGD, lr 0.001': for sentences."""
    values: str
    """'16', 'SGD, lr 0.001': for the table, whose header names the fields."""
    accuracy: Stat | None
    seconds: Stat | None
    unfinished: int


def _setting_stats(runs: list[Run], fields: tuple[str, ...]) -> list[Setting]:
    settings: dict[str, list[Run]] = {}
    for run in runs:
        label = ", ".join(
            (f"{field_label(f)} " if f != "optimizer" else "")
            + format_value(f, getattr(run.spec, f))
            for f in fields
        )
        settings.setdefault(label, []).append(run)
    return [
        Setting(
            label,
            ", ".join(format_value(f, getattr(members[0].spec, f)) for f in fields)
            if len(fields) == 1
            else label,
            stat(members, lambda r: r.accuracy),
            stat(members, lambda r: r.train_seconds),
            sum(not r.ok for r in members),
        )
        for label, members in settings.items()
    ]


def _over(runs: list[Run], fields: tuple[str, ...]) -> str:
    others = [f for f in [*grid_row_fields(runs), "model"] if f not in fields]
    varying = [f for f in others if len({getattr(r.spec, f) for r in runs}) > 1]
    return (
        "mean over " + " and ".join(field_label(f) for f in varying)
        if varying
        else "other settings fixed"
    )


def effect_table(
    experiment: str, runs: list[Run], fields: tuple[str, ...]
) -> tuple[Table, list[Setting]]:
    settings = _setting_stats(runs, fields)
    name = " × ".join(field_label(f) for f in fields)
    rows = [
        [
            key_cell(s.values),
            Cell(str(s.accuracy.n if s.accuracy else 0), s.accuracy.n if s.accuracy else 0),
            _stat_cell(s.accuracy, fmt_percent),
            _stat_cell(s.seconds, fmt_seconds),
            Cell(str(s.unfinished), s.unfinished),
        ]
        for s in settings
    ]
    table = Table(
        slug=f"{experiment}-effect-{'-'.join(fields)}",
        title=f"{experiment}: effect of {name} ({_over(runs, fields)})",
        kind="effect",
        header=[name, "finished runs", "mean accuracy %", "mean train time (s)", "not finished"],
        rows=rows,
        footnote="Means over individual finished runs (all seeds); 'not finished' counts diverged, failed, skipped and unrun runs.",
    )
    return table, settings


def _stat_cell(value: Stat | None, fmt) -> Cell:
    if value is None:
        return Cell("no finished run", state="not run")
    # No std: the runs behind a setting differ in other settings, not just in seed.
    return Cell(fmt(value.mean), value.mean, std=value.std, n=value.n)


def _fmt_setting(s: Setting) -> str:
    if s.accuracy is None:
        return f"{s.label} → no finished run"
    return f"{s.label} → {fmt_percent(s.accuracy.mean)}% in {seconds_text(s.seconds)} (n={s.accuracy.n})"


def optimizer_lr_sentence(where: str, over: str, settings: list[Setting], runs: list[Run]) -> str:
    done = sorted((s for s in settings if s.accuracy), key=lambda s: -s.accuracy.mean)
    if not done:
        return f"{where}, optimizer × lr: no run finished."
    best, worst = done[0], done[-1]
    text = (
        f"{where}, optimizer × lr ({over}): best {_fmt_setting(best)}, worst {_fmt_setting(worst)}; "
        f"a spread of {best.accuracy.mean - worst.accuracy.mean:.2f} points."
    )
    per_optimizer = []
    for (optimizer,), members in by_fields(runs, "optimizer").items():
        lrs = _ranked_lrs(members)
        if len(lrs) > 1:
            per_optimizer.append(
                f"{format_value('optimizer', optimizer)} does best at lr {lrs[0][0]:g} "
                f"({fmt_percent(lrs[0][1].mean)}% vs {fmt_percent(lrs[-1][1].mean)}% at lr {lrs[-1][0]:g})"
            )
    if per_optimizer:
        text += " " + "; ".join(per_optimizer) + "."
    return text


def _ranked_lrs(runs: list[Run]) -> list[tuple[float, Stat]]:
    out = []
    for (lr,), members in by_fields(runs, "lr").items():
        acc = stat(members, lambda r: r.accuracy)
        if acc is not None:
            out.append((lr, acc))
    return sorted(out, key=lambda item: -item[1].mean)


def batch_sentence(where: str, over: str, settings: list[Setting], runs: list[Run]) -> str:
    text = f"{where}, batch size ({over}): " + "; ".join(_fmt_setting(s) for s in settings) + "."
    by_size = {}
    for (size,), members in by_fields(runs, "batch_size").items():
        acc, secs = stat(members, lambda r: r.accuracy), stat(members, lambda r: r.train_seconds)
        if acc and secs:
            by_size[size] = (acc, secs)
    if len(by_size) > 1:
        small, large = min(by_size), max(by_size)
        ratio = by_size[small][1].mean / by_size[large][1].mean
        diff = by_size[large][0].mean - by_size[small][0].mean
        faster = f"{ratio:.2f}× faster" if ratio >= 1 else f"{1 / ratio:.2f}× slower"
        accuracy = f"{abs(diff):.2f} points {'more' if diff >= 0 else 'less'} accurate"
        text += f" Batch {large} trains {faster} than batch {small} and is {accuracy}."
    return text


def effects(by_experiment: dict[str, list[Run]]) -> tuple[list[Insight], list[Table]]:
    """Mean accuracy and train time per optimizer × lr and per batch size, per grid."""
    insights, tables = [], []
    for experiment, runs in by_experiment.items():
        torch_runs = [r for r in runs if not r.spec.is_svm]
        if not torch_runs or table_kind(runs) != "grid":
            continue
        where = (
            f"{experiment} ({', '.join(dict.fromkeys(dataset_name(r.spec.dataset) for r in runs))})"
        )
        axes = (("optimizer", "lr"), optimizer_lr_sentence), (("batch_size",), batch_sentence)
        for fields, sentence in axes:
            if len({tuple(getattr(r.spec, f) for f in fields) for r in torch_runs}) < 2:
                continue
            table, settings = effect_table(experiment, torch_runs, fields)
            tables.append(table)
            insights.append(
                Insight("effect", sentence(where, _over(torch_runs, fields), settings, torch_runs))
            )
    return insights, tables

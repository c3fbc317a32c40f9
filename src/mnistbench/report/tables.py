"""The study's tables, in the published study's shape, derived from the runs themselves.

An experiment's table kind comes from its data, not its name: all runs SVMs -> the Q1(b) SVM
table; the device varies -> the Q2 devices table; otherwise a grid with one row per setting of
the varying hyperparameters and one column per model (Q1(a)). A cell that has no number says
why ('not run', 'skipped', 'failed', 'diverged'), and the table lists the reasons below it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mnistbench.report.runs import (
    USUAL_FIELDS,
    Group,
    Run,
    config_key,
    dataset_name,
    field_label,
    first_line,
    format_value,
    group_runs,
    model_name,
    stat,
    varying_fields,
)

# Q1(a)'s row axes come first, in the published order, even where the grid holds them fixed.
GRID_AXES = ("batch_size", "optimizer", "lr")
DEVICE_KINDS = {"cpu": "CPU", "cuda": "GPU", "mps": "GPU (MPS)"}


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, and its number where it has one (for tests, plots, sorting)."""

    text: str
    value: float | None = None
    state: str = "ok"
    """'ok', 'partial' (some seeds missing), 'key' (a row label), 'n/a', or a missing state."""
    note: str | None = None
    """Why the cell is missing or partial (the skip reason, the error)."""
    std: float | None = None
    n: int = 0


@dataclass
class Table:
    slug: str
    title: str
    kind: str
    """'grid', 'svm', 'devices' or 'effect'."""
    header: list[str]
    rows: list[list[Cell]]
    footnote: str = ""
    notes: list[str] = field(default_factory=list)
    """One line per reason a run has no result, naming the configs it hit."""


# --- number formats -----------------------------------------------------------------------------


def fmt_percent(value: float) -> str:
    return f"{value:.2f}"


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:,.1f}"


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:,.1f}" if seconds >= 10 else f"{seconds:,.2f}"


def fmt_giga(value: float) -> str:
    return f"{value / 1e9:.3f}"


def with_std(fmt: Callable[[float], str], mean: float, std: float | None) -> str:
    """'98.20 ± 0.28': the std with as many decimals as the mean, so the two read together."""
    text = fmt(mean)
    if std is None:
        return text
    decimals = len(text.rsplit(".", 1)[1]) if "." in text else 0
    return f"{text} ± {std:,.{decimals}f}"


# --- cells --------------------------------------------------------------------------------------


def key_cell(text: str) -> Cell:
    return Cell(text, state="key")


def missing_cell(state: str, reasons: Iterable[str]) -> Cell:
    unique = list(dict.fromkeys(reason for reason in reasons if reason))
    return Cell(state, state=state, note="; ".join(unique) or state)


def stat_cell(
    group: Group | None,
    metric: Callable[[Run], float | None],
    fmt: Callable[[float], str],
) -> Cell:
    """Mean ± std over the seeds that finished; the missing state when none did."""
    if group is None:
        return missing_cell("not run", ["no run of this config in the store"])
    missing = group.missing_state
    if missing is not None:
        return missing_cell(missing, (run.reason for run in group.runs if run.state == missing))
    values = stat(group.ok_runs, metric)
    if values is None:
        return Cell("n/a", state="n/a", note="not measured for this run")
    text = with_std(fmt, values.mean, values.std)
    others = [run for run in group.runs if not run.ok]
    if not others:
        return Cell(text, values.mean, "ok", None, values.std, values.n)
    counts = {state: sum(run.state == state for run in others) for state in _states(others)}
    text += f" ({len(group.ok_runs)}/{len(group.runs)} seeds; "
    text += ", ".join(f"{n} {state}" for state, n in counts.items()) + ")"
    note = "; ".join(dict.fromkeys(f"seed {run.spec.seed}: {run.reason}" for run in others))
    return Cell(text, values.mean, "partial", note, values.std, values.n)


def _states(runs: Iterable[Run]) -> list[str]:
    return list(dict.fromkeys(run.state for run in runs))


def table_notes(runs: list[Run], limit: int = 8) -> list[str]:
    """One line per reason a run has no result: 'failed: <reason> — <config> (seeds 0, 1)'."""
    # The label names what tells the configs apart beyond the usual fields (e.g. the device).
    extra = varying_fields((run.spec for run in runs), exclude=USUAL_FIELDS)
    by_reason: dict[tuple[str, str], dict[str, list[int]]] = {}
    for run in runs:
        if not run.ok:
            configs = by_reason.setdefault((run.state, first_line(run.reason)), {})
            configs.setdefault(run.label(extra), []).append(run.spec.seed)
    lines = []
    for (state, reason), configs in by_reason.items():
        who = [
            f"{label} ({'seeds' if len(seeds) > 1 else 'seed'} {', '.join(map(str, seeds))})"
            for label, seeds in configs.items()
        ]
        more = f"; and {len(who) - limit} more" if len(who) > limit else ""
        lines.append(f"{state}: {reason} — {'; '.join(who[:limit])}{more}")
    return lines


# --- protocol footnote --------------------------------------------------------------------------


def _distinct(values: Iterable[object]) -> list[str]:
    return list(dict.fromkeys(str(value) for value in values if value is not None))


def _sizes(runs: list[Run]) -> str:
    sizes = _distinct(
        "{train:,} train / {val:,} val / {test:,} test".format(**run.result.protocol["sizes"])
        for run in runs
        if run.result is not None and "sizes" in run.result.protocol
    )
    return f" ({', '.join(sizes)} images)" if sizes else ""


def _devices(runs: list[Run]) -> str:
    """'Intel Xeon (cpu, 2 threads); cuda (skipped)': what ran where, and what could not."""
    parts = []
    for run in runs:
        if run.result is not None:
            threads = run.result.environment.get("threads")
            where = run.device_kind + (
                f", {threads} threads" if run.device_kind == "cpu" and threads else ""
            )
            parts.append(f"{run.device_name} ({where})")
    # A device no finished run used is named with the reason (e.g. 'cuda (skipped)').
    used = {run.device_kind for run in runs if run.result is not None}
    for run in runs:
        if run.result is None and run.device_kind not in used:
            parts.append(f"{run.spec.device if not run.spec.is_svm else 'cpu'} ({run.state})")
    return "; ".join(_distinct(parts))


def protocol_footnote(runs: list[Run]) -> str:
    """What a reader needs to compare these numbers with others: the protocol, stated."""
    specs = [run.spec for run in runs]
    torch = [spec for spec in specs if not spec.is_svm]
    parts = [f"split: {', '.join(_distinct(spec.split for spec in specs))}{_sizes(runs)}"]
    limits = _distinct(
        f"train_limit {format_value('train_limit', s.train_limit)}, "
        f"test_limit {format_value('test_limit', s.test_limit)}"
        for s in specs
        if s.train_limit or s.test_limit
    )
    if limits:
        parts.append("subsets: " + "; ".join(limits))
    if torch:
        parts.append(
            "image size: "
            + ", ".join(_distinct(f"{s.image_size}×{s.image_size}×{s.channels}" for s in torch))
        )
        parts.append("epochs: " + ", ".join(_distinct(s.epochs for s in torch)))
        parts.append("loader: " + ", ".join(_distinct(s.loader for s in torch)))
        parts.append(
            "pin_memory: "
            + ", ".join(_distinct(format_value("pin_memory", s.pin_memory) for s in torch))
        )
        amp = _distinct(run.result.precision for run in runs if run.result and not run.spec.is_svm)
        parts.append("precision: " + (", ".join(amp) if amp else "n/a (no run finished)"))
    else:
        parts.append("epochs, pin_memory, precision: n/a (SVM)")
        parts.append("features: " + ", ".join(_distinct(s.features for s in specs)))
    parts.append("devices: " + (_devices(runs) or "none"))
    seeds = sorted({spec.seed for spec in specs})
    per_config = {len(group.runs) for group in group_runs(runs)}
    parts.append(
        f"seeds: {', '.join(map(str, seeds))}"
        + (" (cells are mean ± sample std over seeds)" if max(per_config) > 1 else "")
    )
    return "Protocol — " + "; ".join(parts) + "."


# --- the three kinds ----------------------------------------------------------------------------


def table_kind(runs: list[Run]) -> str:
    if all(run.spec.is_svm for run in runs):
        return "svm"
    if len({run.device_kind for run in runs if not run.spec.is_svm}) > 1 or (
        "device" in varying_fields(run.spec for run in runs)
    ):
        return "devices"
    return "grid"


def experiment_title(experiment: str, runs: list[Run], kind: str, description: str) -> str:
    if description:
        return f"{experiment}: {description}"
    datasets = ", ".join(_distinct(dataset_name(run.spec.dataset) for run in runs))
    models = " / ".join(_distinct(model_name(run.spec.model) for run in runs))
    what = {
        "svm": "SVM accuracy and train time",
        "devices": f"{models} on CPU vs GPU",
        "grid": f"{models} test accuracy by "
        + " × ".join(field_label(f) for f in grid_row_fields(runs)),
    }[kind]
    return f"{experiment}: {what} ({datasets})"


def build_table(experiment: str, runs: list[Run], description: str = "") -> Table:
    kind = table_kind(runs)
    builder = {"svm": svm_table, "devices": devices_table, "grid": grid_table}[kind]
    header, rows = builder(runs)
    return Table(
        slug=experiment,
        title=experiment_title(experiment, runs, kind, description),
        kind=kind,
        header=header,
        rows=rows,
        footnote=protocol_footnote(runs),
        notes=table_notes(runs),
    )


def grid_row_fields(runs: list[Run]) -> list[str]:
    varying = varying_fields((run.spec for run in runs), exclude=("seed", "model"))
    torch = any(not run.spec.is_svm for run in runs)
    axes = [name for name in GRID_AXES if torch]
    return axes + [name for name in varying if name not in axes]


def _row_values(run: Run, fields: list[str]) -> tuple[str, ...]:
    return tuple(format_value(name, run.spec.canonical().get(name)) for name in fields)


def grid_table(runs: list[Run]) -> tuple[list[str], list[list[Cell]]]:
    """Q1(a): one row per setting of the row axes, accuracy and train time per model."""
    fields = grid_row_fields(runs)
    models = _distinct(run.spec.model for run in runs)
    cells: dict[tuple[tuple[str, ...], str], list[Run]] = {}
    for run in runs:
        cells.setdefault((_row_values(run, fields), run.spec.model), []).append(run)
    row_keys = list(dict.fromkeys(values for values, _ in cells))
    header = [field_label(name) for name in fields]
    header += [f"{model_name(m)} %" for m in models]
    header += [f"{model_name(m)} train (s)" for m in models]
    rows = []
    for values in row_keys:
        groups = {m: _one_group(cells.get((values, m))) for m in models}
        row = [key_cell(text) for text in values]
        row += [stat_cell(groups[m], lambda r: r.accuracy, fmt_percent) for m in models]
        row += [stat_cell(groups[m], lambda r: r.train_seconds, fmt_seconds) for m in models]
        rows.append(row)
    return header, rows


def _one_group(runs: list[Run] | None) -> Group | None:
    return Group(tuple(runs)) if runs else None


def _backend(group: Group) -> Cell:
    used = _distinct(run.result.backend for run in group.ok_runs if run.result)
    if used:
        return key_cell(", ".join(used))
    return key_cell(f"{group.spec.svm_backend} (requested)")


def svm_table(runs: list[Run]) -> tuple[list[str], list[list[Cell]]]:
    """Q1(b): dataset, kernel, C (and whatever else varies), accuracy, train time, back-end."""
    fixed = ["dataset", "kernel", "C"]
    varying = varying_fields((run.spec for run in runs), exclude=("seed",))
    fields = fixed + [name for name in varying if name not in fixed]
    header = [field_label(name) for name in fields]
    header += ["accuracy %", "train time (ms)", "support vectors", "back-end"]
    rows = []
    for group in group_runs(runs):
        row = [key_cell(text) for text in _row_values(group.runs[0], fields)]
        row.append(stat_cell(group, lambda r: r.accuracy, fmt_percent))
        row.append(stat_cell(group, lambda r: r.train_seconds, fmt_ms))
        row.append(stat_cell(group, _n_support, lambda v: f"{v:,.0f}"))
        row.append(_backend(group))
        rows.append(row)
    return header, rows


def _n_support(run: Run) -> float | None:
    return float(run.result.n_support) if run.ok and run.result and run.result.n_support else None


def pair_key(run: Run) -> str:
    """Runs that differ only in device (and seed) share this key: a CPU-vs-GPU pair."""
    return config_key(run.spec, without=("seed", "device"))


def device_groups(runs: list[Run]) -> dict[str, dict[str, Group]]:
    """pair key -> device kind -> the config's runs on that kind of device."""
    pairs: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        if not run.spec.is_svm:
            pairs.setdefault(pair_key(run), {}).setdefault(run.device_kind, []).append(run)
    return {
        key: {kind: Group(tuple(rs)) for kind, rs in kinds.items()} for key, kinds in pairs.items()
    }


def speedup(kinds: dict[str, Group]) -> float | None:
    """Mean CPU train time / mean GPU train time, when both exist."""
    cpu, gpu = kinds.get("cpu"), kinds.get("cuda") or kinds.get("mps")
    cpu_time = cpu.train_seconds if cpu else None
    gpu_time = gpu.train_seconds if gpu else None
    if cpu_time is None or gpu_time is None or gpu_time.mean <= 0:
        return None
    return cpu_time.mean / gpu_time.mean


def _compute(group: Group, kind: str) -> Cell:
    names = _distinct(run.device_name for run in group.runs if run.result is not None)
    label = DEVICE_KINDS.get(kind, kind)
    if not names:
        return key_cell(f"{label} ({group.spec.device}, {group.runs[0].state})")
    return key_cell(f"{label}: {', '.join(names)}")


def _speedup_cell(kind: str, kinds: dict[str, Group]) -> Cell:
    if kind == "cpu":
        return key_cell("1.00× (baseline)")
    value = speedup(kinds)
    if value is not None:
        return Cell(f"{value:.2f}×", value)
    cpu = kinds.get("cpu")
    if cpu is None:
        return Cell("n/a", state="n/a", note="no CPU run with the same settings to compare with")
    missing = [kinds[k].missing_state for k in kinds if kinds[k].missing_state]
    state = missing[0] if missing else "n/a"
    return Cell(f"n/a ({state})", state="n/a", note="speedup needs both a CPU and a GPU result")


def devices_table(runs: list[Run]) -> tuple[list[str], list[list[Cell]]]:
    """Q2: compute, model, accuracy, train time, FLOPs and MACs per image, speedup vs CPU."""
    varying = varying_fields((run.spec for run in runs), exclude=("seed", "model", "device"))
    header = ["compute", "model", *(field_label(name) for name in varying)]
    header += ["accuracy %", "train time (ms)", "GFLOPs/img (fwd)", "GMACs/img", "images/s"]
    header += ["speedup vs CPU"]
    rows = []
    for kinds in device_groups(runs).values():
        for kind in sorted(kinds, key=lambda k: (k != "cpu", k)):
            group = kinds[kind]
            row = [_compute(group, kind), key_cell(model_name(group.spec.model))]
            row += [key_cell(text) for text in _row_values(group.runs[0], varying)]
            row.append(stat_cell(group, lambda r: r.accuracy, fmt_percent))
            row.append(stat_cell(group, lambda r: r.train_seconds, fmt_ms))
            row.append(stat_cell(group, _result_attr("flops_per_image"), fmt_giga))
            row.append(stat_cell(group, _result_attr("macs_per_image"), fmt_giga))
            row.append(stat_cell(group, _result_attr("images_per_second"), lambda v: f"{v:,.0f}"))
            row.append(_speedup_cell(kind, kinds))
            rows.append(row)
    return header, rows


def _result_attr(name: str) -> Callable[[Run], float | None]:
    def metric(run: Run) -> float | None:
        return getattr(run.result, name) if run.ok and run.result else None

    return metric

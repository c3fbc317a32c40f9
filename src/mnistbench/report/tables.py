"""The study's tables in the published study's shape, with the published values beside ours.

Q1(a) grids pivot the configs (a row per setting, columns per model); Q1(b) and Q2 have a row
per config (Q2 with the speedup over the CPU). Cells are mean ± sample std over the seeds that
finished; a cell without a number says why (not run, skipped, failed, diverged). Where our
protocol differs from the published one, Δ cells carry † and a footnote says how; a train time
taken while the run shared its GPU carries ‡, and a footnote says with how many runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mnistbench import published
from mnistbench.report import text as units
from mnistbench.report.compare import Experiment, contexts
from mnistbench.report.flops import INPUT_LABEL, macs_at_published_input
from mnistbench.report.frame import GRID_AXES, shared_gpu_runs
from mnistbench.report.text import field_label, formatted, label, name, show

LIMITS = ("train_limit", "test_limit")
ROWS_AT_MOST = 40
"""Longer tables show their most accurate rows; runs.csv and the heatmap hold them all."""
METRICS = {  # header: (column, format); accuracy and train time first
    "accuracy %": ("test_accuracy", units.percent), "train (s)": ("train_seconds", units.seconds),
    "support vectors": ("n_support", units.count), "GFLOPs/img (fwd)": ("flops_per_image", units.giga),
    "GMACs/img": ("macs_per_image", units.giga), "images/s": ("images_per_second", units.count),
}  # fmt: skip
NOT_HERE = "not run here"
"""A skipped row says this once, with what it needs ('not run here (needs CUDA)')."""
SHARED_GPU = "‡"
"""Marks a train time taken while the run shared its GPU (shared_gpu_note says how much)."""
Columns = dict[str, tuple[pd.Series, "pd.Series | None"]]
"""Header -> (the cells' text, the numbers behind them or None for labels)."""


@dataclass
class Table:
    slug: str
    title: str
    kind: str
    cells: pd.DataFrame
    """The text of every cell; the columns are the header."""
    values: pd.DataFrame
    """The number behind each cell (NaN for labels and missing cells)."""
    notes: list[str]
    """Footnotes: published differences, protocol, machines, why cells are missing."""
    machine: str = ""
    """The machine footnote, also in `notes` unless every table ran on the one machine the
    report's Machine section names (`machine_once`)."""


def metric(configs: pd.DataFrame, header: str) -> tuple[pd.Series, pd.Series]:
    """Per config: '98.20 ± 0.28', '95.00 (1/2 seeds; 1 diverged)' or why there is no number."""
    column, fmt = METRICS[header]
    mean, std, count = (configs[f"{column}_{stat}"] for stat in ("mean", "std", "count"))
    text = formatted(mean, fmt)
    text = text.where(std.isna(), text + " ± " + formatted(std, fmt))
    if column == "train_seconds":  # a time taken beside other runs on the GPU says so
        text = text.where(~configs["shared_gpu"].astype(bool), text + SHARED_GPU)
    text += configs["partial"]
    return text.where(count.gt(0), configs["missing"]), mean


def keyed(frame: pd.DataFrame, fields: list[str]) -> Columns:
    """Columns of labels: each field's values as a reader expects them ('n/a' where none)."""
    return {field_label(f): (frame[f].map(lambda v, f=f: show(f, v)), None) for f in fields}


def beside(
    ours: pd.Series, rows: list, gaps: list[str], heading: str = "", times: bool = False
) -> Columns:
    """The published value and Δ = ours - published († where protocols differ), if any."""
    theirs = pd.Series([getattr(row, "accuracy", None) for row in rows], ours.index, dtype=float)
    secs = pd.Series([getattr(row, "train_seconds", None) for row in rows], ours.index, dtype=float)
    delta, mark = ours - theirs, "†" if gaps else ""
    columns = {
        f"{heading}published %": (formatted(theirs, units.percent, "—"), theirs),
        f"{heading}Δ": (formatted(delta, lambda d: f"{d:+.2f}{mark}", "—"), delta),
    } | ({"published train (s)": (formatted(secs, units.seconds, "—"), secs)} if times else {})
    return columns if theirs.notna().any() else {}


def by_model(configs: pd.DataFrame, rows: list[str], settings: pd.DataFrame, header: str):
    """A metric's text and numbers with a row per setting of `rows` and a column per model."""
    text, value = metric(configs, header)
    frame = configs[[*rows, "model"]].assign(text=text, value=value)
    wide = frame.groupby([*rows, "model"], sort=False, dropna=False).first().unstack("model")
    index = pd.MultiIndex.from_frame(settings) if len(rows) > 1 else pd.Index(settings[rows[0]])
    wide = wide.reindex(index).reset_index(drop=True)  # one row axis: no MultiIndex to match
    return wide["text"].fillna("not run"), wide["value"]


def grid_table(exp: Experiment) -> Table:
    """Q1(a): a row per setting of the row axes, accuracy (beside the published) per model."""
    configs, gaps = exp.configs, published_gaps(exp.runs, "q1a")
    dataset = exp.runs["dataset"].iloc[0]
    rows = [a for a in GRID_AXES if configs[a].notna().any()]
    rows += [a for a in exp.axes if a not in (*GRID_AXES, "model")]
    rows = rows or ["dataset"]  # an engine without these settings: a row, for the one dataset
    settings = configs[rows].drop_duplicates().reset_index(drop=True)
    acc_text, acc = by_model(configs, rows, settings, "accuracy %")
    secs_text, secs = by_model(configs, rows, settings, "train (s)")
    columns, models = keyed(settings, rows), list(dict.fromkeys(configs["model"]))
    cells = list(settings.reindex(columns=list(GRID_AXES)).itertuples(index=False))
    for model in models:
        columns[f"{name(model)} %"] = (acc_text[model], acc[model])
        theirs = [published.GRID.get((dataset, model, *cell)) for cell in cells]
        columns |= beside(acc[model], theirs, gaps, f"{name(model)} ")
    columns |= {f"{name(m)} train (s)": (secs_text[m], secs[m]) for m in models}
    title = f"{' / '.join(map(name, models))} test accuracy by {' × '.join(map(field_label, rows))}"
    return make_table(exp, f"{title} ({name(dataset)})", columns, gaps)


def svm_table(exp: Experiment) -> Table:
    """Q1(b): a row per SVM config with its back-end, beside the published row at C = 10."""
    configs, gaps = exp.configs, published_gaps(exp.runs, "q1b")
    columns = keyed(configs, list(dict.fromkeys(["dataset", "kernel", "C", *exp.axes])))
    columns |= {h: metric(configs, h) for h in ("accuracy %", "train (s)", "support vectors")}
    columns["back-end"] = (configs["backend"].fillna("n/a"), None)
    at_c = configs["C"].eq(published.SVM_C)
    keys = zip(configs["dataset"], configs["kernel"], at_c, strict=True)
    theirs = [published.SVM.get((dataset, kernel)) if c else None for dataset, kernel, c in keys]
    columns |= beside(columns["accuracy %"][1], theirs, gaps, times=True)
    datasets = ", ".join(name(d) for d in dict.fromkeys(configs["dataset"]))
    return make_table(exp, f"SVM accuracy and train time ({datasets})", columns, gaps)


def devices_table(exp: Experiment) -> Table:
    """Q2: a row per config and device, CPU first, with FLOPs, MACs and the speedup."""
    gaps, gpu = published_gaps(exp.runs, "q2"), exp.configs["device_kind"].ne("cpu")
    configs = exp.configs.assign(pair=contexts(exp.configs, exp.axes, "device_kind"), gpu=gpu)
    configs = configs.sort_values(["pair", "gpu"], kind="stable").reset_index(drop=True)
    kind, missing = configs["device_kind"], configs["missing"]
    compute = kind.map(name) + ": " + configs["device_name"]
    compute = compute.fillna(kind.map(name) + " (" + kind + ", " + missing + ")")
    columns = {"compute": (compute, None)}
    columns |= keyed(configs, [a for a in ["model", *exp.axes] if a != "device_kind"])
    columns |= {h: metric(configs, h) for h in ("accuracy %", "train (s)", *list(METRICS)[3:])}
    columns[PUBLISHED_INPUT_MACS] = published_input_macs(configs["model"])
    cpu_secs = configs[~configs["gpu"]].set_index("pair")["secs"]
    speed = (configs["pair"].map(cpu_secs) / configs["secs"]).where(configs["gpu"])
    text = formatted(speed, units.ratio).where(speed.notna(), "n/a (" + missing + ")")
    columns["speedup vs CPU"] = (text.where(configs["gpu"], "1.00× (baseline)"), speed)
    columns = not_here(configs, columns)
    fashion = configs["dataset"].eq("fashion-mnist")
    keys = zip(configs["model"], kind, fashion, strict=True)
    theirs = [published.Q2.get((model, device)) if f else None for model, device, f in keys]
    columns |= beside(columns["accuracy %"][1], theirs, gaps, times=True)
    models = " / ".join(name(m) for m in dict.fromkeys(configs["model"]))
    title = f"{models} on CPU vs GPU ({name(configs['dataset'].iloc[0])})"
    table = make_table(exp, title, columns, gaps)
    table.notes.insert(0, MACS_NOTE)
    return table


PUBLISHED_INPUT_MACS = f"GMACs/img at {INPUT_LABEL} (ours | published)"
"""Q2's column with each model's forward MACs at the published input, whatever input it ran at."""
MACS_NOTE = (
    f"{PUBLISHED_INPUT_MACS}: counted here for every row at the published input, whatever input "
    "the run had; ours counts the convolutions' and the linear layer's multiply-accumulates "
    "(FlopCounterMode / 2, as GMACs/img), the published count (thop) also 4 operations per "
    "BatchNorm element, hence its 0.5 % (ResNet-18) to 1.1 % (ResNet-50) more."
)


def published_input_macs(models: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Per row: '1.814 | 1.824', ours (report.flops) beside the published (thop's) count at
    224×224×3, '—' for a side with none; the number behind the cell is ours."""
    ours = models.map(macs_at_published_input).astype(float)
    cpu = [published.Q2.get((model, "cpu")) for model in models]
    theirs = pd.Series([getattr(row, "macs_per_image", None) for row in cpu], models.index)
    text = (
        formatted(ours, units.giga, "—") + " | " + formatted(theirs.astype(float), units.giga, "—")
    )
    return text, ours


def not_here(configs: pd.DataFrame, columns: Columns) -> Columns:
    """A row skipped on this machine says so once: 'not run here (needs CUDA)' in its first
    metric cell, the others blank (not 'skipped' in every one)."""
    skipped = configs["missing"].eq("skipped") & configs["n_ok"].eq(0)
    if not skipped.any():
        return columns
    kind = configs["device_kind"]
    compute, _ = columns["compute"]
    columns["compute"] = (compute.where(~skipped, kind.map(name) + " (" + kind + ")"), None)
    needs = NOT_HERE + " (needs " + kind.str.upper() + ")"
    cells = list(METRICS)[:1] + list(METRICS)[1:2] + list(METRICS)[3:] + ["speedup vs CPU"]
    for header in cells:
        text, value = columns[header]
        first = header == "accuracy %"
        columns[header] = (text.where(~skipped, needs if first else ""), value)
    return columns


def machine_once(tables: list[Table]) -> list[Table]:
    """The machine footnote left out of each table when every table that has one names the same
    single machine: the report's Machine section says it once."""
    said = {t.machine for t in tables if t.machine}
    if len(said) == 1 and not next(iter(said)).startswith("Mixed"):
        for table in tables:
            table.notes = [n for n in table.notes if n != table.machine or not n]
    return tables


def make_table(exp: Experiment, title: str, columns: Columns, gaps: list[str]) -> Table:
    """The table from its columns, cut to its ROWS_AT_MOST most accurate rows, with its notes."""
    cells = pd.DataFrame({h: text.to_numpy() for h, (text, _) in columns.items()})
    values = pd.DataFrame({h: v.to_numpy(float) for h, (_, v) in columns.items() if v is not None})
    values = values.reindex(columns=cells.columns)
    cut = f"The {ROWS_AT_MOST} most accurate of {len(cells)} rows; runs.csv has every run."
    unlike = f"Published values: {published.SOURCE}. † Not like for like: {'; '.join(gaps)}."
    notes = [cut] * (len(cells) > ROWS_AT_MOST) + [unlike] * bool(gaps)
    if len(cells) > ROWS_AT_MOST:
        keep = values.filter(like=" %").iloc[:, 0].nlargest(ROWS_AT_MOST).index
        cells, values = (frame.loc[keep].reset_index(drop=True) for frame in (cells, values))
    on = machine(exp.runs)
    notes += [protocol(exp.runs), on, shared_gpu_note(exp), *missing_notes(exp)]
    notes = [n for n in notes if n]
    return Table(exp.slug, f"{exp.slug}: {title}", exp.kind, cells, values, notes, on)


def build_table(exp: Experiment) -> Table:
    return {"grid": grid_table, "svm": svm_table, "devices": devices_table}[exp.kind](exp)


# --- footnotes ----------------------------------------------------------------------------------


def unique(values: pd.Series, field: str = "") -> str:
    return ", ".join(dict.fromkeys(show(field, v) for v in values.dropna().drop_duplicates()))


def settings(runs: pd.DataFrame) -> dict[str, str]:
    """The protocol, setting by setting: what a footnote states and the published one differs in."""
    torch, limits = runs[runs["engine"].eq("torch")], [unique(runs[f], f) for f in LIMITS]
    subsets = ", ".join(f"{f} {limit or 'none'}" for f, limit in zip(LIMITS, limits, strict=True))
    found = {"split": unique(runs["split"]), "subsets": subsets if any(limits) else "none"}
    if torch.empty:  # SVMs say their features; another engine's runs, only what all runs have
        features = unique(runs["features"])
        return found | ({"features": features} if features else {})
    size = torch["image_size"].astype(int).astype(str)
    return found | {
        "input": unique(size + "×" + size + "×" + torch["channels"].astype(int).astype(str)),
        "epochs": unique(torch["epochs"]), "loader": unique(torch["loader"]),
        "pin_memory": unique(torch["pin_memory"].fillna(False)), "precision": unique(torch["precision"]) or "n/a",
        "device": unique(torch["device_kind"].map(name)),
    } | steps(torch)  # fmt: skip


def steps(torch: pd.DataFrame) -> dict[str, str]:
    """How GPU runs stepped: captured in CUDA graphs or eager (said only where they ran)."""
    on_gpu = torch[torch["device_kind"].eq("cuda")]["ran_cuda_graphs"].dropna()
    kinds = {"on": "captured in CUDA graphs", "off": "eager"}
    return {"GPU steps": unique(on_gpu.map(kinds))} if len(on_gpu) else {}


def published_gaps(runs: pd.DataFrame, part: str) -> list[str]:
    """How these runs' protocol differs from the published study's ('q1a', 'q1b' or 'q2')."""
    theirs = {"split": "assignment", "subsets": "none"}
    if part == "q1a":  # epochs only where the study trained on the dataset (MNIST, Fashion)
        epochs = published.Q1A_EPOCHS.get(runs["dataset"].iloc[0])
        said = {"epochs": str(epochs)} if epochs else {}
        theirs |= {"input": "224×224×3", **said, "device": "GPU"}
    elif part == "q2":
        theirs |= {"input": "224×224×3", "epochs": str(published.Q2_EPOCHS)}
    ours = settings(runs)
    differ = [key for key, value in theirs.items() if ours.get(key, value) != value]
    gaps = [f"{key} {ours[key]} here, {theirs[key]} published" for key in differ]
    hardware = f" (published GPU: {published.Q2_GPU})" * (part == "q2")
    return gaps + [f"train times from other hardware{hardware}"] * (part != "q1a")


def protocol(runs: pd.DataFrame) -> str:
    """The footnote that states the protocol: the settings, the split's sizes, the seeds."""
    found, sized = settings(runs), runs.dropna(subset=["train_images"])
    counts = sized[["train_images", "val_images", "test_images"]].fillna(0).astype(int)
    sizes = "; ".join(
        f"{t:,} train / {v:,} val / {e:,} test"
        for t, v, e in counts.drop_duplicates().itertuples(index=False)
    )
    found["split"] += f" ({sizes} images)" if sizes else ""
    several = runs.groupby("config")["key"].size().max() > 1
    found["seeds"] = unique(runs["seed"].sort_values())
    found["seeds"] += " (cells are mean ± sample std over seeds)" * bool(several)
    return "Protocol — " + "; ".join(f"{k}: {v}" for k, v in found.items()) + "."


def machine(runs: pd.DataFrame) -> str:
    """The machine(s) behind a table: CPU, GPU, threads, library versions; says when mixed."""
    done = runs[runs["env_cpu"].notna()].fillna({"env_hostname": "?"})
    machines = done.groupby(["env_hostname", "env_cpu"], sort=False).agg(
        gpu=("env_gpu", unique), threads=("env_threads", unique), torch=("env_torch", unique),
        sklearn=("env_sklearn", unique), n=("key", "size"),
    )  # fmt: skip
    text = [f"{cpu} ({m.threads} threads){f', GPU {m.gpu}' * bool(m.gpu)}; PyTorch {m.torch or 'n/a'}, "
            f"scikit-learn {m.sklearn or 'n/a'}" for (_, cpu), m in machines.iterrows()]  # fmt: skip
    if len(text) < 2:
        return f"Machine: {text[0]}." if text else ""
    each = "; ".join(f"{t} ({n} runs)" for t, n in zip(text, machines["n"], strict=True))
    return f"Mixed machines in this table: {each}. Compare its train times with care."


def shared_gpu_note(exp: Experiment, at_most: int = 8) -> str:
    """The ‡ footnote: the configs whose runs shared their GPU, each with the runs on its GPU
    averaged over the run's life (time-weighted, itself included; the range over its seeds)."""
    shared = exp.runs[shared_gpu_runs(exp.runs)]
    if shared.empty:
        return ""
    each = []
    for _, runs in shared.groupby("config", sort=False):
        means = pd.to_numeric(runs["mean_runs_on_same_gpu"], errors="coerce").dropna()
        if means.empty:  # stored before the mean was recorded: only the most at once is known
            most = pd.to_numeric(runs["runs_on_same_gpu"], errors="coerce").max()
            each.append(f"{label(runs.iloc[0], exp.axes)}: up to {most:.0f} at once")
        else:
            span = "–".join(dict.fromkeys(f"{m:.2f}" for m in (means.min(), means.max())))
            each.append(f"{label(runs.iloc[0], exp.axes)}: {span}")
    more = f"; and {len(each) - at_most} more" * (len(each) > at_most)
    return (
        f"{SHARED_GPU} Shared its GPU with other runs; runs on that GPU on average over the run's "
        f"life (time-weighted, itself included): {'; '.join(each[:at_most])}{more}. Its train "
        "time is its own synchronised train time, not the group's wall time divided by the runs."
    )


def missing_notes(exp: Experiment, at_most: int = 8) -> list[str]:
    """A line per reason runs have no result: 'failed: <reason> — <config> (seeds 0, 1)'."""
    lines = []
    missing = exp.runs[exp.runs["state"].ne("ok")]
    for (state, reason), runs in missing.groupby(["state", "reason"], sort=False):
        seeds = runs.groupby("config", sort=False)["seed"].agg(list)
        configs = zip(runs.drop_duplicates("config").to_dict("records"), seeds, strict=True)
        who = [
            f"{label(r, exp.axes)} (seed{'s' * (len(s) > 1)} {', '.join(map(str, s))})"
            for r, s in configs
        ]
        more = f"; and {len(who) - at_most} more" * (len(who) > at_most)
        lines.append(f"{state}: {reason} — {'; '.join(who[:at_most])}{more}")
    return lines

"""Headline and insights beyond one experiment: the best config per dataset (Q1(a) grids only)
and the best SVM beside the published best, GPU speedups with FLOPs, ResNet-18 vs ResNet-50,
the published study's three claims tested on our data, and caveats.
"""

from __future__ import annotations

import pandas as pd

from mnistbench import published
from mnistbench.report.compare import (
    AT_MOST,
    FEW_STEPS,
    OUTLIER_POINTS,
    SMALL_LR,
    Experiment,
    Insight,
    contexts,
    keys,
    tested,
    training_steps,
    undertrained,
    versus,
    versus_text,
)
from mnistbench.report.frame import GRID_AXES, SVM_AXES, finished
from mnistbench.report.tables import LIMITS, published_gaps
from mnistbench.report.text import (
    counts,
    giga,
    label,
    name,
    percent,
    plural,
    ratio,
    seconds,
    settings,
    show,
)
from mnistbench.report.timing import STEADY, throughput_spread

AGREE = 0.75
"""A claim is supported where at least this share of our pairs agrees with it, contradicted
where at most 1 - AGREE does, mixed between."""


def accuracy(row: dict) -> str:
    spread = f" ± {percent(row['test_accuracy_std'])}% ({row['n_ok']} seeds)"
    return percent(row["test_accuracy_mean"]) + (spread if row["n_ok"] > 1 else "%")


def runner_up(exps: list[Experiment], best: dict, second: dict) -> str:
    gap = best["test_accuracy_mean"] - second["test_accuracy_mean"]
    what = label(second, exps[second["exp"]].axes, dataset=False)
    text = f"; runner-up {what} at {accuracy(second)}, {gap:.2f} points lower"
    why = undertrained(exps[second["exp"]], second) if gap > OUTLIER_POINTS else ""
    text += f" ({why})" if why else ""  # a far lower runner-up that did not train enough
    if min(best["n_ok"], second["n_ok"]) < 2:  # untested: the report says so once, atop
        return text + "."
    from scipy import stats  # here: importing it takes a second, and one seed needs no test

    samples = [
        finished(exps[r["exp"]].runs).query("config == @r['config']")["test_accuracy"]
        for r in (best, second)
    ]
    welch = tested("Welch's t-test", stats.ttest_ind(*samples, equal_var=False).pvalue)
    return text + f" ({welch})."


def best_configs(exps: list[Experiment], kind: str) -> list[Insight]:
    """Per dataset, the best finished config of the Q1(a) grids ('grid') or of the SVMs ('svm'),
    beside the published study's best."""
    insights, part = [], "q1a" if kind == "grid" else "q1b"
    pool = [e.done.assign(exp=i) for i, e in enumerate(exps) if e.kind == kind]
    for dataset, done in pd.concat(pool).groupby("dataset", sort=False) if pool else []:
        done = done.sort_values("test_accuracy_mean", ascending=False)
        best, exp = done.iloc[0].to_dict(), exps[done["exp"].iloc[0]]
        axes = [*(GRID_AXES if kind == "grid" else SVM_AXES), *exp.axes]
        text = (
            f"Best on {name(dataset)} ({'Q1(a)' if kind == 'grid' else 'SVMs'}, {exp.slug}): "
            f"{label(best, dict.fromkeys(axes), dataset=False)} at {accuracy(best)}, "
            f"{seconds(best['secs'])} s train time; best of {plural(len(done), 'finished config')}"
        )
        text += runner_up(exps, best, done.iloc[1].to_dict()) if len(done) > 1 else "."
        theirs = their_best(dataset, kind)
        if theirs:
            differs = "; protocols differ, see the table" * bool(published_gaps(exp.runs, part))
            gap = best["test_accuracy_mean"] - theirs[0]
            text += f" Published best: {theirs[1]} at {percent(theirs[0])}% ({gap:+.2f} points here{differs})."
        data = {"dataset": dataset, "experiment": exp.slug, "accuracy": best["test_accuracy_mean"],
                "configs": len(done), "published": theirs[0] if theirs else None}  # fmt: skip
        topic = "best" if kind == "grid" else "svm"
        insights.append(Insight(topic, text, data, keys(exp, done["config"][:1])))
    return insights


def their_best(dataset: str, kind: str) -> tuple[float, str] | None:
    """The published study's best accuracy on `dataset` and what reached it, if it has one."""
    if kind == "svm":
        rows = [(r.accuracy, k.kernel) for k, r in published.SVM.items() if k.dataset == dataset]
        return (max(rows)[0], f"SVM {max(rows)[1]}, C {published.SVM_C:g}") if rows else None
    try:
        key, row = published.best(dataset)
    except KeyError:
        return None
    return row.accuracy, label(key._asdict(), GRID_AXES, dataset=False)


def speedups(exps: list[Experiment]) -> pd.DataFrame:
    """Per model of the Q2 experiments: the median CPU/GPU time ratio over pairs, FLOPs/img;
    none from an experiment whose train times are not comparable (a shared machine)."""
    rows = []
    for exp in (e for e in exps if e.kind == "devices" and e.times_comparable):
        for model, configs in exp.clean.groupby("model", sort=False):
            if found := versus(exp, "device_kind", "cpu", "cuda", configs):
                flops = configs["flops_per_image_mean"].max()
                rows.append((model, found["time_ratio"], flops, found["runs"]))
    return pd.DataFrame(rows, columns=["model", "speedup", "flops", "runs"]).sort_values("flops")


def per_model(found: pd.DataFrame) -> str:
    """'ResNet-18 18.53× at 3.640 GFLOPs/img (fwd); ...': the speedups beside the model's cost."""
    return "; ".join(
        f"{name(r.model)} {ratio(r.speedup)} at {giga(r.flops)} GFLOPs/img (fwd)"
        for r in found.itertuples()
    )


def gpu_speedup(exps: list[Experiment]) -> list[Insight]:
    """The GPU speedup per model with its FLOPs beside the published ones, or why there is none."""
    runs, found = [e.runs for e in exps if e.kind == "devices"], speedups(exps)
    shared = [e.runs for e in exps if e.kind == "devices" and not e.times_comparable]
    if shared and found.empty:
        text = "GPU speedup: not measured here (the machine was shared: train times are not comparable)."
        return [Insight("speedup", text, {"speedups": {}}, tuple(pd.concat(shared)["key"]))]
    if runs and found.empty:
        gpu = pd.concat(runs).query("device_kind != 'cpu'")
        why = "; ".join(dict.fromkeys(gpu["state"] + ": " + gpu["reason"])) or "no GPU run"
        text = f"GPU speedup: not measured here ({why})."
        return [Insight("speedup", text, {"speedups": {}}, tuple(gpu["key"]))]
    if found.empty:
        return []
    q2 = published.Q2
    theirs = ", ".join(
        f"{name(m)} {ratio(q2[m, 'cpu'].train_ms / q2[m, 'cuda'].train_ms)}"
        for m in ("resnet18", "resnet50")
    )
    text = f"GPU speedup (CPU time / GPU time, median over pairs): {per_model(found)}. "
    text += f"Published: {theirs} ({published.Q2_GPU})."
    data = {"speedups": dict(zip(found["model"], found["speedup"], strict=True))}
    return [Insight("speedup", text, data, tuple(k for ks in found["runs"] for k in ks))]


def model_pairs(exp: Experiment, small: str = "resnet18", large: str = "resnet50") -> pd.DataFrame:
    """The finished configs of the two models that agree on every other axis, a row per pair:
    `small` and `large` (config rows as dicts), `low` (the less accurate of the two) and `why`:
    'undertrained: 125 optimizer steps at lr 0.0001' where `low` is more than OUTLIER_POINTS
    below the other after few steps at a small lr. Such a gap says which model learns faster
    in a few updates (the larger one needs more), not which architecture is better."""
    table = exp.clean[exp.clean["model"].isin([small, large])]
    table, rows = table.assign(ctx=contexts(table, exp.axes, "model")), []
    for _, pair in table.groupby("ctx", sort=False):
        if set(pair["model"]) == {small, large}:
            a, b = (pair[pair["model"].eq(m)].iloc[0].to_dict() for m in (small, large))
            low, high = sorted((a, b), key=lambda r: r["acc"])
            why = undertrained(exp, low) if high["acc"] - low["acc"] > OUTLIER_POINTS else ""
            rows.append({"small": a, "large": b, "low": low, "why": why})
    return pd.DataFrame(rows, columns=["small", "large", "low", "why"])


def undertrained_pairs(exp: Experiment, short: pd.DataFrame) -> str:
    """'ResNet-50 reached 38.60% after 125 optimizer steps at lr 0.0001 (ResNet-18: 80.12%):
    undertrained, so this does not compare the architectures', one clause per pair when few."""
    if len(short) > AT_MOST:
        return (
            f"in {len(short)} pairs the less accurate model is more than {OUTLIER_POINTS:g} points "
            f"below after under {FEW_STEPS} optimizer steps at lr ≤ {SMALL_LR:g}: undertrained, "
            "so these pairs do not compare the architectures"
        )
    others = [a for a in exp.axes if a != "model"]
    clauses = []
    for pair in short.to_dict("records"):
        low = pair["low"]
        high = pair["large"] if low["model"] == pair["small"]["model"] else pair["small"]
        where = f" ({settings(low, others)})" * (len(short) > 1 and bool(others))
        clauses.append(
            f"{name(low['model'])}{where} reached {percent(low['acc'])}% after "
            f"{training_steps(exp, low):,} optimizer steps at lr {show('lr', low['lr'])} "
            f"({name(high['model'])}: {percent(high['acc'])}%)"
        )
    this = "this does" if len(short) == 1 else "these do"
    return f"{'; '.join(clauses)}: undertrained, so {this} not compare the architectures"


def model_sizes(exps: list[Experiment]) -> list[Insight]:
    """ResNet-18 vs ResNet-50 on the same config: accuracy gap, time ratio, who wins how often;
    pairs where the less accurate model is undertrained are said apart, never counted."""
    insights = []
    for exp in (e for e in exps if e.kind != "svm"):
        pairs = model_pairs(exp)
        if pairs.empty:
            continue
        short = pairs[pairs["why"] != ""]
        left_out = [
            pair[m]["config"] for m in ("small", "large") for pair in short.to_dict("records")
        ]
        fair = exp.clean[~exp.clean["config"].isin(left_out)]
        found = versus(exp, "model", "resnet18", "resnet50", fair)
        said, data, runs = [], {"undertrained": len(short)}, keys(exp, left_out)
        if found:
            runs += found.pop("runs")
            data |= found
            said.append(f"{versus_text(exp, found)}.")
        if len(short):
            what = undertrained_pairs(exp, short)
            said.append(f"Left out: {what}." if found else f"{what[0].upper()}{what[1:]}.")
        insights.append(Insight("models", f"{exp.slug}: {' '.join(said)}", data, runs))
    return insights


def agreeing(tests: list[dict]) -> str:
    """'3 of 4 pairs': how many of the pairs behind these comparisons favour the first value."""
    return f"{sum(t['a_wins'] for t in tests)} of {plural(sum(t['pairs'] for t in tests), 'pair')}"


def claim(topic: str, tests: list[dict], said: str) -> Insight:
    """A published claim with our verdict: the share of our comparisons that agree with it."""
    agree, total = sum(t["a_wins"] for t in tests), sum(t["pairs"] for t in tests)
    if not total:
        verdict = "not testable here"
    elif agree >= AGREE * total:
        verdict = "supported"
    else:
        verdict = "contradicted" if agree <= (1 - AGREE) * total else "mixed"
    text = f"{topic[0].upper()}{topic[1:]}: “{published.CLAIMS[topic]}” {verdict}: {said}."
    return Insight("claim", text, {"claim": topic, "verdict": verdict, "agree": agree, "of": total})


def claims(exps: list[Experiment]) -> list[Insight]:
    """The published study's three claims, each tested on our pairs of configs."""
    grids = [e for e in exps if e.kind == "grid"]
    said, lrs = [], []  # SGD does best at lr 0.001; Adam at lr 0.0001
    for optimizer, good, bad in (("sgd", 1e-3, 1e-4), ("adam", 1e-4, 1e-3)):
        subsets = [(e, e.clean[e.clean["optimizer"].eq(optimizer)]) for e in grids]
        found = [r for e, table in subsets if (r := versus(e, "lr", good, bad, table))]
        if found:
            said.append(
                f"{name(optimizer)} more accurate at lr {good:g} than {bad:g} in {agreeing(found)}"
            )
        lrs += found
    none = "no SGD or Adam pairs at lr 0.001 and 0.0001"
    found = [claim("optimizer", lrs, "; ".join(said) or none)]
    found_in = [(e, r) for e in grids if (r := versus(e, "batch_size", 16, 32))]
    batch = [r for _, r in found_in]
    steady = [r["time_ratio"] for e, r in found_in if e.times_comparable]
    speed = ratio(pd.Series(steady, dtype=float).median())
    said = f"batch 16 more accurate in {agreeing(batch)}"
    said += f"; batch 32 trains {speed} faster (median)" if steady else ""
    said += "; times not compared (the machine was shared)" * (len(steady) < len(batch))
    found.append(claim("batch size", batch, said if batch else "no batch 16/32 pairs"))
    sped = speedups(exps)  # a test per model (GPU faster?); with two, does the larger gain more?
    tests = [{"a_wins": int(s > 1), "pairs": 1} for s in sped["speedup"]]
    if len(sped) > 1:
        tests.append({"a_wins": int(sped["speedup"].is_monotonic_increasing), "pairs": 1})
    said = per_model(sped) or "no CPU/GPU pair finished"
    return [*found, claim("GPU acceleration", tests, said)]


def seed_caveat(runs: pd.DataFrame) -> str:
    """The one line atop the report when configs have one seed: their gaps are untested."""
    seeds = finished(runs).groupby("config")["key"].size()
    if not (seeds < 2).any():
        return ""
    return f"{(seeds < 2).sum()} of {len(seeds)} finished configs have one seed: gaps between them are untested."


def caveats(runs: pd.DataFrame) -> list[Insight]:
    """What a reader must know before trusting the numbers: subsets, missing runs, and train
    times of identical shapes whose throughput differs more than STEADY× (a shared machine).
    One seed per config is said once, atop the report (`seed_caveat`)."""
    skipped = runs[runs["state"].eq("skipped")]
    waiting = runs[runs["state"].isin(["not run", "running"])]
    said = [  # (whether it applies, what it says)
        (runs[list(LIMITS)].notna().any(axis=None), "Runs use subsets of the data: "
         "accuracies are not comparable with full-dataset ones such as the published study's."),
        (len(waiting), f"{len(waiting)} of {len(runs)} runs have no result yet "
         f"({counts(waiting['state'])}): `mnistbench study run` runs them."),
        (len(skipped), f"{plural(len(skipped), 'run')} skipped here, never counted as configs: "
         f"{'; '.join(dict.fromkeys(skipped['reason']))}."),
    ]  # fmt: skip
    texts = [text for applies, text in said if applies]
    spread = throughput_spread(runs).reset_index()
    for r in spread[spread["max"] > STEADY * spread["min"]].itertuples():
        texts.append(
            f"Training throughput of {name(r.model)} at {r.image_size:g} px, batch {r.batch_size:g} on {name(r.device_kind)} "
            f"ranges from {r.min:,.1f} to {r.max:,.1f} images/s over {r.size:g} runs of identical shape: the machine "
            "was shared, so train times are not comparable and the report draws no time conclusion."
        )
    return [Insight("caveat", text) for text in texts]

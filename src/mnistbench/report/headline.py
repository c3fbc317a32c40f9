"""Headline results: the best config per dataset and model, the best SVM, ResNet vs SVM, the GPU
speedup, and the published study's numbers where a run follows its protocol exactly.
"""

from __future__ import annotations

from mnistbench import published
from mnistbench.report.runs import (
    Group,
    Run,
    Stat,
    best_run,
    class_names,
    dataset_name,
    first_line,
    format_value,
    group_runs,
    model_name,
    plural,
    stat,
)
from mnistbench.report.sentences import (
    Insight,
    acc_text,
    by_fields,
    compare_with_runner_up,
    experiments_of,
    extra_fields,
    not_finished,
    rank,
    seconds_text,
    settings_text,
)
from mnistbench.report.tables import device_groups, fmt_ms, fmt_percent, speedup

# The published study's results (mnistbench.published, the one copy) are quoted only next to
# runs of exactly its protocol.


def published_protocol(group: Group) -> bool:
    """Whether every run of the config follows the published protocol (full data, 224×224×3)."""
    return all(
        run.spec.split == "assignment"
        and run.spec.train_limit is None
        and run.spec.test_limit is None
        and (run.spec.is_svm or (run.spec.image_size == 224 and run.spec.channels == 3))
        for run in group.runs
    )


def _versus_published_best(group: Group, acc: Stat) -> str:
    """The published best cell of the same dataset and model, beside our best config."""
    spec = group.spec
    if not published_protocol(group) or spec.epochs != published.Q1A_EPOCHS.get(spec.dataset):
        return ""
    try:
        key, best = published.best(spec.dataset, spec.model)
    except KeyError:
        return ""
    config = (
        f"B{key.batch_size}, {format_value('optimizer', key.optimizer)}, "
        f"lr {format_value('lr', key.lr)}"
    )
    return (
        f" The published study reports {best.accuracy:.2f}% ({config}) under this protocol: "
        f"{acc.mean - best.accuracy:+.2f} points here."
    )


def _versus_published_svm(group: Group, acc: Stat) -> str:
    spec = group.spec
    row = published.SVM.get((spec.dataset, spec.kernel))
    if row is None or not published_protocol(group) or spec.C != published.SVM_C:
        return ""
    return (
        f" The published study reports {row.accuracy:.2f}% in {row.train_ms:,} ms for the "
        f"{spec.kernel} kernel under this protocol: {acc.mean - row.accuracy:+.2f} points here "
        "(train times depend on the hardware)."
    )


def best_configs(runs: list[Run]) -> list[Insight]:
    """The best ResNet config per dataset and model, and how sure that ranking is."""
    insights = []
    for (dataset, model), members in by_fields(
        (r for r in runs if not r.spec.is_svm), "dataset", "model"
    ).items():
        groups = group_runs(members)
        ranked = rank(groups)
        where = f"{model_name(model)} on {dataset_name(dataset)}"
        if not ranked:
            insights.append(
                Insight(
                    "best",
                    f"No {where} run finished ({plural(len(members), 'run')}: {not_finished(members)}).",
                )
            )
            continue
        extra = extra_fields(groups)
        group, acc = ranked[0]
        text = (
            f"Best {where}: {acc_text(acc)} test accuracy with {settings_text(group, extra)} "
            f"({experiments_of(group)}; best of {plural(len(ranked), 'finished config')}"
            f"{f' out of {len(groups)}' if len(groups) != len(ranked) else ''}; "
            f"train {seconds_text(group.train_seconds)})."
        )
        if len(ranked) > 1:
            text += " " + compare_with_runner_up(ranked[0], ranked[1], extra)
        text += _versus_published_best(group, acc)
        insights.append(Insight("best", text))
    return insights


def best_svms(runs: list[Run]) -> list[Insight]:
    insights = []
    for (dataset,), members in by_fields((r for r in runs if r.spec.is_svm), "dataset").items():
        groups = group_runs(members)
        ranked = rank(groups)
        if not ranked:
            insights.append(
                Insight(
                    "svm",
                    f"No SVM on {dataset_name(dataset)} finished ({plural(len(members), 'run')}: {not_finished(members)}).",
                )
            )
            continue
        extra = extra_fields(groups)
        group, acc = ranked[0]
        time = stat(group.ok_runs, lambda r: r.train_seconds)
        backends = ", ".join(
            dict.fromkeys(r.result.backend or "?" for r in group.ok_runs if r.result)
        )
        text = (
            f"Best SVM on {dataset_name(dataset)}: {settings_text(group, extra)}, {acc_text(acc)} in "
            f"{fmt_ms(time.mean) if time else 'n/a'} ms train time ({backends}; best of "
            f"{plural(len(ranked), 'finished SVM config')})."
        )
        others = [
            f"{settings_text(g, extra)} {acc_text(s)} in {fmt_ms(g.train_seconds.mean)} ms"
            for g, s in ranked[1:]
            if g.train_seconds
        ]
        if others:
            text += " Others: " + "; ".join(others) + "."
        text += _versus_published_svm(group, acc)
        insights.append(Insight("svm", text))
    return insights


def resnet_versus_svm(runs: list[Run]) -> list[Insight]:
    """Per dataset, the best ResNet against the best SVM: accuracy gap and train-time ratio."""
    insights = []
    for (dataset,), members in by_fields(runs, "dataset").items():
        nets = rank(group_runs(r for r in members if not r.spec.is_svm))
        svms = rank(group_runs(r for r in members if r.spec.is_svm))
        if not nets or not svms:
            continue
        (net, net_acc), (svm, svm_acc) = nets[0], svms[0]
        gap = net_acc.mean - svm_acc.mean
        winner, loser = ("best ResNet", "best SVM") if gap >= 0 else ("best SVM", "best ResNet")
        text = (
            f"On {dataset_name(dataset)} the {winner} is {abs(gap):.2f} points more accurate than "
            f"the {loser}: {model_name(net.spec.model)} {fmt_percent(net_acc.mean)}% "
            f"(train {seconds_text(net.train_seconds)}) vs SVM {svm.spec.kernel} "
            f"{fmt_percent(svm_acc.mean)}% (train {seconds_text(svm.train_seconds)})."
        )
        net_images, svm_images = _train_images(net), _train_images(svm)
        if net_images != svm_images:
            text += (
                f" Not like for like: the ResNet trained on {net_images} images "
                f"({plural(net.spec.epochs, 'epoch')}), the SVM on {svm_images}."
            )
        insights.append(Insight("versus", text))
    return insights


def _train_images(group: Group) -> str:
    """How many training images the config's runs used ('2,000'), from their protocol."""
    sizes = {
        run.result.protocol.get("sizes", {}).get("train")
        for run in group.ok_runs
        if run.result is not None
    }
    sizes.discard(None)
    if not sizes:
        return (
            format_value("train_limit", group.spec.train_limit) if group.spec.train_limit else "all"
        )
    return " / ".join(f"{size:,}" for size in sorted(sizes))


def gpu_speedups(runs: list[Run]) -> list[Insight]:
    """CPU time / GPU time for every config run on both; why not, for those that could not be."""
    torch_runs = [r for r in runs if not r.spec.is_svm]
    if not torch_runs:
        return []
    if not any(r.device_kind in ("cuda", "mps") for r in torch_runs):
        return [
            Insight(
                "speedup",
                "The GPU speedup cannot be computed: the study has no GPU runs "
                "(every ResNet run used the CPU).",
            )
        ]
    insights = []
    for kinds in device_groups(torch_runs).values():
        gpu = kinds.get("cuda") or kinds.get("mps")
        if gpu is None:
            continue
        value = speedup(kinds)
        if value is not None:
            insights.append(Insight("speedup", _speedup_sentence(kinds, value)))
        else:
            what = f"{model_name(gpu.spec.model)} on {dataset_name(gpu.spec.dataset)}"
            why = _why_no_speedup(kinds, gpu)
            insights.append(
                Insight(
                    "speedup",
                    f"The GPU speedup for {what} ({settings_text(gpu, [])}) cannot be computed: {why}.",
                )
            )
    return insights


def _why_no_speedup(kinds: dict[str, Group], gpu: Group) -> str:
    cpu = kinds.get("cpu")
    if cpu is None:
        return "no CPU run has the same settings"
    for name, group in (("GPU", gpu), ("CPU", cpu)):
        if group.missing_state is not None:
            n = len(group.runs)
            reasons = "; ".join(dict.fromkeys(first_line(r.reason) for r in group.runs))
            verb = "was" if n == 1 else "were"
            return (
                f"the {name} {'run' if n == 1 else 'runs'} {verb} {group.missing_state} ({reasons})"
            )
    return "a train time is missing"


def _speedup_sentence(kinds: dict[str, Group], value: float) -> str:
    cpu = kinds["cpu"]
    gpu = kinds.get("cuda") or kinds["mps"]
    gpu_name = ", ".join(dict.fromkeys(r.device_name for r in gpu.ok_runs))
    cpu_name = ", ".join(dict.fromkeys(r.device_name for r in cpu.ok_runs))
    spec = cpu.spec
    text = (
        f"GPU speedup for {model_name(spec.model)} on {dataset_name(spec.dataset)} "
        f"({settings_text(cpu, [])}, {spec.epochs} epochs): {value:.2f}× — {gpu_name} trains in "
        f"{seconds_text(gpu.train_seconds)}, the CPU ({cpu_name}) in {seconds_text(cpu.train_seconds)}; "
        f"accuracy {_mean_percent(gpu)} (GPU) vs {_mean_percent(cpu)} (CPU)."
    )
    amp = {
        k: ", ".join(dict.fromkeys(r.result.precision for r in g.ok_runs if r.result))
        for k, g in (("GPU", gpu), ("CPU", cpu))
    }
    if amp["GPU"] != amp["CPU"]:
        text += f" Precision differs: {amp['GPU']} on the GPU, {amp['CPU']} on the CPU."
    return text


def confusions(runs: list[Run], top: int = 3) -> list[Insight]:
    """Per dataset, the classes the best run mistook most often, from its confusion matrix."""
    insights = []
    for dataset in dict.fromkeys(run.spec.dataset for run in runs):
        best = best_run(runs, dataset)
        if best is None:
            continue
        matrix = best.result.confusion_matrix
        names = class_names(dataset, len(matrix))
        errors = sorted(
            (-count, t, p)
            for t, row in enumerate(matrix)
            for p, count in enumerate(row)
            if t != p and count
        )[:top]
        if not errors:
            continue
        pairs = "; ".join(
            f"{names[t]} → {names[p]}: {-count} ({100 * -count / sum(matrix[t]):.1f}% of true {names[t]})"
            for count, t, p in errors
        )
        wrong = sum(sum(row) for row in matrix) - sum(matrix[i][i] for i in range(len(matrix)))
        text = (
            f"Most frequent mistakes (true → predicted) of the best run on {dataset_name(dataset)} "
            f"({best.label()}, {fmt_percent(best.accuracy)}%, {wrong:,} errors): {pairs}."
        )
        insights.append(Insight("confusion", text))
    return insights


def _mean_percent(group: Group) -> str:
    return f"{fmt_percent(group.accuracy.mean)}%" if group.accuracy else "n/a"


def headline(runs: list[Run]) -> list[Insight]:
    return (
        best_configs(runs)
        + best_svms(runs)
        + resnet_versus_svm(runs)
        + gpu_speedups(runs)
        + confusions(runs)
    )

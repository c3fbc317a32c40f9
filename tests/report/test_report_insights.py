"""Report conclusions on small hand-made stores: like-with-like comparisons that one outlier
cannot flip, their agreement counts and tests, outliers and regions, the published claims, and
what a big sweep makes of them. Assertions read the numbers and runs behind each sentence."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mnistbench.config import RunSpec
from mnistbench.report import build_report
from mnistbench.report.compare import Experiment, low_outliers, region
from mnistbench.report.frame import load_runs
from mnistbench.report.plots import geometric
from mnistbench.result import RunResult
from mnistbench.study.store import Store
from tests.report.test_report import _environment, _finish, torch_result

BASE = RunSpec(
    dataset="mnist", model="resnet18", epochs=2, device="cpu", threads=1, train_limit=500
)


def store_of(path: Path, experiment: str, runs: list[tuple[RunSpec, float, float]], **env) -> Path:
    """A store of one study 's' holding `runs` (spec, accuracy %, train seconds), all finished."""
    with Store(path) as store:
        store.register("s", experiment, [spec for spec, _, _ in runs])
        for spec, accuracy, seconds in runs:
            result = torch_result(spec, accuracy, seconds) if not spec.is_svm else RunResult(
                spec=spec.to_dict(), test_accuracy=accuracy, train_seconds=seconds, environment=_environment("cpu")
            )  # fmt: skip
            result.environment |= env
            _finish(store, spec, result)
    return path


def report_of(path: Path):
    with Store(path) as store:
        return build_report(store, "s", plots=False)


def topic(report, name: str) -> list:
    return [i for i in report.headline + report.insights if i.topic == name]


def effect(report, factor: str):
    return next(i for i in topic(report, "effect") if i.data["factor"] == factor)


# Batch 32 is the more accurate in 3 of 4 optimizer × lr pairs, but one B32 run is far below all
# its neighbours: a mean over batch sizes would make batch 32 the worse by 7 points.
GRID = {  # (batch, optimizer, lr) -> accuracy %
    (16, "sgd", 1e-3): 90.0, (32, "sgd", 1e-3): 91.0, (16, "sgd", 1e-4): 85.0, (32, "sgd", 1e-4): 50.0,
    (16, "adam", 1e-3): 88.0, (32, "adam", 1e-3): 89.0, (16, "adam", 1e-4): 89.0, (32, "adam", 1e-4): 90.0,
}  # fmt: skip


def grid_runs(seeds=(0,), noise=None) -> list[tuple[RunSpec, float, float]]:
    return [
        (BASE.replace(batch_size=b, optimizer=o, lr=lr, seed=s), acc + (noise(s, b) if noise else 0), 100.0 / b * 16)
        for (b, o, lr), acc in GRID.items() for s in seeds
    ]  # fmt: skip


def test_a_low_cell_stays_in_every_comparison_flagged_with_why(tmp_path: Path) -> None:
    report = report_of(store_of(tmp_path / "g.db", "grid", grid_runs()))
    runs = report.runs.set_index("key")
    (outlier,) = [i for i in topic(report, "outlier") if "gap" in i.data]
    assert runs.loc[list(outlier.runs), ["batch_size", "optimizer", "lr"]].values.tolist() == [
        [32, "sgd", 1e-4]
    ]
    # Its neighbours: B16 (85), Adam (90), lr 0.001 (91); the smallest drop is 35 points.
    assert outlier.data["gap"] == pytest.approx(35.0)
    # 2 epochs × ceil(1,000 train images (the result's split) / 32) = 64 steps at lr 1e-4.
    assert "undertrained: 64 optimizer steps at lr 0.0001" in outlier.text
    batch = effect(report, "batch_size")  # kept: 4 pairs, and it cannot flip the count
    assert (batch.data["a"], batch.data["b"], batch.data["pairs"], batch.data["b_wins"]) == (
        16,
        32,
        4,
        3,
    )
    assert batch.data["median_diff"] == pytest.approx(-1.0) and batch.data[
        "time_ratio"
    ] == pytest.approx(2.0)
    assert batch.data["p"] is None and batch.data["test"].startswith("untested")
    assert set(outlier.runs) <= set(batch.runs) and len(batch.runs) == 8
    assert "Left out" not in batch.text
    assert (
        "flagged: ResNet-18, MNIST, B32, SGD, lr 0.0001 (undertrained: 64 optimizer" in batch.text
    )


def test_no_time_conclusion_from_an_axis_that_does_not_change_the_work(tmp_path: Path) -> None:
    report = report_of(store_of(tmp_path / "g.db", "grid", grid_runs()))
    lr, batch = effect(report, "lr"), effect(report, "batch_size")
    assert not any(w in lr.text for w in ("trains", "slower", "faster", "as fast"))
    assert "trains 2.00× faster" in batch.text  # batch size changes the work per image


def test_no_time_conclusion_where_identical_shapes_ran_at_unsteady_speeds(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    runs = [(BASE.replace(batch_size=b, seed=s), 90.0 + b / 16, 100.0 / b * 16 * (s + 1), 20.0 / (s + 1))
            for b in (16, 32) for s in (0, 1)]  # fmt: skip
    with Store(path) as store:
        store.register("s", "grid", [spec for spec, *_ in runs])
        for spec, accuracy, seconds, speed in runs:
            _finish(store, spec, torch_result(spec, accuracy, seconds, images_per_second=speed))
    report = report_of(path)
    batch = effect(report, "batch_size")
    assert (
        "times not compared (the machine was shared)" in batch.text and "trains" not in batch.text
    )
    (claim,) = [i for i in topic(report, "claim") if i.data["claim"] == "batch size"]
    assert "batch 32 trains" not in claim.text and "machine was shared" in claim.text
    assert any("not comparable" in i.text for i in topic(report, "caveat"))


def test_two_values_of_many_axes_are_compared_pair_by_pair(tmp_path: Path) -> None:
    report = report_of(store_of(tmp_path / "g.db", "grid", grid_runs()))
    optimizer, lr = effect(report, "optimizer"), effect(report, "lr")
    assert (
        optimizer.data["a"],
        optimizer.data["a_wins"],
        optimizer.data["b_wins"],
        optimizer.data["pairs"],
    ) == ("sgd", 2, 2, 4)  # the low B32 SGD lr 1e-4 cell is kept
    assert (lr.data["a"], lr.data["b"], lr.data["a_wins"], lr.data["b_wins"]) == (1e-4, 1e-3, 2, 2)


def test_seeds_matched_across_a_pair_give_a_paired_t_test(tmp_path: Path) -> None:
    noise = lambda seed, batch: {0: -0.5, 1: 0.0, 2: 0.7}[seed] * (1 if batch == 16 else 2)  # noqa: E731
    report = report_of(store_of(tmp_path / "g.db", "grid", grid_runs(seeds=(0, 1, 2), noise=noise)))
    batch = effect(report, "batch_size")
    pairs = [(acc16 + noise(s, 16), acc32 + noise(s, 32)) for (b, o, lr), acc16 in GRID.items() if b == 16
             for acc32 in [GRID[(32, o, lr)]] for s in (0, 1, 2)]  # fmt: skip
    expected = stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs]).pvalue
    assert batch.data["test"].startswith("paired t-test") and batch.data["p"] == pytest.approx(
        expected
    )


def test_seeds_that_do_not_match_give_welchs_test(tmp_path: Path) -> None:
    spec = BASE.replace(batch_size=16)
    runs = [(spec.replace(seed=0), 90.0, 10.0), (spec.replace(seed=1), 91.0, 10.0),
            (spec.replace(batch_size=32, seed=2), 88.0, 5.0), (spec.replace(batch_size=32, seed=3), 88.5, 5.0)]  # fmt: skip
    batch = effect(report_of(store_of(tmp_path / "w.db", "grid", runs)), "batch_size")
    assert batch.data["test"].startswith("Welch's t-test")
    assert batch.data["p"] == pytest.approx(
        stats.ttest_ind([90.0, 91.0], [88.0, 88.5], equal_var=False).pvalue
    )


def test_resnet18_against_resnet50_on_the_same_configs(tmp_path: Path) -> None:
    runs = [(BASE.replace(model=m, lr=lr), acc, secs) for m, secs in (("resnet18", 10.0), ("resnet50", 25.0))
            for lr, acc in ((1e-3, 90.0 if m == "resnet18" else 91.0), (1e-4, 89.0 if m == "resnet18" else 87.0))]  # fmt: skip
    (models,) = topic(report_of(store_of(tmp_path / "m.db", "grid", runs)), "models")
    assert (models.data["a_wins"], models.data["b_wins"], models.data["pairs"]) == (1, 1, 2)
    assert models.data["median_diff"] == pytest.approx(0.5) and models.data[
        "time_ratio"
    ] == pytest.approx(0.4)


def test_an_undertrained_model_pair_is_said_so_and_never_counted_as_a_win(tmp_path: Path) -> None:
    # 2 epochs × ceil(1,000 train images / 32) = 64 optimizer steps at lr 1e-4: ResNet-50 is
    # 41.4 points behind, which says how fast each learns in 64 updates, not which is better.
    runs = [
        (BASE.replace(model=m, lr=1e-4), acc, 10.0)
        for m, acc in (("resnet18", 80.0), ("resnet50", 38.6))
    ]
    (models,) = topic(report_of(store_of(tmp_path / "u.db", "grid", runs)), "models")
    assert models.text == (
        "grid: ResNet-50 reached 38.60% after 64 optimizer steps at lr 0.0001 (ResNet-18: 80.00%): "
        "undertrained, so this does not compare the architectures."
    )
    assert models.data == {"undertrained": 1} and len(models.runs) == 2
    report = report_of(store_of(tmp_path / "h.db", "grid", runs))
    (best,) = [i for i in report.headline if "runner-up ResNet-50" in i.text]
    assert "41.40 points lower (undertrained: 64 optimizer steps at lr 0.0001)" in best.text


def test_the_fair_pairs_are_compared_and_the_undertrained_one_left_out(tmp_path: Path) -> None:
    runs = [(BASE.replace(model=m, lr=lr), acc, secs)
            for m, secs in (("resnet18", 10.0), ("resnet50", 25.0))
            for lr, acc in ((1e-2, 90.0 if m == "resnet18" else 91.0), (1e-4, 80.0 if m == "resnet18" else 38.6))]  # fmt: skip
    (models,) = topic(report_of(store_of(tmp_path / "f.db", "grid", runs)), "models")
    assert (models.data["pairs"], models.data["a_wins"], models.data["undertrained"]) == (1, 0, 1)
    assert models.text == (
        "grid: ResNet-50 is more accurate than ResNet-18 in 1 of 1 lr pair (median +1.00 points) "
        "and trains 2.50× slower (median time ratio). Left out: ResNet-50 reached 38.60% after 64 "
        "optimizer steps at lr 0.0001 (ResNet-18: 80.00%): undertrained, so this does not compare "
        "the architectures."
    )


def test_the_published_claims_are_tested(tmp_path: Path) -> None:
    claims = {
        i.data["claim"]: i.data
        for i in topic(report_of(store_of(tmp_path / "g.db", "grid", grid_runs())), "claim")
    }
    # SGD is better at 1e-3 in 2 of 2 pairs (the low B32 lr 1e-4 cell is kept); Adam better
    # at 1e-4 in 2 of 2; batch 16 more accurate in 1 of 4 (beside that low cell); no GPU runs.
    assert (
        claims["optimizer"]["verdict"],
        claims["optimizer"]["agree"],
        claims["optimizer"]["of"],
    ) == ("supported", 4, 4)
    assert (
        claims["batch size"]["verdict"],
        claims["batch size"]["agree"],
        claims["batch size"]["of"],
    ) == ("contradicted", 1, 4)
    assert claims["GPU acceleration"]["verdict"] == "not testable here"


def test_the_gpu_claim_holds_when_the_larger_model_gains_more(tmp_path: Path) -> None:
    spec = BASE.replace(dataset="fashion-mnist")
    runs = [(spec.replace(model=m, device=d), 90.0, s) for m, d, s in
            (("resnet18", "cpu", 100.0), ("resnet18", "cuda", 10.0), ("resnet50", "cpu", 300.0), ("resnet50", "cuda", 10.0))]  # fmt: skip
    report = report_of(store_of(tmp_path / "d.db", "devices", runs))
    (speedup,) = topic(report, "speedup")
    assert speedup.data["speedups"] == pytest.approx({"resnet18": 10.0, "resnet50": 30.0})
    claim = next(i.data for i in topic(report, "claim") if i.data["claim"] == "GPU acceleration")
    assert (claim["verdict"], claim["agree"], claim["of"]) == ("supported", 3, 3)


def test_outliers_match_a_look_at_every_pair(tmp_path: Path) -> None:
    """The sorted/merged neighbour search finds what comparing every pair of configs finds."""
    rng = random.Random(1)
    axes = {
        "C": [0.01, 0.1, 1.0, 10.0],
        "gamma": [0.001, 0.01, 0.1],
        "kernel": ["rbf", "poly", "linear"],
    }
    rows = [dict(zip(axes, values, strict=True)) | {"acc": rng.choice([20.0, 60.0, 90.0, 95.0])}
            for values in itertools.product(*axes.values())]  # fmt: skip
    configs = pd.DataFrame(rows)
    found = low_outliers(configs, list(axes))
    expected = {}
    for i, row in configs.iterrows():
        drops = []
        for axis, values in axes.items():
            same = (
                configs[[a for a in axes if a != axis]]
                .eq(row[[a for a in axes if a != axis]])
                .all(axis=1)
            )
            others = configs[same & configs[axis].ne(row[axis])]
            if axis != "kernel":  # numeric: the next value either side
                at = values.index(row[axis])
                others = others[others[axis].isin(values[max(at - 1, 0) : at + 2])]
            if len(others):
                drops.append(others["acc"].median() - row["acc"])
        if drops and min(drops) > 10:
            expected[i] = min(drops)
    assert found.to_dict() == pytest.approx(expected) and expected


SVM = RunSpec(
    dataset="mnist", model="svm", kernel="rbf", svm_backend="sklearn", threads=1, train_limit=200
)


def sweep(tmp_path: Path, cs: list[float], gammas: list[float], accuracy=None) -> Path:
    """An rbf SVM sweep; by default C ≤ 0.03 did not learn (11 %) and the rest reach ~95 %."""
    accuracy = accuracy or (lambda c, g: 11.0 if c <= 0.03 else 95.0 - abs(g - 0.01))
    runs = [(SVM.replace(C=c, gamma=g), accuracy(c, g), 0.1) for c in cs for g in gammas]
    return store_of(tmp_path / "sweep.db", "sweep", runs)


def test_a_sweep_summarises_near_chance_configs_as_a_region_and_draws_a_heatmap(
    tmp_path: Path,
) -> None:
    cs, gammas = (
        [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
        [0.0001, 0.001, 0.01, 0.1, 1.0],
    )
    path = sweep(tmp_path, cs, gammas)
    report = report_of(path)
    (chance,) = [i for i in topic(report, "outlier") if "region" in i.data]
    assert chance.data == {"configs": 20, "region": "C ≤ 0.03", "inside": 20}
    assert len(topic(report, "outlier")) == 1  # the border of the region is no outlier
    (c_effect,) = [i for i in topic(report, "effect") if i.data["factor"] == "C"]
    assert c_effect.data["contexts"] == len(gammas)
    with Store(path) as store:
        plots = build_report(store, "s").sections[0].plots
    assert [p.slug for p in plots] == ["sweep-heatmap"]  # every fit took 0.1 s: no time axis
    assert geometric(np.array(cs[::2])) and not geometric(np.array([1.0, 2.0, 3.0, 4.0]))


def test_configs_along_the_ends_of_two_axes_are_described_by_thresholds(tmp_path: Path) -> None:
    cs, gammas = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0], [0.0001, 0.001, 0.01, 0.1, 1.0]
    learnt = lambda c, g: 11.0 if c <= 0.01 or g >= 1.0 else 95.0  # noqa: E731
    (chance,) = topic(report_of(sweep(tmp_path, cs, gammas, learnt)), "outlier")
    assert chance.data["configs"] == 2 * 5 + 4  # an L: no box holds them alone
    assert set(chance.data["region"].split("; ")) == {"C ≤ 0.01 (10 of 10)", "gamma ≥ 1 (6 of 6)"}
    assert len(chance.runs) == 14


def test_few_findings_are_named_with_every_axis_that_varies(tmp_path: Path) -> None:
    report = report_of(sweep(tmp_path, [0.01, 0.1, 1.0, 10.0], [0.001, 0.1]))
    texts = [i.text for i in topic(report, "outlier")]
    assert len(texts) == 2 and all("C 0.01" in t for t in texts)
    assert {"gamma 0.001", "gamma 0.1"} == {t.split(", ")[3].split(" (")[0] for t in texts}


def test_region_is_the_box_the_flagged_configs_lie_in() -> None:
    grid = pd.DataFrame(
        [
            {"C": c, "gamma": g, "kernel": k}
            for c in (1, 2, 3, 4)
            for g in (1, 2, 3)
            for k in ("rbf", "poly")
        ]
    )
    flagged = grid[(grid["C"] <= 2) & (grid["gamma"] >= 2) & grid["kernel"].eq("rbf")]
    assert region(flagged, grid, ["C", "gamma", "kernel"]) == (
        "C ≤ 2 and gamma ≥ 2 and kernel rbf",
        4,
    )


def test_a_table_of_runs_from_two_machines_says_so(tmp_path: Path) -> None:
    path = store_of(tmp_path / "two.db", "grid", grid_runs()[:2])
    with Store(path) as store:  # a third run, from another machine
        spec = BASE.replace(lr=0.5)
        store.register("s", "grid", [spec])
        result = torch_result(spec, 80.0, 5.0)
        result.environment |= {"cpu": "Other CPU", "hostname": "elsewhere"}
        _finish(store, spec, result)
        report = build_report(store, "s", plots=False)
    machine = next(n for n in report.sections[0].table.notes if "achine" in n)
    assert (
        machine.startswith("Mixed machines in this table:")
        and "Other CPU" in machine
        and "(1 runs)" in machine
    )
    assert ("CPU", "Test CPU 9000 (2 runs), Other CPU (1 runs)") in report.environment


def test_load_runs_is_one_row_per_run_with_spec_result_and_environment(tmp_path: Path) -> None:
    with Store(store_of(tmp_path / "g.db", "grid", grid_runs())) as store:
        runs = load_runs(store, "s")
    assert len(runs) == len(GRID) and runs["key"].is_unique
    assert {
        "batch_size",
        "test_accuracy",
        "model_path",
        "train_images",
        "env_cpu",
        "state",
        "config",
    } <= set(runs)
    assert runs["config"].nunique() == len(GRID)  # the seed is not part of a config
    assert Experiment("grid", "grid", runs).axes == ["batch_size", "optimizer", "lr"]


def test_scattered_failures_over_an_axis_only_one_kernel_has_are_summarised(tmp_path: Path) -> None:
    # degree exists for poly only: within the rbf subset that axis has no values at all.
    cs = [0.01, 0.1, 1.0, 10.0, 100.0]
    poly = [(SVM.replace(kernel="poly", C=c, degree=d), c, d) for c in cs for d in (2, 3, 4, 5)]
    rbf = [(SVM.replace(kernel="rbf", C=c, gamma=g), c, g) for c in cs for g in (0.01, 0.1, 1.0)]
    runs = [
        (spec, 11.0 if (cs.index(c) + int(other * 100)) % 3 == 0 else 95.0, 0.1)
        for spec, c, other in poly + rbf
    ]
    report = report_of(store_of(tmp_path / "mixed.db", "sweep", runs))
    flagged = {spec.key() for spec, accuracy, _ in runs if accuracy == 11.0}
    summaries = [i for i in topic(report, "outlier") if "region" in i.data]
    assert len(flagged) > 3 and any(set(i.runs) == flagged for i in summaries)  # near chance

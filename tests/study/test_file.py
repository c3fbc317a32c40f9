import re

import pytest

from mnistbench.study.file import StudyFileError, load_study


def _write(tmp_path, text: str):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


GOOD = """
[study]
name = "s"
seeds = [0, 1]

[defaults]
epochs = 1

[experiments.grid]
base = { dataset = "mnist", model = "resnet18" }
grid = { batch_size = [16, 32], optimizer = ["sgd", "adam"] }
extra = [ { batch_size = 64, optimizer = "adamw" } ]

[experiments.svm]
base = { model = "svm" }
seeds = [5]
grid = { kernel = ["poly", "rbf"] }
resources = { num_cpus = 2 }
"""


def test_grid_times_seeds_plus_extras(tmp_path):
    study = load_study(_write(tmp_path, GOOD))
    grid = study.experiment("grid").specs()
    assert len(grid) == (2 * 2 + 1) * 2
    assert {(s.batch_size, s.optimizer, s.seed) for s in grid} >= {(16, "sgd", 0), (64, "adamw", 1)}
    assert all(s.epochs == 1 for s in grid), "defaults apply to every experiment"
    svm = study.experiment("svm").specs()
    assert [s.kernel for s in svm] == ["poly", "rbf"] and {s.seed for s in svm} == {5}
    assert study.experiment("svm").resources == {"num_cpus": 2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD.replace("grid = { batch_size", "gird = { batch_size"),
            "experiment 'grid': unknown key 'gird'",
        ),
        (
            GOOD.replace('model = "resnet18"', 'modle = "resnet18"'),
            "experiment 'grid': base: unknown key 'modle'",
        ),
        (
            GOOD.replace('kernel = ["poly", "rbf"]', 'kernel = ["poly", "cubic"]'),
            "experiment 'svm': kernel='cubic'",
        ),
        (GOOD.replace("epochs = 1", "epochz = 1"), "[defaults]: unknown key 'epochz'"),
        (  # does nothing with the memory loader (the default): an error that says what to write
            GOOD.replace("epochs = 1", "epochs = 1\npin_memory = true"),
            "experiment 'grid': pin_memory=True is invalid: pin_memory needs loader = "
            "'dataloader', and loader is 'memory'",
        ),
        (
            GOOD.replace('model = "resnet18"', 'model = "resnet18", num_workers = 2'),
            "write loader = 'dataloader' (--loader dataloader) to use it, or leave num_workers out",
        ),
        (GOOD.replace("num_cpus = 2", "cpus = 2"), "resources: unknown key 'cpus'"),
        (
            GOOD.replace("batch_size = [16, 32]", "batch_size = []"),
            "grid.batch_size must be a non-empty list",
        ),
        ("[experiments.x\n", "not valid TOML"),
    ],
)
def test_errors_name_file_experiment_and_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(StudyFileError) as caught:
        load_study(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_unknown_experiment_lists_the_known(tmp_path):
    study = load_study(_write(tmp_path, GOOD))
    with pytest.raises(StudyFileError, match="no experiment 'nope'; it has: grid, svm"):
        study.select(["nope"])


@pytest.mark.parametrize("name", ["assignment", "native", "quick"])
def test_shipped_study_files_load(name):
    study = load_study(f"configs/{name}.toml")
    names = [e.name for e in study.experiments]
    assert names == ["q1a_mnist", "q1a_fashion", "q1b_svm", "q2_devices"]
    specs = [s for e in study.experiments for s in e.specs()]
    assert {s.device for s in study.experiment("q2_devices").specs()} == {"cpu", "cuda"}
    if name == "assignment":
        resnets = [s for s in specs if not s.is_svm]
        assert all((s.image_size, s.channels, s.split) == (224, 3, "assignment") for s in resnets)
        q2 = study.experiment("q2_devices").specs()
        assert all(s.loader == "dataloader" for s in q2)  # the published loader on both devices
        assert all(s.amp == "cuda" for s in resnets)  # precision: the test below
        mnist = study.experiment("q1a_mnist").specs()
        assert len(mnist) == 16 and all(s.epochs == 5 and s.loader == "memory" for s in mnist)
        fashion = study.experiment("q1a_fashion").specs()
        assert all(s.epochs == 10 and not s.pin_memory for s in fashion)
        assert all(s.epochs == 2 for s in study.experiment("q2_devices").specs())
        for grid in ("q1a_mnist", "q1a_fashion"):  # small-batch runs share a GPU, four at a time
            assert study.experiment(grid).resources["num_gpus"] == 0.25


@pytest.mark.filterwarnings("ignore:.*GradScaler is enabled, but CUDA is not available")
def test_assignment_trains_fp32_on_a_cpu_and_fp16_with_grad_scaler_on_cuda():
    """AMP on CUDA only, as published, on whichever device a run trains (its own, or another
    given by `--set device=...`)."""
    import torch

    from mnistbench.engines.torch.recipe import make_precision

    study = load_study("configs/assignment.toml")
    resnets = [s for e in study.experiments for s in e.specs() if not s.is_svm]
    checked = {"cpu": 0, "cuda": 0}
    for spec in resnets:
        for device in ("cpu", "cuda"):  # torch.device("cuda") needs no GPU: nothing is allocated
            precision = make_precision(spec.amp, torch.device(device))
            checked[device] += 1
            if device == "cpu":
                assert (precision.label, precision.autocast_dtype, precision.scaler) == (
                    "fp32",
                    None,
                    None,
                ), spec.label()
            else:
                assert precision.label == "fp16" and precision.autocast_dtype == torch.float16
                assert isinstance(precision.scaler, torch.amp.GradScaler), spec.label()
    # The 32 Q1(a) runs and Q2's four rows, each on either device.
    assert checked == {"cpu": 36, "cuda": 36}
    assert {s.device for s in resnets} == {"cpu", "cuda"}  # Q1(a) asks for the GPU it ran on


@pytest.mark.parametrize("name", ["assignment", "native"])
def test_study_files_run_exactly_the_published_cells(name):
    """Q1(a)'s 32 cells with their epochs, the four SVMs at C=10, Q2's four rows at 2 epochs:
    the same keys as mnistbench.published (the README's tables)."""
    from mnistbench import published

    study = load_study(f"configs/{name}.toml")
    for experiment, dataset in (("q1a_mnist", "mnist"), ("q1a_fashion", "fashion-mnist")):
        specs = study.experiment(experiment).specs()
        cells = {(s.dataset, s.model, s.batch_size, s.optimizer, s.lr) for s in specs}
        assert cells == {key for key in published.GRID if key.dataset == dataset}
        assert {s.epochs for s in specs} == {published.Q1A_EPOCHS[dataset]}
        # Both on the memory loader: the published DataLoader's batches without a host copy per
        # step, gathered inside the captured step on a GPU; nothing for pin_memory to pin.
        assert {(s.loader, s.pin_memory) for s in specs} == {("memory", False)}
    svms = study.experiment("q1b_svm").specs()
    assert {(s.dataset, s.kernel) for s in svms} == set(published.SVM)
    assert {(s.C, s.gamma, s.degree) for s in svms} == {(published.SVM_C, "scale", 3)}
    q2 = study.experiment("q2_devices").specs()
    assert {(s.model, s.device) for s in q2} == set(published.Q2)
    assert {(s.dataset, s.epochs) for s in q2} == {("fashion-mnist", published.Q2_EPOCHS)}
    resnets = [s for e in study.experiments for s in e.specs() if not s.is_svm]
    assert {(s.weight_decay, s.momentum, s.lr_schedule) for s in resnets} == {(5e-4, 0.9, "none")}


def test_speedrun_presets_are_resnet18_at_native_size_with_three_seeds():
    study = load_study("configs/speedrun.toml")
    for experiment in study.experiments:
        specs = experiment.specs()
        assert sorted(s.seed for s in specs) == [0, 1, 2]
        assert all((s.model, s.image_size, s.split) == ("resnet18", 28, "official") for s in specs)
    assert {e.name for e in study.experiments} == {"mnist", "fashion"}


def test_budget_study_keeps_the_published_best_configs_budget():
    study = load_study("configs/budget.toml")
    (mnist,) = study.experiment("resnet18_mnist").specs()
    (fashion,) = study.experiment("resnet50_fashion").specs()
    published = [(s.model, s.epochs, s.batch_size, s.optimizer, s.lr) for s in (mnist, fashion)]
    assert published == [("resnet18", 5, 16, "sgd", 1e-3), ("resnet50", 10, 16, "adam", 1e-4)]
    assert all(s.lr_schedule == "onecycle" and s.augment == "translate" for s in (mnist, fashion))


def test_set_overrides_every_run_and_so_its_key(tmp_path):
    from mnistbench.study.file import parse_overrides

    study = load_study(_write(tmp_path, GOOD))
    overrides = parse_overrides(["epochs=3", "lr=1e-3", "device=cuda", 'features="pca:50"'])
    assert overrides == {"epochs": 3, "lr": 0.001, "device": "cuda", "features": "pca:50"}
    assert parse_overrides(["features=pca:50", "augment=none"])["features"] == "pca:50"
    variant = study.with_overrides({"epochs": 3, "batch_size": 8})
    before, after = study.experiment("grid").specs(), variant.experiment("grid").specs()
    assert all((s.epochs, s.batch_size) == (3, 8) for s in after)
    assert len(after) == 3 * 2, "grid points that become one run are one run (x 2 seeds)"
    assert not {s.key() for s in after} & {s.key() for s in before}, "a variant is another run"
    only = study.with_overrides({"epochs": 3}, only=["grid"])
    assert only.experiment("svm") == study.experiment("svm") and only.overrides == {"epochs": 3}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["epochz=3"], "--set epochz=3: unknown key 'epochz'"),
        (["epochs=0"], "--set, experiment 'grid': epochs=0 is invalid"),
        (["device=tpu"], "device='tpu' is invalid"),
        (["epochs"], "--set 'epochs': expected KEY=VALUE"),
    ],
)
def test_set_errors_name_the_key_and_the_value(tmp_path, items, message):
    from mnistbench.study.file import parse_overrides

    study = load_study(_write(tmp_path, GOOD))
    with pytest.raises(StudyFileError, match=re.escape(message)):
        study.with_overrides(parse_overrides(items))


def test_keep_models_must_be_a_known_policy(tmp_path):
    assert load_study(_write(tmp_path, GOOD)).keep_models == "best"
    bad = GOOD.replace('name = "s"', 'name = "s"\nkeep_models = "some"')
    with pytest.raises(StudyFileError, match=r"keep_models='some': choose best, all, none"):
        load_study(_write(tmp_path, bad))

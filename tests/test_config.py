import dataclasses

import pytest

from mnistbench.config import RunSpec, fields_of
from mnistbench.result import EpochRecord, RunResult
from mnistbench.specfields import SpecError, field_role, spec_field

TORCH_FIELDS, SVM_FIELDS = fields_of("torch"), fields_of("svm")


def test_defaults_are_a_fast_recipe_and_the_study_files_pin_the_published_protocol():
    spec = RunSpec()
    assert (spec.optimizer, spec.lr_schedule, spec.weight_decay) == ("adamw", "onecycle", 5e-4)
    from mnistbench.study.file import load_study

    for name in ("assignment", "native", "quick"):
        for experiment in load_study(f"configs/{name}.toml").experiments:
            for run in experiment.specs():
                assert run.is_svm or (
                    run.optimizer in ("sgd", "adam") and run.lr_schedule == "none"
                )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"image_size": 300}, "image_size"),
        ({"channels": 2}, "channels"),
        ({"device": "tpu"}, "device"),
        ({"dataset": "cifar"}, "dataset"),
        ({"model": "svm", "kernel": "sigmoid"}, "kernel"),
        ({"model": "svm", "gamma": "big"}, "gamma"),
        ({"model": "svm", "features": "pca:x"}, "features"),
        ({"loader": "memory", "num_workers": 2}, "num_workers"),
        ({"memory_format": "nhwc"}, "memory_format"),
        ({"split": "assignment", "val_fraction": 0.1}, "val_fraction"),
    ],
)
def test_bad_values_name_the_field_and_the_value(changes, field):
    with pytest.raises(SpecError) as caught:
        RunSpec(**changes)
    assert caught.value.field_name == field
    assert repr(changes[field]) in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"pin_memory": True}, "pin_memory"),
        ({"num_workers": 2}, "num_workers"),
        ({"loader": "memory", "pin_memory": True, "num_workers": 0}, "pin_memory"),
    ],
)
def test_dataloader_settings_with_the_memory_loader_say_what_to_write(changes, field):
    """They would do nothing there: an error naming both fields and the fix, not a silent no-op."""
    with pytest.raises(SpecError) as caught:
        RunSpec(**changes)
    message = str(caught.value)
    assert caught.value.field_name == field
    assert field in message and "loader is 'memory'" in message
    assert "write loader = 'dataloader'" in message and f"leave {field} out" in message
    fixed = {**changes, "loader": "dataloader"}
    assert getattr(RunSpec(**fixed), field) == changes[field]


def test_amp_is_on_off_or_cuda_only_and_old_keys_stay() -> None:
    assert {RunSpec(amp=amp).amp for amp in (True, False, "cuda")} == {True, False, "cuda"}
    for bad in ("cpu", "yes", 1, None):
        with pytest.raises(SpecError) as caught:
            RunSpec(amp=bad)
        assert caught.value.field_name == "amp" and "'cuda'" in str(caught.value)
    # amp = true keeps the key it had before "cuda" existed (commit 9e4f06e); "cuda" is new.
    assert RunSpec(amp=True, batch_size=64, lr=2e-3).key() == "24090f96039a07e2"  # then defaults
    assert RunSpec(amp="cuda").key() not in (RunSpec(amp=True).key(), RunSpec().key())
    assert RunSpec(model="svm", amp="cuda").key() == RunSpec(model="svm").key()


def test_dataset_alias_is_stored_canonical():
    assert RunSpec(dataset="Fashion").dataset == "fashion-mnist"


def test_canonical_drops_what_the_engine_ignores():
    adam = RunSpec(optimizer="adam")
    assert "momentum" not in adam.canonical() and "kernel" not in adam.canonical()
    assert adam.key() == RunSpec(optimizer="adam", momentum=0.5, kernel="poly").key()
    assert adam.key() != RunSpec(optimizer="adam", lr=1e-4).key()
    svm = RunSpec(model="svm", kernel="rbf")
    assert "lr" not in svm.canonical() and "degree" not in svm.canonical()
    assert svm.key() == RunSpec(model="svm", kernel="rbf", lr=0.5, degree=5).key()
    assert RunSpec(threads=1).key() == RunSpec(threads=2).key()
    # The activation layout changes speed only: a study may switch it without re-running.
    assert RunSpec(memory_format="channels_last").key() == RunSpec().key()


@pytest.mark.parametrize("bad", [0, -5, 2.5, "64", True])
def test_limits_must_be_positive_integers(bad: object) -> None:
    for name in ("train_limit", "val_limit", "test_limit"):
        with pytest.raises(SpecError) as caught:
            RunSpec(split="assignment", **{name: bad})
        assert caught.value.field_name == name and repr(bad) in str(caught.value)


def test_val_limit_is_in_the_key_only_when_set_on_a_split_with_validation() -> None:
    """Added after KEY_VERSION 1: unset, every earlier key stays; where there is no validation
    part (official split, no val_fraction), it changes nothing and is left out."""
    assignment = RunSpec(split="assignment", train_limit=64)
    assert "val_limit" not in assignment.canonical()
    limited = assignment.replace(val_limit=64)
    assert limited.canonical()["val_limit"] == 64 and limited.key() != assignment.key()
    assert limited.key() != assignment.replace(val_limit=65).key()
    held_out = RunSpec(val_fraction=0.1)
    assert held_out.replace(val_limit=64).key() != held_out.key()
    assert RunSpec(val_limit=64).key() == RunSpec().key()  # official 60k/10k: no val to limit
    assert RunSpec(model="svm", split="assignment", val_limit=8).canonical()["val_limit"] == 8


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(SpecError, match="learning_rate"):
        RunSpec.from_dict({"learning_rate": 0.1})
    assert RunSpec.from_dict(RunSpec(lr=0.5).to_dict()) == RunSpec(lr=0.5)


def test_result_round_trips_through_json():
    history = [EpochRecord(1, train_loss=0.5, eval_split="val", eval_accuracy=97.0)]
    result = RunResult(spec=RunSpec().to_dict(), test_accuracy=99.1, history=history)
    assert RunResult.from_dict(result.to_dict()) == result


# --- run identity -------------------------------------------------------------------------------

# Keys of runs in tests/fixtures/store_v1.db, written by the code of commit d866159. A change here
# re-runs every run of every existing store: make it only on purpose, with KEY_VERSION.
PINNED_KEYS = {
    "0c422bf192ffb42a": dict(
        model="resnet18", epochs=2, batch_size=32, optimizer="sgd", lr=0.05,
        lr_schedule="none", seed=0, train_limit=200, test_limit=50,
    ),
    "efab535c16f3a436": dict(
        model="resnet18", epochs=1, batch_size=32, optimizer="adam", lr=1e-3,
        lr_schedule="none", val_fraction=0.2, train_limit=200, test_limit=50,
    ),
    "cf04edfd161c81db": dict(
        model="svm", kernel="poly", C=10.0, svm_backend="sklearn", train_limit=200, test_limit=50
    ),
}  # fmt: skip


@pytest.mark.parametrize("key", PINNED_KEYS)
def test_key_is_pinned(key: str) -> None:
    assert RunSpec(**PINNED_KEYS[key], threads=3).key() == key


def test_every_field_declares_its_engine_and_identity() -> None:
    for declared in dataclasses.fields(RunSpec):
        role = field_role(declared)  # KeyError for a field declared without spec_field()
        assert role.engine in ("run", "torch", "svm"), declared.name
        assert role.identity in ("always", "non-default", "never"), declared.name
    assert "lr" in TORCH_FIELDS and "kernel" in SVM_FIELDS and "seed" not in TORCH_FIELDS


def test_fields_of_the_other_engine_never_change_a_key() -> None:
    defaults = RunSpec()
    other_values = {"lr": 0.5, "kernel": "poly", "C": 1.0, "batch_size": 7, "amp": True}
    for name, value in other_values.items():
        role = field_role(next(f for f in dataclasses.fields(RunSpec) if f.name == name))
        torch_spec, svm_spec = defaults.replace(**{name: value}), RunSpec(model="svm")
        svm_changed = svm_spec.replace(**{name: value})
        if role.engine == "torch":
            assert svm_changed.key() == svm_spec.key() and torch_spec.key() != defaults.key()
        else:
            assert torch_spec.key() == defaults.key() and svm_changed.key() != svm_spec.key()


@dataclasses.dataclass(frozen=True)
class _SpecWithNewField(RunSpec):
    """RunSpec as it would be after a field is added the way config.py says to add one."""

    dropout: float = spec_field(0.0, engine="torch", identity="non-default")


def test_a_new_defaulted_field_keeps_every_existing_key() -> None:
    for key, values in PINNED_KEYS.items():
        assert _SpecWithNewField(**values).key() == key
    changed = _SpecWithNewField(**PINNED_KEYS["0c422bf192ffb42a"], dropout=0.1)
    assert changed.key() != "0c422bf192ffb42a"
    assert _SpecWithNewField(model="svm", dropout=0.1).key() == RunSpec(model="svm").key()


def test_from_stored_never_raises() -> None:
    stored = {**RunSpec(lr=0.5).to_dict(), "dropout": 0.1, "optimizer": "lion"}
    del stored["augment"]  # a field this version has and the writer did not
    spec, unknown = RunSpec.from_stored(stored)
    assert unknown == {"dropout": 0.1}
    assert (spec.lr, spec.optimizer, spec.augment) == (0.5, "lion", "none")
    assert RunSpec.from_stored(RunSpec(lr=0.5).to_dict()) == (RunSpec(lr=0.5), {})


@pytest.mark.parametrize("name", ["device", "dataset", "features", "optimizer"])
def test_a_number_where_a_name_belongs_is_a_spec_error(name: str) -> None:
    with pytest.raises(SpecError, match=f"{name}=3 is invalid: must be a string"):
        RunSpec(**{name: 3})


def test_a_whole_number_for_a_float_field_is_the_same_run() -> None:
    assert RunSpec(lr=1, C=10, momentum=0).key() == RunSpec(lr=1.0, C=10.0, momentum=0.0).key()
    assert RunSpec(model="svm", gamma=2).gamma == 2.0 and RunSpec(lr=1).lr == 1.0


def test_a_stored_run_of_a_model_no_engine_here_knows_is_read_not_a_crash() -> None:
    """A newer version's run, or one of an engine not installed: its identity is the fields
    every engine reads, and its key and label still come out."""
    spec, unknown = RunSpec.from_stored({"model": "logreg", "dataset": "mnist", "seed": 2})
    assert not unknown and spec.engine() == "unknown"
    always = {f.name for f in dataclasses.fields(RunSpec) if field_role(f).identity == "always"}
    assert spec.canonical() == {
        name: getattr(spec, name) for name in fields_of("run") if name in always
    }
    assert len(spec.key()) == 16 and spec.label() == "logreg mnist seed=2"
    with pytest.raises(SpecError, match="model='logreg' is invalid"):
        RunSpec(model="logreg")

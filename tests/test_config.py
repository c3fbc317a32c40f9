import pytest

from mnistbench.config import RunResult, RunSpec, SpecError


def test_defaults_are_a_fast_recipe_and_the_study_files_pin_the_published_protocol():
    spec = RunSpec()
    assert (spec.optimizer, spec.lr_schedule, spec.weight_decay) == ("adamw", "onecycle", 5e-4)
    from mnistbench.studyfile import load_study

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


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(SpecError, match="learning_rate"):
        RunSpec.from_dict({"learning_rate": 0.1})
    assert RunSpec.from_dict(RunSpec(lr=0.5).to_dict()) == RunSpec(lr=0.5)


def test_result_round_trips_through_json():
    result = RunResult(spec=RunSpec().to_dict(), test_accuracy=99.1, history=[{"epoch": 1}])
    assert RunResult.from_dict(result.to_dict()) == result

"""Model files: what a finished run saves (spec, preprocessing, classes, weights), read back with
weights_only=True or skops, so that loading never runs code; first-format files still load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistbench.data.registry import FASHION_MNIST, MNIST
from mnistbench.engines.modelfile import FORMAT_VERSION, ModelFileError
from mnistbench.engines.svm.backends import svm_backend_problem
from mnistbench.engines.svm.saved import as_sklearn_svc, read_svm_file
from mnistbench.engines.torch.checkpoint import load_checkpoint
from mnistbench.engines.torch.saved import legacy_preprocess, read_torch_file
from mnistbench.use.saved import load_model
from tests.saved_models import synthetic_root, train


class Exploit:
    """A pickled object whose loading would run code: it would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modelfile")
    _, data = synthetic_root(folder / "data")
    spec, result = train(data, folder / "models")
    return data, spec, result


def test_a_resnet_file_holds_spec_preprocessing_and_classes_in_plain_data(trained) -> None:
    data, spec, result = trained
    state = torch.load(result.model_path, weights_only=True)  # nothing but tensors and data
    assert state["version"] == FORMAT_VERSION and state["engine"] == "torch"
    assert state["spec"] == spec.to_dict() and state["key"] == spec.key()
    assert state["classes"] == list(MNIST.classes)
    preprocess = state["preprocess"]
    assert preprocess["image_size"] == 28 and preprocess["channels"] == 1
    assert preprocess["memory_format"] == "contiguous"
    train_pixels = data.train_images.double() / 255  # the limit keeps 128 of them: close
    assert preprocess["mean"] == pytest.approx(float(train_pixels.mean()), abs=0.02)


def test_the_file_alone_predicts_as_the_run_did(trained) -> None:
    data, _, result = trained
    model = load_model(Path(result.model_path))  # no dataset given: none needed
    assert not model.legacy and model.classes == MNIST.classes
    weights = torch.load(result.model_path, weights_only=True)["model"]
    for name, value in model.module.state_dict().items():  # the trained weights, not new ones
        assert torch.equal(value, weights[name]), name
    # Its predictions on the run's test split (all 100 test images here) make the very
    # confusion matrix the run recorded.
    predicted = torch.as_tensor(model.predict(data.test_images))
    confusion = torch.bincount(data.test_labels * 10 + predicted, minlength=100).view(10, 10)
    assert confusion.tolist() == result.confusion_matrix


def test_a_first_format_file_loads_with_the_preprocessing_its_run_used(trained, tmp_path) -> None:
    data, spec, result = trained
    state = torch.load(result.model_path, weights_only=True)
    old = tmp_path / "old.model.pt"
    torch.save({"spec": state["spec"], "model": state["model"]}, old)  # the format before 2
    with pytest.raises(ModelFileError, match="without its preprocessing"):
        load_model(old)
    model = load_model(old, lambda name: data)
    new = load_model(Path(result.model_path))
    assert model.legacy and model.preprocess == new.preprocess
    np.testing.assert_array_equal(model.scores(data.test_images), new.scores(data.test_images))
    assert legacy_preprocess(spec, data) == new.preprocess


def test_a_model_file_that_would_run_code_is_refused_and_never_run(tmp_path) -> None:
    marker, path = tmp_path / "ran", tmp_path / "evil.model.pt"
    torch.save({"spec": {}, "model": {}, "payload": Exploit(marker)}, path)
    with pytest.raises(ModelFileError, match=r"can load safely .*Unsupported global"):
        read_torch_file(path)
    assert not marker.exists()


def test_an_epoch_checkpoint_that_would_run_code_is_ignored_and_never_run(tmp_path) -> None:
    from mnistbench.config import RunSpec

    marker, path = tmp_path / "ran", tmp_path / "run.ckpt.pt"
    torch.save({"version": 1, "payload": Exploit(marker)}, path)
    said: list[str] = []
    assert load_checkpoint(path, RunSpec(), said.append) is None
    assert not marker.exists() and "more than weights and plain data" in said[0]


def test_missing_and_foreign_files_are_named(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="no such model file"):
        read_torch_file(tmp_path / "gone.model.pt")
    (tmp_path / "text.model.pt").write_text("hello")
    with pytest.raises(ModelFileError, match=r"text\.model\.pt"):
        read_torch_file(tmp_path / "text.model.pt")
    (tmp_path / "text.model.skops").write_text("hello")
    with pytest.raises(ModelFileError, match="not a skops file"):
        read_svm_file(tmp_path / "text.model.skops")


@pytest.mark.parametrize("features", ["pixels", "pca:20"])
def test_an_svm_is_saved_with_skops_and_predicts_as_fitted(trained, tmp_path, features) -> None:
    data = dataclasses.replace(trained[0], info=FASHION_MNIST)  # class names follow the data
    _, result = train(data, tmp_path, model="svm", dataset="fashion-mnist", features=features)
    assert result.model_path.endswith(".model.skops")
    model = load_model(Path(result.model_path))
    assert model.engine == "svm" and model.classes == FASHION_MNIST.classes
    assert (model.transform is None) == (features == "pixels")
    predicted = model.predict(data.test_images)
    accuracy = 100.0 * float(np.mean(predicted == data.test_labels.numpy()))
    assert accuracy == result.test_accuracy


def test_an_skops_file_with_a_foreign_type_is_refused(tmp_path) -> None:
    import skops.io as sio

    path = tmp_path / "odd.model.skops"
    sio.dump({"format": "mnistbench-model", "estimator": Exploit(tmp_path / "ran")}, path)
    with pytest.raises(ModelFileError, match="refusing to load types"):
        read_svm_file(path)
    assert not (tmp_path / "ran").exists()


@pytest.mark.skipif(svm_backend_problem("sklearnex") is not None, reason="no sklearnex here")
def test_an_accelerated_svc_is_saved_as_sklearns_with_the_same_decisions() -> None:
    from sklearn.svm import SVC
    from sklearnex.svm import SVC as FastSVC

    rng = np.random.default_rng(0)
    x, y = rng.random((300, 50)), np.arange(300) % 10
    test = rng.random((200, 50))
    for kernel in ("rbf", "poly"):
        fast = FastSVC(kernel=kernel, C=10).fit(x, y)
        plain = as_sklearn_svc(fast)
        assert type(plain) is SVC
        np.testing.assert_array_equal(plain.predict(test), fast.predict(test))
        np.testing.assert_allclose(
            plain.decision_function(test), fast.decision_function(test), atol=1e-9
        )


def test_without_skops_an_svm_trains_and_says_its_model_is_not_saved(monkeypatch, tmp_path):
    import sys

    from sklearn.svm import SVC

    from mnistbench.config import RunSpec
    from mnistbench.engines.svm.train import keep_model
    from mnistbench.errors import MissingExtraError, require

    monkeypatch.setitem(sys.modules, "skops.io", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'mnistbench\[models\]'"):
        require("skops.io")
    said: list[str] = []

    class Log:
        log = staticmethod(said.append)

    fitted = SVC().fit(np.eye(4), [0, 1, 0, 1])
    spec = RunSpec(model="svm")
    assert keep_model(tmp_path, spec, fitted, None, Log()) is None
    assert "not saved" in said[0] and "mnistbench[models]" in said[0]
    assert list(tmp_path.iterdir()) == []


def test_a_model_file_renamed_by_hand_is_read_by_its_extension(tmp_path: Path) -> None:
    from mnistbench.engines import engine_for_file

    assert engine_for_file(tmp_path / "best.pt").model_suffix == ".model.pt"
    assert engine_for_file(tmp_path / "svm.skops").model_suffix == ".model.skops"
    with pytest.raises(ModelFileError, match="not a model file"):
        engine_for_file(tmp_path / "notes.txt")

"""Confusion matrices per question (issue 24): per dataset the best ResNet's and the best
SVM's, whichever is best overall, each titled with its dataset, model and settings."""

from __future__ import annotations

from pathlib import Path

from mnistbench.config import RunSpec
from mnistbench.report import build_report
from mnistbench.result import RunResult
from mnistbench.study.store import Store
from tests.report.test_report import CPU, _confusion, _environment, _finish, torch_result

COMMON = {"split": "official", "train_limit": 1000, "test_limit": 100, "threads": 2}


def _store(path: Path) -> Path:
    """MNIST: two ResNets (best 97.5 %) below an SVM (99.1 %); FashionMNIST: a ResNet only."""
    resnets = [
        (RunSpec(dataset=d, model="resnet18", batch_size=16, optimizer=o, lr=1e-3, epochs=2,
                 device="cpu", **COMMON), accuracy)
        for d, o, accuracy in (("mnist", "sgd", 97.5), ("mnist", "adam", 96.0),
                               ("fashion-mnist", "sgd", 90.0))
    ]  # fmt: skip
    svm = RunSpec(
        model="svm", dataset="mnist", kernel="rbf", C=10.0, svm_backend="sklearn", **COMMON
    )
    with Store(path) as store:
        store.register("syn", "mixed", [spec for spec, _ in resnets] + [svm])
        for spec, accuracy in resnets:
            _finish(store, spec, torch_result(spec, accuracy, 100.0))
        result = RunResult(
            spec=svm.to_dict(), test_accuracy=99.1, train_seconds=300.0, device=CPU,
            confusion_matrix=_confusion(99.1), environment=_environment(CPU),
        )  # fmt: skip
        _finish(store, svm, result)
    return path


def test_the_best_resnet_is_shown_even_where_an_svm_is_best_overall(tmp_path: Path) -> None:
    with Store(_store(tmp_path / "mixed.db")) as store:
        report = build_report(store, "syn")
    assert [p.slug for p in report.confusion] == [
        "confusion-mnist-torch", "confusion-mnist-svm", "confusion-fashion-mnist-torch",
    ]  # fmt: skip
    assert [p.title for p in report.confusion] == [
        "MNIST — best ResNet: ResNet-18, B16, SGD, lr 0.001 (97.50 %)",
        "MNIST — best SVM: SVM, rbf, C 10 (99.10 %)",
        "FashionMNIST — best ResNet: ResNet-18, B16, SGD, lr 0.001 (90.00 %)",
    ]
    assert all(p.png.startswith(b"\x89PNG") for p in report.confusion)

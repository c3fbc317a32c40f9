"""`mnistbench predict | evaluate | export` end to end: real model files, real IDX data, the
store as a study leaves it; bad inputs exit with a message that names them."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistbench.cli import main
from mnistbench.data.registry import MNIST
from mnistbench.engines.torch.models import build_resnet
from mnistbench.result import RunResult
from mnistbench.study.store import Store
from mnistbench.use.inputs import read_inputs
from tests.saved_models import save_png, synthetic_root, train

# stdout buffered, as a user's Python has it (a test runner may set PYTHONUNBUFFERED): a closed
# pipe met at exit's flush, not in main, would say "Exception ignored ..." and exit 120.
BUFFERED = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A store with one ResNet and one SVM run, as a study records them, and the data."""
    folder = tmp_path_factory.mktemp("cli-models")
    root, data = synthetic_root(folder / "data")
    store_path = folder / "results" / "store.db"
    runs: dict[str, tuple[str, RunResult]] = {}
    with Store(store_path) as store:
        for name, fields in (("resnet", {}), ("svm", {"model": "svm"})):
            spec, result = train(data, folder / "results" / "checkpoints", **fields)
            store.register("s", name, [spec])
            assert store.claim(spec.key()) and store.finish(spec.key(), result)
            runs[name] = (spec.key(), result)
    return root, data, store_path, runs


def _pngs(folder: Path, images: np.ndarray) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    width = len(str(len(images)))  # names that sort in the images' order
    return [
        save_png(folder / f"{i:0{width}d}.png", image, scale=3) for i, image in enumerate(images)
    ]


def test_predict_a_folder_in_one_pass_as_the_model_predicts_each(setup, tmp_path, capsys) -> None:
    _, data, store_path, runs = setup
    key, result = runs["resnet"]
    # More pictures than one evaluation batch (1,024 at 28 px), so that batching is exercised.
    images = np.tile(data.test_images.numpy(), (11, 1, 1))[:1030]
    _pngs(tmp_path / "in", images)
    (tmp_path / "in" / "zz-broken.png").write_bytes(b"\x89PNG garbage")
    out = tmp_path / "p.json"
    code = main(["predict", str(tmp_path / "in"), "--run", key[:8], "--store", str(store_path),
                 "--json", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1, "an unreadable file: exit 1, after the others were predicted"
    assert "zz-broken.png: not a readable image" in captured.err
    payload = json.loads(out.read_text())
    assert payload["run"] == key and len(payload["predictions"]) == len(images)
    expected = labels_from_the_file_alone(Path(result.model_path), torch.from_numpy(images))
    assert [p["label"] for p in payload["predictions"]] == expected
    first = payload["predictions"][0]
    assert first["class"] == MNIST.classes[first["label"]]
    assert first["probability"] == pytest.approx(first["top"][0]["score"], abs=1e-6)
    scores = [t["score"] for t in first["top"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert f"{len(images)} prediction(s)" in captured.out


def labels_from_the_file_alone(path: Path, images: torch.Tensor) -> list[int]:
    """The labels a model file gives 28 px images, computed without mnistbench's loading and
    prediction code: torchvision's network with the file's weights and normalisation."""
    state = torch.load(path, weights_only=True)
    spec, steps = state["spec"], state["preprocess"]
    network = build_resnet(spec["model"], channels=1, stem=spec["stem"])
    network.load_state_dict(state["model"])
    inputs = (images.float().unsqueeze(1) / 255 - steps["mean"]) / steps["std"]
    with torch.no_grad():
        return network.eval()(inputs).argmax(1).tolist()


def _read_back(folder: Path):

    return torch.from_numpy(read_inputs([folder]).array())


def test_predict_with_an_svm_and_json_on_stdout(setup, tmp_path, capsys) -> None:
    _, data, store_path, runs = setup
    key, _ = runs["svm"]
    np.save(tmp_path / "x.npy", data.test_images[:4].numpy())
    code = main(["predict", str(tmp_path / "x.npy"), "--best", "--study", "s", "--experiment",
                 "svm", "--store", str(store_path), "--json", "-"])  # fmt: skip
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["run"] == key
    assert [p["probability"] for p in payload["predictions"]] == [None] * 4  # an SVM has none


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nowhere.model.pt"], "--model: nowhere.model.pt: no such model file"),
        (["--model", "{tmp}"], "--model: {tmp}: a folder, not a model file"),
        (["--run", "ffffffffff"], "--run: no run in .* starting with 'ffffffffff'"),
        (["--run", "abc"], "too short"),
        (["--run", "{key}", "--study", "s"], "--study narrow"),
        (["--best", "--study", "nope"], "study 'nope' has no finished run"),
    ],
)
def test_a_bad_model_choice_exits_2_naming_it(setup, tmp_path, capsys, args, message) -> None:
    _, data, store_path, runs = setup
    image = save_png(tmp_path / "a.png", data.test_images[0].numpy())
    args = [a.format(key=runs["resnet"][0], tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(image), *args, "--store", str(store_path)])
    assert exit_.value.code == 2
    assert re.search(message.format(tmp=tmp_path), capsys.readouterr().err)


def test_no_readable_input_exits_2(setup, tmp_path, capsys) -> None:
    _, _, store_path, runs = setup
    (tmp_path / "bad.png").write_text("no")
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(tmp_path / "bad.png"), "--run", runs["resnet"][0],
              "--store", str(store_path)])  # fmt: skip
    assert exit_.value.code == 2 and "no input could be read" in capsys.readouterr().err


def test_evaluate_says_it_reproduces_the_stored_accuracy(setup, capsys, monkeypatch) -> None:
    _, data, store_path, runs = setup
    from mnistbench.cli import console

    # The synthetic files are not MNIST's (digests): the data comes in as a study's would.
    monkeypatch.setattr(console, "load_or_fetch", lambda name, root: data)
    for name in ("resnet", "svm"):
        key, result = runs[name]
        assert main(["evaluate", "--run", key, "--store", str(store_path)]) == 0
        out = capsys.readouterr().out
        assert f"accuracy {result.test_accuracy:.2f} %" in out
        assert "the same" in out and "confusion matrix" in out


def test_evaluate_says_different_when_its_test_part_no_longer_gives_the_stored_accuracy(
    setup, capsys, monkeypatch
) -> None:
    _, data, store_path, runs = setup
    from mnistbench.cli import console

    # The same images with every test label moved to the next class: as if the data had
    # changed since the run. The evaluation must not claim to reproduce the stored number.
    changed = dataclasses.replace(data, test_labels=(data.test_labels + 1) % 10)
    monkeypatch.setattr(console, "load_or_fetch", lambda name, root: changed)
    key, result = runs["resnet"]
    assert main(["evaluate", "--run", key, "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert f"stored test accuracy {result.test_accuracy:.2f} %: DIFFERENT" in out
    assert "the same" not in out


def test_export_writes_an_onnx_file_that_onnxruntime_agrees_with(setup, tmp_path, capsys) -> None:
    _, _, store_path, runs = setup
    for name in ("resnet", "svm"):
        out = tmp_path / f"{name}.onnx"
        code = main(["export", "--run", runs[name][0], "--store", str(store_path),
                     "--out", str(out)])  # fmt: skip
        printed = capsys.readouterr().out
        assert code == 0 and out.is_file() and "same class on 100.0 %" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet.onnx", "svm.onnx"]


def test_best_says_which_run_it_chose_and_why(setup, tmp_path, capsys) -> None:
    _, data, store_path, runs = setup
    np.save(tmp_path / "x.npy", data.test_images[:2].numpy())
    code = main(["predict", str(tmp_path / "x.npy"), "--best", "--study", "s",
                 "--store", str(store_path), "--json", "-"])  # fmt: skip
    captured = capsys.readouterr()
    key = runs["resnet"][0]  # the report's headline: the grid's best, never the SVM's
    assert code == 0 and json.loads(captured.out)["run"] == key
    assert f"best: run {key} (" in captured.err
    assert "the highest mean test accuracy" in captured.err
    assert "of the report's headline experiments (resnet:" in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "IMAGE", "--json", "FILE/p.json"], "--json: FILE/p.json: TMP/FILE is a file"),
        (["predict", "IMAGE", "--json", "DIR"], "--json: DIR is a folder: give the file to write"),
        (["predict", "IMAGE", "--json", "/proc/mnistbench/p.json"], "in /proc: "),
        (["predict", "IMAGE", "--json", "IMAGE"], "--json: IMAGE is a file this command reads"),
        (["predict", "IMAGE", "--json", ""], "--json: an empty path"),
        (["predict", "IMAGE", "--store", "DIR"], "error: DIR is a folder, not a results store"),
        (["evaluate", "--json", "FILE/e.json"], "--json: FILE/e.json: TMP/FILE is a file"),
        (["evaluate", "--dataset", "cifar"], "error: unknown dataset 'cifar'"),
        (["evaluate", "--root", "ROOT"], "--root: ROOT/MNIST/raw/train-images-idx3-ubyte: SHA-256"),
        (["export", "--out", "FILE/m.onnx"], "--out: FILE/m.onnx: TMP/FILE is a file"),
        (["export", "--out", "/proc/mnistbench/m.onnx"], "--out: /proc/mnistbench/m.onnx: no "),
        (["export", "--out", "m.onnx", "--json", "m.onnx"], "--json: m.onnx is also --out's"),
        (["export", "--out", "MODEL"], "--out: MODEL is a file this command reads"),
        (["export", "--json", "DIR"], "--json: DIR is a folder"),
    ],
)
def test_bad_input_of_a_use_command_exits_2_having_written_nothing(
    setup, tmp_path, monkeypatch, capsys, args, message
) -> None:
    root, data, store_path, runs = setup
    key, result = runs["svm"]  # quick to load
    monkeypatch.chdir(tmp_path)  # default outputs (results/export/) would land here
    save_png(tmp_path / "a.png", data.test_images[0].numpy())
    (tmp_path / "file").write_text("a file, not a folder\n")
    (tmp_path / "dir").mkdir()
    model = Path(result.model_path)
    names = {"IMAGE": "a.png", "FILE": "file", "DIR": "dir", "MODEL": str(model),
             "ROOT": str(root), "TMP": str(tmp_path)}  # fmt: skip

    def fill(text: str) -> str:
        for placeholder, value in names.items():
            text = text.replace(placeholder, value)
        return text

    before = sorted(tmp_path.rglob("*")), model.read_bytes(), sorted(store_path.parent.rglob("*"))
    command, *rest = map(fill, args)
    with pytest.raises(SystemExit) as exit_:  # flags given twice: the last one counts
        main([command, "--run", key, "--store", str(store_path), *rest])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and fill(message) in err, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("mnistbench ")
    after = sorted(tmp_path.rglob("*")), model.read_bytes(), sorted(store_path.parent.rglob("*"))
    assert after == before, "nothing written"


def test_a_reader_gone_early_ends_predict_quietly(setup, tmp_path) -> None:
    """`mnistbench predict ... | head -c 10`: head has what it wanted and is gone before
    predict writes (it read ten bytes written first), so predict meets a closed pipe: it ends
    with the code of a command stopped by SIGPIPE, no traceback, whether it writes JSON or the
    table (rich)."""
    _, data, store_path, runs = setup
    np.save(tmp_path / "x.npy", data.test_images[:50].numpy())
    err = tmp_path / "err.txt"
    for json_flag in ("--json -", ""):
        command = (
            f"{{ printf 0123456789; exec {sys.executable} -m mnistbench predict "
            f"{tmp_path / 'x.npy'} --run {runs['svm'][0]} --store {store_path} {json_flag} "
            f"2>{err}; }} | head -c 10; exit ${{PIPESTATUS[0]}}"
        )
        done = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, env=BUFFERED, timeout=300
        )
        assert done.stdout == "0123456789"
        said = err.read_text()
        assert done.returncode == 141, said
        assert said.startswith(f"model: run {runs['svm'][0]} ") and said.count("\n") == 1, said

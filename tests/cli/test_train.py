import json
import subprocess
import sys

import pytest
import torch

from mnistbench.cli import main


def _train(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnistbench", "train", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--optimizer", "rmsprop"], "--optimizer"),
        (["--batch-size", "0"], "--batch-size"),
        (["--image-size", "500"], "--image-size"),
        (["--dataset", "cifar10"], "--dataset"),
        (["--batch-size", "many"], "--batch-size"),
        (["--model", "svm", "--kernel", "sigmoid"], "--kernel"),
        (["--amp", "cpu"], "--amp: amp='cpu' is invalid"),
        (["--pin-memory"], "--pin-memory: pin_memory=True is invalid: pin_memory needs loader"),
        (["--num-workers", "2"], "write loader = 'dataloader' (--loader dataloader)"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(tmp_path, capsys, args, named):
    with pytest.raises(SystemExit) as caught:
        main(["train", *args, "--root", str(tmp_path)])
    assert caught.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "amp"),
    [
        ([], False),
        (["--amp"], True),
        (["--amp", "cuda"], "cuda"),
        (["--amp", "--epochs", "3"], True),  # a flag after --amp is not its value
        (["--no-amp"], False),
        (["--amp", "false"], False),
    ],
)
def test_amp_flag_reads_on_off_and_cuda_only(args, amp):
    from mnistbench.cli import build_parser
    from mnistbench.cli.train import spec_from_args

    assert spec_from_args(build_parser().parse_args(["train", *args])).amp == amp


@pytest.mark.slow
def test_help_explains_every_field():
    result = _train("--help")
    assert result.returncode == 0
    for flag in ("--pin-memory", "--amp", "--lr-schedule", "--train-limit", "--svm-backend"):
        assert flag in result.stdout
    text = " ".join(result.stdout.split())  # undo the line wrapping
    assert "fp16 autocast + GradScaler on CUDA" in text
    assert (
        "--amp [cuda]" in text and "'cuda' (--amp cuda): on CUDA only, fp32 on every other" in text
    )


@pytest.mark.network
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_request_without_cuda_fails_clearly(real_data_root, tmp_path):
    result = _train("--device", "cuda", "--root", str(real_data_root), "--train-limit", "64")
    assert result.returncode == 2  # known impossible before any work starts: a usage error
    assert "CUDA is not available" in result.stderr


@pytest.mark.slow
@pytest.mark.network
def test_train_on_real_mnist_writes_the_documented_json(real_data_root, tmp_path):
    out = tmp_path / "result.json"
    result = _train(
        "--dataset", "mnist", "--epochs", "1", "--batch-size", "64", "--lr", "0.004",
        "--train-limit", "2000", "--test-limit", "500", "--root", str(real_data_root),
        "--json", str(out), "--checkpoint-dir", str(tmp_path / "ckpt"), "--quiet",
        # Pinned: "auto" picks by timing, and these 32 steps end between 78 % and 88 % by the
        # order in which their sums were taken (matmul on small maps or not, NCHW or NHWC).
        "--memory-format", "contiguous", "--small-map-convs", "conv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    saved = json.loads(out.read_text())
    for key in (
        "status", "test_accuracy", "val_accuracy", "train_seconds", "eval_seconds",
        "images_per_second", "flops_per_image", "macs_per_image", "device", "precision", "history",
        "confusion_matrix", "environment", "spec",
    ):  # fmt: skip
        assert key in saved, key
    assert saved["status"] == "ok" and saved["test_accuracy"] > 80
    assert saved["spec"]["lr"] == 0.004 and len(saved["history"]) == 1
    assert "test accuracy" in result.stdout

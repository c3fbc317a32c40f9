"""Checkpoints hold what the run's device needs: a CPU run never touches CUDA, even where it exists."""

import pytest
import torch

from mnistbench.config import RunSpec
from mnistbench.engines.torch import checkpoint
from mnistbench.engines.torch.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from mnistbench.engines.torch.recipe import make_training


@pytest.fixture
def cuda_that_must_not_be_touched(monkeypatch):
    """This machine says it has a GPU; reading or setting CUDA RNG state fails the test."""

    def touched(*args, **kwargs):
        raise AssertionError("a CPU run's checkpoint touched the CUDA RNG state")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", touched)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", touched)


def test_a_cpu_runs_checkpoint_never_touches_cuda_rng_state(
    tmp_path, cuda_that_must_not_be_touched
):
    spec = RunSpec(model="resnet18", device="cpu", threads=1)
    training = make_training(spec, torch.device("cpu"), channels_last=False, steps=4)
    path = tmp_path / "run.ckpt.pt"
    save_checkpoint(path, spec, training, epoch=1, history=[], train_seconds=1.0)
    state = load_checkpoint(path, spec)
    assert state is not None and set(state["rng"]) == {"torch"}
    restore_checkpoint(state, training)


def test_a_cuda_run_keeps_and_restores_its_cuda_rng_state(monkeypatch):
    saved = [torch.tensor([7], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = checkpoint._rng_state(torch.device("cuda"))
    assert state["cuda"] is saved
    checkpoint._set_rng_state(state, torch.device("cuda"))
    assert restored == [saved]


def test_a_resumed_optimizer_keeps_its_own_implementation_and_takes_the_saved_state():
    """An epoch saved by an eager run (SGD unfused under a GradScaler) resumes into a captured
    one (fused SGD, cudagraphs.py): the saved momentum and lr, this run's kernel."""
    from mnistbench.engines.torch.checkpoint import _load_optimizer_state
    from mnistbench.engines.torch.recipe import make_optimizer

    spec = RunSpec(optimizer="sgd", lr=0.1)
    model = torch.nn.Linear(3, 2)
    eager = make_optimizer(spec, model, torch.device("cpu"), grad_scaler=True)
    model(torch.ones(1, 3)).sum().backward()
    eager.step()
    captured = make_optimizer(spec, model, torch.device("cpu"), grad_scaler=True, captured=True)
    assert not eager.param_groups[0]["fused"] and captured.param_groups[0]["fused"]
    _load_optimizer_state(captured, eager.state_dict())
    assert captured.param_groups[0]["fused"] and captured.param_groups[0]["lr"] == 0.1
    saved = eager.state[model.weight]["momentum_buffer"]
    assert torch.equal(captured.state[model.weight]["momentum_buffer"], saved)

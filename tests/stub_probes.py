"""Probes replaced by constants, for tests of what estimates say (the real probe:
tests/cost/test_probe.py). Patched by module path: after a move, a stale name fails loudly
instead of probing for real."""

from __future__ import annotations

import pytest

from mnistbench.cost.rates import Observation
from mnistbench.engines import Work

# A ResNet probe: 100 images trained a second, 1000 evaluated, 3 s a run besides. A run of
# 2 epochs of 1000 images and 2 test passes of 500 (the 2nd the final one): 20 + 1 + 3 = 24 s.
RESNET_PROBE = Observation(Work(48, 256, 256), 0.48, 0.256, wall_seconds=3.0 + 0.48 + 0.256)
STARTUP_SECONDS = 5.0

# Two experiments of such runs: a grid of 2 on the CPU, and 1 on a GPU this machine lacks.
TWO_EXPERIMENTS = (
    '[study]\nname = "s"\n'
    '[defaults]\nmodel = "resnet18"\nepochs = 2\ntrain_limit = 1000\ntest_limit = 500\n'
    '[experiments.grid]\nbase = { device = "cpu" }\ngrid = { batch_size = [16, 32] }\n'
    '[experiments.gpu]\nbase = { device = "cuda:99" }\n'
)


def stub_probes(monkeypatch: pytest.MonkeyPatch, svm: Observation | None = None) -> None:
    """Every probe gives RESNET_PROBE (an SVM's `svm`, when given), no data is loaded, and a
    study's start-up is STARTUP_SECONDS."""

    def probe(spec: object, data: object) -> Observation:
        return svm if svm is not None and getattr(spec, "model", "") == "svm" else RESNET_PROBE

    monkeypatch.setattr("mnistbench.cost.probe.probe", probe)
    monkeypatch.setattr(
        "mnistbench.cost.probe.probe_data", lambda name, root=None, random_ok=True: None
    )
    monkeypatch.setattr("mnistbench.cost.estimate.process_age", lambda: STARTUP_SECONDS)

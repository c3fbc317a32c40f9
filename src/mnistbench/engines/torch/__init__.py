"""The ResNet engine (torchvision ResNets, trained with torch): its `ENGINE`.

Read in this order: train.py (a run, top to bottom), prepare.py (split, model, recipe),
loops.py (the epoch and evaluation loops), recipe.py (optimizer, schedule, precision),
batches.py, cudagraphs.py, memory_format.py, smallmaps.py, checkpoint.py (resume and the final
model), saved.py (the final model loaded to predict), models.py (the ResNets).

This module imports no torch, and none of the modules beside it (which never import it back):
the study's planning, status and estimates ask it questions without paying for torch's import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mnistbench.config import RunSpec
from mnistbench.data.sizes import Sizes

if TYPE_CHECKING:
    from mnistbench.data.load import Dataset
    from mnistbench.engines import SavedModel, Work
    from mnistbench.progress import Reporter
    from mnistbench.result import RunResult

PROBE_STEPS = 3  # training steps a probe times (after the run's own warm-up)
PROBE_TEST_IMAGES = 128


class TorchEngine:
    @property
    def model_suffix(self) -> str:
        from mnistbench.engines.torch.checkpoint import MODEL_SUFFIX

        return MODEL_SUFFIX

    def run(
        self,
        spec: RunSpec,
        data: Dataset,
        checkpoint_dir: Path | None = None,
        reporter: Reporter | None = None,
    ) -> RunResult:
        from mnistbench.engines.torch import train

        return train.run(spec, data, checkpoint_dir=checkpoint_dir, reporter=reporter)

    def device(self, spec: RunSpec) -> str:
        return spec.device

    def skip_reason(self, spec: RunSpec) -> str | None:
        from mnistbench.devices import device_problem

        return device_problem(spec.device)

    def check_runnable(self, spec: RunSpec) -> None:
        from mnistbench.devices import resolve_device

        resolve_device(spec.device)

    def probe(self, spec: RunSpec) -> RunSpec:
        """A few steps and one test batch of the spec's shape (and one validation batch where
        the run has a validation split: never the whole of it), in the layout its run would
        choose from what is cached (choosing one by timing is its run's own cost)."""
        import torch

        from mnistbench.devices import resolve_device
        from mnistbench.engines.torch.memory_format import cached_choice

        device = resolve_device(spec.device)
        with torch.device("cpu"):
            choice = cached_choice(spec, device, work=(spec.batch_size * PROBE_STEPS, 0))
        return spec.replace(
            train_limit=spec.batch_size * PROBE_STEPS,
            val_limit=min(spec.val_limit or PROBE_TEST_IMAGES, PROBE_TEST_IMAGES),
            test_limit=PROBE_TEST_IMAGES,
            epochs=1,
            memory_format=choice.memory_format,
            small_map_convs="matmul" if choice.matmul_small_maps else "conv",
        )

    def work(self, spec: RunSpec, sizes: Sizes) -> Work:
        from mnistbench.engines import Work
        from mnistbench.engines.torch.prepare import run_images

        trained, evaluated = run_images(spec, sizes)
        return Work(trained, evaluated, sizes.test)

    def model_file_bytes(self, spec: RunSpec) -> int:
        """Its parameters and buffers (fp32 whatever the precision it trained in)."""
        return _model_bytes(spec.model, spec.channels, spec.stem)

    def load_model(
        self, path: Path, load_data: Callable[[str], Dataset] | None = None
    ) -> SavedModel:
        from mnistbench.engines.torch.saved import load_torch_model

        return load_torch_model(path, load_data)


@functools.lru_cache(maxsize=16)
def _model_bytes(model: str, channels: int, stem: str) -> int:
    import torch

    from mnistbench.engines.torch.models import build_resnet

    with torch.device("meta"):  # counted, not allocated
        net = build_resnet(model, channels=channels, stem=stem)
    return sum(t.numel() * t.element_size() for t in net.state_dict().values())


ENGINE = TorchEngine()

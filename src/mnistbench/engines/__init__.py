"""Run one spec on its engine: the single place that chooses between the torch and SVM engines.

Both `mnistbench train` and the study executors (in process, worker processes, GPU threads, Ray
tasks) call `run_spec`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from mnistbench.config import RunSpec
from mnistbench.data.load import Dataset, load_dataset
from mnistbench.progress import Reporter
from mnistbench.result import RunResult


def run_spec(
    spec: RunSpec,
    data: Dataset,
    checkpoint_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> RunResult:
    """Train and evaluate one spec with the engine its model needs."""
    if spec.is_svm:
        from mnistbench.engines.svm import train as train_svm

        return train_svm.run(spec, data, reporter=reporter, checkpoint_dir=checkpoint_dir)
    from mnistbench.engines.torch import train as train_torch

    return train_torch.run(spec, data, checkpoint_dir=checkpoint_dir, reporter=reporter)


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, root: str | None) -> Dataset:
    """Each worker process loads a dataset once (0.2 s) and reuses it for every run it gets."""
    return load_dataset(name, root)


def run_in_worker(
    spec_dict: dict,
    root: str | None,
    checkpoint_dir: str | None,
    threads: int | None,
    gpu_index: int | None = None,
    reporter: Reporter | None = None,
) -> dict:
    """Entry point for worker processes and Ray tasks: plain dicts in and out (picklable).

    `threads` overrides the spec's thread count so that N parallel workers share the cores
    instead of each one claiming all of them; `gpu_index` is the GPU the scheduler placed the
    run on ('cuda' and 'auto' then mean that one). Neither is part of the run's identity.
    `reporter`: where progress goes (a GPU run in a thread of the study's process gets one
    that stops it when the study stops); by default nowhere.
    """
    spec = RunSpec.from_dict(spec_dict)
    if threads is not None:
        spec = spec.replace(threads=threads)
    if gpu_index is not None:
        torch.cuda.set_device(gpu_index)
    reporter = reporter or Reporter()
    data = cached_dataset(spec.dataset, root)
    directory = Path(checkpoint_dir) if checkpoint_dir else None
    result = run_spec(spec, data, directory, reporter)
    result.environment.setdefault("worker_pid", os.getpid())
    return result.to_dict()

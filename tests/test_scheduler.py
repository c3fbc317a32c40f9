"""The local executor's placement of runs on CPU worker slots and GPU shares."""

from __future__ import annotations

import pytest

from mnistbench.config import RunSpec
from mnistbench.scheduler import (
    Slots,
    auto_jobs,
    gpu_fraction,
    needs_gpu,
    runs_per_gpu,
    worker_threads,
)


def test_quarter_gpus_put_four_runs_on_one_gpu_and_the_fifth_waits():
    slots = Slots(cpu_workers=1, gpus=1)
    placements = [slots.place(f"run{i}", 0.25) for i in range(5)]
    assert [p.gpu_index if p else None for p in placements[:4]] == [0, 0, 0, 0]
    assert placements[4] is None
    assert slots.release("run0") == {"runs_at_once": 4, "runs_on_same_gpu": 4}
    assert slots.place("run4", 0.25) is not None


def test_runs_spread_over_gpus_before_sharing_one():
    slots = Slots(cpu_workers=1, gpus=2)
    first, second = slots.place("a", 0.5), slots.place("b", 0.5)
    assert {first.gpu_index, second.gpu_index} == {0, 1}
    third = slots.place("c", 0.5)
    assert third is not None and slots.place("d", 0.5) is not None
    assert slots.place("e", 0.5) is None
    assert slots.release("a") == {"runs_at_once": 4, "runs_on_same_gpu": 2}


def test_cpu_runs_take_worker_slots_beside_gpu_runs():
    slots = Slots(cpu_workers=2, gpus=1)
    assert slots.place("gpu", 1.0).gpu_index == 0
    assert slots.place("gpu2", 1.0) is None  # a whole GPU each: the second waits
    assert slots.place("svm1", None) == slots.place("svm2", None)  # CPU slots, no GPU index
    assert slots.place("svm3", None) is None
    assert slots.release("svm1") == {"runs_at_once": 3}
    assert slots.release("gpu") == {"runs_at_once": 3, "runs_on_same_gpu": 1}
    assert slots.place("gpu2", 1.0) is not None


def test_a_run_alone_records_that_it_was_alone():
    slots = Slots(cpu_workers=1, gpus=1)
    slots.place("only", 0.25)
    assert slots.release("only") == {"runs_at_once": 1, "runs_on_same_gpu": 1}
    assert slots.idle()


@pytest.mark.parametrize(
    ("resources", "fraction", "per_gpu"),
    [({}, 1.0, 1), ({"num_gpus": 0.25}, 0.25, 4), ({"num_gpus": 1 / 3}, 1 / 3, 3),
     ({"num_gpus": 2}, 1.0, 1), ({"num_gpus": 0}, 1.0, 1), ({"num_gpus": 0.3}, 0.3, 3)],
)  # fmt: skip
def test_gpu_fraction_reads_num_gpus_as_ray_does(resources, fraction, per_gpu):
    assert gpu_fraction(resources) == pytest.approx(fraction)
    assert runs_per_gpu(gpu_fraction(resources)) == per_gpu


def test_which_runs_need_a_gpu():
    assert needs_gpu(RunSpec(device="cuda"), gpus_here=0)
    assert needs_gpu(RunSpec(device="auto"), gpus_here=1)
    assert not needs_gpu(RunSpec(device="auto"), gpus_here=0)
    assert not needs_gpu(RunSpec(device="cpu"), gpus_here=1)
    assert not needs_gpu(RunSpec(model="svm", svm_backend="sklearn"), gpus_here=1)


def test_gpu_runs_keep_two_host_threads_and_cpu_runs_share_the_rest():
    assert worker_threads(16, 1, 4) == (8, 2)
    assert worker_threads(16, 2, 4) == (4, 2)
    assert worker_threads(2, 2, 0) == (1, 1)  # a CPU-only machine: cores split between workers
    assert worker_threads(4, 1, 0) == (4, 1)
    assert worker_threads(2, 1, 4) == (1, 2)  # oversubscribed: every worker still gets a thread


def test_slots_need_a_cpu_worker():
    with pytest.raises(ValueError, match="cpu_workers"):
        Slots(cpu_workers=0, gpus=1)


STUDY = """
[study]
name = "mixed"

[experiments.grid]
base = { model = "resnet18" }
resources = { num_gpus = 0.25 }
grid = { optimizer = ["sgd", "adam"] }

[experiments.whole]
base = { model = "resnet18", device = "cuda", optimizer = "sgd" }

[experiments.svm]
base = { model = "svm" }
"""


def _shares(tmp_path, only: list[str], gpus: int) -> list[float | None]:
    """Each run's gpu_share for the experiments `only` of the mixed study, on `gpus` GPUs."""
    from mnistbench.scheduler import gpu_share
    from mnistbench.studyfile import load_study

    path = tmp_path / "mixed.toml"
    path.write_text(STUDY)
    study = load_study(path)
    return [gpu_share(spec, e.resources, gpus) for e in study.select(only) for spec in e.specs()]


def test_gpu_runs_share_a_gpu_only_in_worker_processes(tmp_path):
    from mnistbench.scheduler import wants_worker_processes

    assert _shares(tmp_path, ["grid"], gpus=1) == [0.25, 0.25]
    assert wants_worker_processes(_shares(tmp_path, ["grid"], 1), jobs=1, gpus=1)  # four per GPU
    no_gpu = _shares(tmp_path, ["grid"], gpus=0)
    assert not wants_worker_processes(no_gpu, jobs=1, gpus=0)  # no GPU: in this process
    assert no_gpu == [None, None]


def test_whole_gpu_runs_go_in_process_unless_cpu_runs_can_go_beside_them(tmp_path):
    from mnistbench.scheduler import wants_worker_processes

    whole = ["whole"]
    assert not wants_worker_processes(_shares(tmp_path, whole, 1), jobs=1, gpus=1)  # one at a time
    assert wants_worker_processes(_shares(tmp_path, whole, 2), jobs=1, gpus=2)  # one per GPU
    mixed = ["whole", "svm"]
    assert wants_worker_processes(_shares(tmp_path, mixed, 1), jobs=1, gpus=1)  # SVM beside it
    assert wants_worker_processes(_shares(tmp_path, mixed, 0), jobs=2, gpus=0)  # --jobs 2


def test_experiment_resources_become_ray_options_fractional_gpus_included():
    from mnistbench.executors import _ray_options
    from mnistbench.studyfile import Experiment

    shared = Experiment("q1a", resources={"num_cpus": 2, "num_gpus": 0.25, "max_retries": 5})
    assert _ray_options(shared) == {"num_cpus": 2, "num_gpus": 0.25, "max_retries": 5}
    assert _ray_options(Experiment("svm")) == {"num_cpus": 1, "num_gpus": 0, "max_retries": 2}


GIB = 2**30


@pytest.mark.parametrize(
    ("cpu_runs", "cores", "memory", "jobs"),
    [
        (10, 2, 24 * GIB, 2),  # one worker per core
        (1, 2, 24 * GIB, 1),  # one run: no second worker to start
        (0, 8, None, 1),  # only GPU runs: the CPU slot count does not matter, at least one
        (10, 16, 5 * GIB, 2),  # memory for two runs only
        (10, 16, GIB, 1),  # not even for one: still one
        (10, 16, None, 10),  # memory unknown: no cap
    ],
)
def test_jobs_auto_takes_a_core_per_run_within_runs_and_memory(cpu_runs, cores, memory, jobs):
    assert auto_jobs(cpu_runs, cores, memory) == jobs

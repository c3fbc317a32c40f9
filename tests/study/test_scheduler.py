"""The local executor's placement of runs on CPU worker slots and GPU shares."""

from __future__ import annotations

import time

import pytest

from mnistbench.config import RunSpec
from mnistbench.study.scheduler import (
    Slots,
    auto_jobs,
    gpu_fraction,
    needs_gpu,
    runs_per_gpu,
    worker_threads,
)


class Clock:
    """The driver's clock, moved by hand: each test says exactly how long runs lived."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_quarter_gpus_put_four_runs_on_one_gpu_and_the_fifth_waits():
    clock = Clock()
    slots = Slots(cpu_workers=1, gpus=1, clock=clock)
    placements = [slots.place(f"run{i}", 0.25) for i in range(5)]
    assert [p.gpu_index if p else None for p in placements[:4]] == [0, 0, 0, 0]
    assert placements[4] is None
    clock.now += 8
    assert slots.release("run0") == {
        "runs_at_once": 4, "life_seconds": 8.0, "runs_on_same_gpu": 4, "mean_runs_on_same_gpu": 4.0,
        "group_wall_seconds": 8.0,
    }  # fmt: skip
    assert slots.place("run4", 0.25) is not None


def test_runs_spread_over_gpus_before_sharing_one():
    slots = Slots(cpu_workers=1, gpus=2, clock=Clock())
    first, second = slots.place("a", 0.5), slots.place("b", 0.5)
    assert {first.gpu_index, second.gpu_index} == {0, 1}
    third = slots.place("c", 0.5)
    assert third is not None and slots.place("d", 0.5) is not None
    assert slots.place("e", 0.5) is None
    shared = slots.release("a")
    assert (shared["runs_at_once"], shared["runs_on_same_gpu"]) == (4, 2)


def test_cpu_runs_take_worker_slots_beside_gpu_runs():
    slots = Slots(cpu_workers=2, gpus=1, clock=Clock())
    assert slots.place("gpu", 1.0).gpu_index == 0
    assert slots.place("gpu2", 1.0) is None  # a whole GPU each: the second waits
    assert slots.place("svm1", None) == slots.place("svm2", None)  # CPU slots, no GPU index
    assert slots.place("svm3", None) is None
    svm = slots.release("svm1")
    assert svm["runs_at_once"] == 3 and "runs_on_same_gpu" not in svm
    gpu = slots.release("gpu")
    assert (gpu["runs_at_once"], gpu["runs_on_same_gpu"]) == (3, 1)
    assert "gpu_runs_alongside" not in gpu
    assert slots.place("gpu2", 1.0) is not None


def test_a_run_alone_records_that_it_was_alone():
    clock = Clock()
    slots = Slots(cpu_workers=1, gpus=1, clock=clock)
    slots.place("only", 0.25)
    clock.now += 30
    assert slots.release("only") == {
        "runs_at_once": 1, "life_seconds": 30.0, "runs_on_same_gpu": 1, "mean_runs_on_same_gpu": 1.0,
        "group_wall_seconds": 30.0,
    }  # fmt: skip
    assert slots.idle()


def test_mean_runs_on_a_gpu_weighs_each_count_by_how_long_it_lasted():
    # A alone 10 s, then B beside it 10 s, then A leaves: A had 1 run for 10 s and 2 for 10 s.
    clock = Clock()
    slots = Slots(cpu_workers=1, gpus=1, clock=clock)
    slots.place("a", 0.5)
    clock.now += 10
    slots.place("b", 0.5)
    clock.now += 10
    a = slots.release("a")
    assert (a["mean_runs_on_same_gpu"], a["runs_on_same_gpu"], a["life_seconds"]) == (1.5, 2, 20)
    clock.now += 30  # B alone for its last 30 s: 2 runs for 10 s, 1 for 30 s
    b = slots.release("b")
    assert (b["mean_runs_on_same_gpu"], b["runs_on_same_gpu"], b["life_seconds"]) == (1.25, 2, 40)


def test_the_group_wall_time_spans_the_gpus_busy_period_up_to_each_runs_end():
    clock = Clock()
    slots = Slots(cpu_workers=1, gpus=1, clock=clock)
    slots.place("a", 0.5)
    clock.now += 5
    slots.place("b", 0.5)
    clock.now += 5
    assert slots.release("a")["group_wall_seconds"] == 10  # the group began with A at 0 s
    clock.now += 10
    assert slots.release("b")["group_wall_seconds"] == 20  # B joined at 5 s; the group at 0 s
    clock.now += 5  # the GPU idle: the next run starts a group of its own
    slots.place("c", 0.5)
    clock.now += 7
    assert slots.release("c")["group_wall_seconds"] == 7


def test_only_runs_on_the_same_gpu_count_towards_the_mean():
    clock = Clock()
    slots = Slots(cpu_workers=2, gpus=2, clock=clock)
    slots.place("a", 0.5)  # GPU 0
    slots.place("b", 0.5)  # GPU 1: the emptier one
    slots.place("svm", None)
    clock.now += 3
    slots.place("c", 0.5)  # GPU 0 or 1, beside one of them for 1 s of its 4
    clock.now += 1
    means = {key: slots.release(key).get("mean_runs_on_same_gpu") for key in ("a", "b", "svm")}
    assert sorted([means["a"], means["b"]]) == [1.0, 1.25] and means["svm"] is None


def test_the_mean_is_rounded_to_two_decimals_and_an_instant_run_takes_its_peak():
    clock = Clock()
    slots = Slots(cpu_workers=1, gpus=1, clock=clock)
    slots.place("a", 0.5)
    clock.now += 2
    slots.place("b", 0.5)
    clock.now += 1
    assert slots.release("a")["mean_runs_on_same_gpu"] == 1.33  # (2 x 1 + 1 x 2) / 3
    slots.place("c", 0.5)
    assert slots.release("c") == {
        "runs_at_once": 2, "life_seconds": 0.0, "runs_on_same_gpu": 2, "mean_runs_on_same_gpu": 2,
        "group_wall_seconds": 3.0,
    }  # fmt: skip


def test_a_cpu_run_says_how_many_gpu_runs_fed_from_the_same_cores_beside_it():
    clock = Clock()
    slots = Slots(cpu_workers=2, gpus=1, clock=clock)
    slots.place("alone", None)
    clock.now += 5
    assert slots.release("alone") == {
        "runs_at_once": 1, "life_seconds": 5.0, "gpu_runs_alongside": 0,
    }  # fmt: skip
    slots.place("svm", None)
    for key in ("g1", "g2"):
        slots.place(key, 0.5)
    slots.release("g1")
    slots.release("g2")
    clock.now += 5
    beside = slots.release("svm")  # the GPU runs left long before it ended: the peak stays
    assert beside["gpu_runs_alongside"] == 2 and "mean_runs_on_same_gpu" not in beside


def test_slots_read_the_monotonic_clock_by_default():
    # The driver's life_seconds must not jump with the wall clock (NTP, daylight saving).
    assert Slots(cpu_workers=1, gpus=0).clock is time.monotonic


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
    from mnistbench.study.file import load_study
    from mnistbench.study.scheduler import gpu_share

    path = tmp_path / "mixed.toml"
    path.write_text(STUDY)
    study = load_study(path)
    return [gpu_share(spec, e.resources, gpus) for e in study.select(only) for spec in e.specs()]


def test_gpu_runs_share_a_gpu_only_in_worker_processes(tmp_path):
    from mnistbench.study.scheduler import wants_worker_processes

    assert _shares(tmp_path, ["grid"], gpus=1) == [0.25, 0.25]
    assert wants_worker_processes(_shares(tmp_path, ["grid"], 1), jobs=1, gpus=1)  # four per GPU
    no_gpu = _shares(tmp_path, ["grid"], gpus=0)
    assert not wants_worker_processes(no_gpu, jobs=1, gpus=0)  # no GPU: in this process
    assert no_gpu == [None, None]


def test_whole_gpu_runs_go_in_process_unless_cpu_runs_can_go_beside_them(tmp_path):
    from mnistbench.study.scheduler import wants_worker_processes

    whole = ["whole"]
    assert not wants_worker_processes(_shares(tmp_path, whole, 1), jobs=1, gpus=1)  # one at a time
    assert wants_worker_processes(_shares(tmp_path, whole, 2), jobs=1, gpus=2)  # one per GPU
    mixed = ["whole", "svm"]
    assert wants_worker_processes(_shares(tmp_path, mixed, 1), jobs=1, gpus=1)  # SVM beside it
    assert wants_worker_processes(_shares(tmp_path, mixed, 0), jobs=2, gpus=0)  # --jobs 2


def test_experiment_resources_become_ray_options_fractional_gpus_included():
    from mnistbench.study.executors.on_ray import _ray_options
    from mnistbench.study.file import Experiment

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

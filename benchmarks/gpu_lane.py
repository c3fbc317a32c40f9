"""The GPU lane of configs/assignment.toml on one GPU: sharing, a real slice, the projection.

    make gpu-pack                                                    # here
    PYTHONPATH=src python benchmarks/gpu_lane.py OUT --pack gpu-pack  # on the GPU machine

The lane is what the study file gives the GPU: its 32 Q1(a) runs (sharing the GPU as the file's
num_gpus asks) and Q2's two GPU rows (alone). Phases, each written to OUT/gpu_lane.json and
OUT/gpu_lane.md as soon as it ends:
  sharing     total training img/s of k = 1, 2, 4, 8 ResNet-18 batch-16 runs at once, as threads
              with a CUDA stream each, started together; k = 4 as processes too
  q2          Q2's two GPU rows for real, alone, as the study file defines them
  probe       the 8 Q1(a) shapes (model x batch x optimizer) for a few hundred steps, sharing
              the GPU as the slice will: the rates the slice's projection is made from
  slice       one full epoch of each shape (ResNet-18/B32/SGD/1e-3 for its 5 published
              epochs: the accuracy check), sharing the GPU: its wall time against the probe's
              projection of it
  lane        the 32 Q1(a) runs at the slice's rates, k at a time, plus the Q2 rows as measured
Each run's time is its own synchronised train time while it shared the GPU; the totals are
images over the group's wall time, never a run's time divided by k. `--device cpu --smoke`
runs every phase on tiny sizes, to check this script on a CPU.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_check import guarded, machine_arguments, prepare_data  # noqa: E402
from mnistbench.config import RunSpec  # noqa: E402
from mnistbench.cost.rates import (  # noqa: E402
    Observation,
    gpu_lane_seconds,
    rates_from,
    run_sizes,
    run_work,
)
from mnistbench.data import load_dataset  # noqa: E402
from mnistbench.engines import run_spec  # noqa: E402
from mnistbench.engines.torch.batches import count_batches  # noqa: E402
from mnistbench.engines.torch.memory_format import choose_layout  # noqa: E402
from mnistbench.measure import device_name, environment  # noqa: E402
from mnistbench.progress import Reporter  # noqa: E402
from mnistbench.result import RunResult  # noqa: E402
from mnistbench.study.file import load_study  # noqa: E402
from mnistbench.study.sharedgpu import run_sharing_gpu  # noqa: E402

ASSIGNMENT = REPO / "configs" / "assignment.toml"
PHASES = ("sharing", "q2", "probe", "slice", "lane")
ACCURACY_SHAPE = ("resnet18", 32, "sgd", 1e-3)  # 5 epochs on MNIST: 99.0 +- 0.2 % expected


class Lane:
    """Results so far, rewritten to OUT after every phase; the time budget left."""

    def __init__(self, out: Path, budget: float, device: torch.device, smoke: bool) -> None:
        self.out, self.budget, self.device, self.smoke = out, budget, device, smoke
        self.started = time.perf_counter()
        self.results: dict[str, Any] = {"device": device_name(device), "smoke": smoke,
                                        "environment": environment(device), "phases": {}}  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def record(self, phase: str, values: dict[str, Any]) -> None:
        self.results["phases"][phase] = values
        self.results["elapsed_seconds"] = round(time.perf_counter() - self.started, 1)
        (self.out / "gpu_lane.json").write_text(json.dumps(self.results, indent=2, default=str))
        (self.out / "gpu_lane.md").write_text(markdown(self.results))
        print(f"[{self.results['elapsed_seconds']:6.1f} s] {phase}: "
              f"{json.dumps(values.get('summary', values), default=str)[:600]}", flush=True)  # fmt: skip

    def shrink(self, spec: RunSpec) -> RunSpec:
        """On --smoke: the same run on tiny sizes, native split, fp32."""
        if not self.smoke:
            return spec.replace(device=str(self.device))
        return spec.replace(device=str(self.device), split="official", image_size=32,
                            train_limit=4 * spec.batch_size, test_limit=64, amp=False,
                            epochs=min(spec.epochs, 2), loader="memory", pin_memory=False,
                            num_workers=0)  # fmt: skip


def q1a_specs() -> list[RunSpec]:
    study = load_study(ASSIGNMENT)
    return [spec for name in ("q1a_mnist", "q1a_fashion")
            for spec in study.experiment(name).specs()]  # fmt: skip


def shape_of(spec: RunSpec) -> tuple[str, int, str]:
    return spec.model, spec.batch_size, spec.optimizer


def runs_at_once() -> int:
    """What the study file asks of Q1(a): runs per GPU from its num_gpus."""
    share = float(load_study(ASSIGNMENT).experiment("q1a_mnist").resources.get("num_gpus", 1))
    return max(1, round(1 / share))


# --- Groups of runs --------------------------------------------------------------------------


class StartTogether(Reporter):
    """Holds each run at the start of its first epoch until all of the group are there, and
    notes when each run's training began and ended (the group's training window)."""

    def __init__(self, barrier: threading.Barrier | None) -> None:
        self.barrier, self.began, self.ended = barrier, None, None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.barrier is not None and self.began is None:
            self.barrier.wait(timeout=300)
        self.began = self.began or time.time()

    def end_epoch(self, summary: dict[str, object]) -> None:
        self.ended = time.time()


def run_group(specs: list[RunSpec], data: dict, at_once: int, together: bool,
              checkpoints: Path | None = None) -> list[tuple[RunResult, StartTogether]]:  # fmt: skip
    """The specs sharing the GPU `at_once` at a time (sharedgpu.py), each with its reporter."""
    barrier = threading.Barrier(len(specs)) if together else None
    reporters = [StartTogether(barrier) for _ in specs]

    def work(spec: RunSpec, reporter: StartTogether) -> RunResult:
        try:
            return run_spec(spec, data[spec.dataset], checkpoints, reporter)
        except BaseException:
            if barrier is not None:
                barrier.abort()  # the others must not wait for a run that will never start
            raise

    works: list[Callable[[], RunResult]] = [
        (lambda s=spec, r=reporter: work(s, r))
        for spec, reporter in zip(specs, reporters, strict=True)
    ]
    outcomes = run_sharing_gpu(works, at_once)
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if errors:
        raise RuntimeError(f"{len(errors)} run(s) failed; first: {errors[0]!r}") from errors[0]
    return list(zip(outcomes, reporters, strict=True))  # type: ignore[arg-type]


def window_rate(group: list[tuple[RunResult, StartTogether]]) -> float:
    """Total training img/s over the group's training window: from the first run's start to
    the end of the last one's training (its own synchronised train time after its start;
    evaluations after training are no part of it)."""
    images = sum(sum(e.images for e in result.history) for result, _ in group)
    began = min(reporter.began for _, reporter in group)
    ended = max(reporter.began + result.train_seconds for result, reporter in group)
    return images / (ended - began)


def row(result: RunResult) -> dict[str, Any]:
    spec = RunSpec.from_dict(result.spec)
    concurrency = result.environment.get("concurrency", {})
    return {
        "shape": "/".join(map(str, shape_of(spec))), "dataset": spec.dataset, "epochs": spec.epochs,
        "status": result.status, "test_accuracy": result.test_accuracy,
        "val_accuracy": result.val_accuracy, "train_seconds": round(result.train_seconds, 2),
        "images_per_second": round(result.images_per_second or 0, 1),
        "ms_per_step": round(1000 * result.train_seconds
                             / sum(count_batches(e.images, spec.batch_size) for e in result.history), 3),
        "eval_seconds": round(result.eval_seconds or 0, 2),
        "life_seconds": concurrency.get("life_seconds"),
        "mean_runs_on_same_gpu": concurrency.get("mean_runs_on_same_gpu"),
        "cuda_graphs": result.protocol.get("cuda_graphs"),
        "cuda_graphs_reason": result.protocol.get("cuda_graphs_reason"),
        "memory_format": result.protocol.get("memory_format"),
    }  # fmt: skip


# --- Phases ----------------------------------------------------------------------------------


def study_spec(model: str, batch: int, optimizer: str, lr: float = 1e-3) -> RunSpec:
    """The Q1(a) MNIST run of this shape, as the study file defines it."""
    for spec in q1a_specs():
        if (spec.dataset, *shape_of(spec), spec.lr) == ("mnist", model, batch, optimizer, lr):
            return spec
    raise LookupError(f"no Q1(a) MNIST run {model}/B{batch}/{optimizer}/lr {lr}")


def phase_sharing(lane: Lane, data: dict, levels: tuple[int, ...], steps: int) -> dict:
    """k ResNet-18 B16 runs started together: the total training rate, and each run's own."""
    base = lane.shrink(study_spec("resnet18", 16, "sgd"))
    base = base.replace(  # the official split: no 7k validation pass after the timed steps
        split="official", epochs=1, eval_each_epoch=False, test_limit=256,
        train_limit=base.train_limit if lane.smoke else steps * 16,
    )  # fmt: skip
    rows = []
    eager = run_group([base.replace(cuda_graphs="off")], data, 1, together=True)
    rows.append({"runs": 1, "form": "eager, alone (today)",
                 "total_images_per_second": round(window_rate(eager), 1)})  # fmt: skip
    for k in levels:
        if lane.left() < 45:
            rows.append({"runs": k, "skipped": "out of time"})
            continue
        group = run_group([base.replace(seed=i) for i in range(k)], data, k, together=True)
        captured = all(r.protocol.get("cuda_graphs") == "on" for r, _ in group)
        rows.append({
            "runs": k, "form": f"{'captured' if captured else 'eager'}, threads + streams",
            "total_images_per_second": round(window_rate(group), 1),
            "own_images_per_second": [round(r.images_per_second, 1) for r, _ in group],
            "mean_runs_on_same_gpu": [r.environment["concurrency"]["mean_runs_on_same_gpu"]
                                      for r, _ in group],
        })  # fmt: skip
    if lane.left() > 90 and not lane.smoke:
        rows.append(process_sharing(base, lane.results["data_root"], 4))
    today = rows[0]["total_images_per_second"]
    for entry in rows:
        if "total_images_per_second" in entry:
            entry["vs_eager_alone"] = round(entry["total_images_per_second"] / today, 2)
    best = max((r for r in rows if "total_images_per_second" in r and r["form"] != rows[0]["form"]),
               key=lambda r: r["total_images_per_second"])  # fmt: skip
    summary = {"best": f"{best['runs']} runs ({best['form']}): {best['total_images_per_second']} "
                       f"img/s, {best['vs_eager_alone']}x eager alone"}  # fmt: skip
    lane.record("sharing", {"rows": rows, "summary": summary})
    return {"eager_alone": today, "best": best}


def _process_run(spec_dict: dict, root: str, barrier: Any, results: Any) -> None:
    """One of k processes sharing the GPU: trains after all k are ready, reports its window."""
    try:
        spec = RunSpec.from_dict(spec_dict)
        reporter = StartTogether(barrier)
        result = run_spec(spec, load_dataset(spec.dataset, root), None, reporter)
        results.put((reporter.began, reporter.ended, sum(e.images for e in result.history)))
    except BaseException as exc:
        barrier.abort()
        results.put(repr(exc))


def process_sharing(base: RunSpec, root: str, k: int) -> dict[str, Any]:
    """The same k runs as separate processes (time-sliced on the GPU, without MPS)."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(k), context.Queue()
    workers = [context.Process(target=_process_run,
                               args=(base.replace(seed=i).to_dict(), root, barrier, results))
               for i in range(k)]  # fmt: skip
    for worker in workers:
        worker.start()
    try:
        windows = [results.get(timeout=240) for _ in workers]
    except queue.Empty:
        windows = ["no result within 240 s"]
    for worker in workers:
        worker.join(timeout=30)
        if worker.is_alive():
            worker.kill()
    errors = [w for w in windows if isinstance(w, str)]
    if errors:
        return {"runs": k, "form": "processes", "skipped": errors[0]}
    began, ended = min(w[0] for w in windows), max(w[1] for w in windows)
    return {
        "runs": k,
        "form": "captured, processes",
        "total_images_per_second": round(sum(w[2] for w in windows) / (ended - began), 1),
    }


def phase_q2(lane: Lane, data: dict, checkpoints: Path) -> dict[tuple, dict[str, Any]]:
    """Q2's GPU rows as the study file defines them, alone, for real."""
    from mnistbench import published

    specs = [lane.shrink(s) for s in load_study(ASSIGNMENT).experiment("q2_devices").specs()
             if s.device == "cuda"]  # fmt: skip
    rows = {}
    for spec in sorted(specs, key=lambda s: s.model):
        [(result, _)] = run_group([spec], data, 1, together=False, checkpoints=checkpoints)
        reference = published.Q2[(spec.model, "cuda")]
        rows[shape_of(spec)] = row(result) | {
            "published_accuracy": reference.accuracy,
            "published_train_seconds": reference.train_seconds,
        }
    lane.record("q2", {"rows": list(rows.values()), "summary": {
        "/".join(map(str, k)): f"{r['test_accuracy']} % in {r['train_seconds']} s "
        f"(published {r['published_accuracy']} % in {r['published_train_seconds']} s)"
        for k, r in rows.items()}})  # fmt: skip
    return rows


def slice_specs(lane: Lane) -> list[RunSpec]:
    """One run of each of the 8 Q1(a) shapes on MNIST (lr 1e-3), one epoch each, but the
    accuracy shape for its 5 published epochs."""
    specs = []
    for model in ("resnet18", "resnet50"):
        for batch in (16, 32):
            for optimizer in ("sgd", "adam"):
                spec = study_spec(model, batch, optimizer)
                if (model, batch, optimizer, 1e-3) != ACCURACY_SHAPE:
                    spec = spec.replace(epochs=1)
                specs.append(lane.shrink(spec))
    return sorted(specs, key=lambda s: -s.epochs * (4 if s.model == "resnet50" else 1))


def rates_by_shape(group: list[tuple[RunResult, StartTogether]]) -> dict[tuple, Any]:
    """Each shape's rates as its run in the group showed them: its training and test rates,
    and as per-run cost what its life held besides (set-up, warm-up, capture, saving)."""
    rates = {}
    for result, _ in group:
        spec = RunSpec.from_dict(result.spec)
        seen = Observation(
            run_work(spec), result.train_seconds, result.eval_seconds,
            result.environment["concurrency"]["life_seconds"],
        )  # fmt: skip
        rates[shape_of(spec)] = rates_from([seen], "a run of the group")
    return rates


def torch_images(spec: RunSpec, sizes) -> tuple[int, int]:
    from mnistbench.engines.torch.prepare import run_images

    return run_images(spec, sizes)


def projected_seconds(specs: list[RunSpec], rates: dict[tuple, Any], at_once: int) -> float:
    seconds = [rates[shape_of(spec)].seconds(run_work(spec)) for spec in specs]
    return gpu_lane_seconds(seconds, at_once, [])


def phase_probe(lane: Lane, data: dict, at_once: int, steps: int) -> dict[tuple, Any]:
    """The 8 shapes for a few hundred steps, sharing as the slice will: their rates."""
    specs = [spec.replace(epochs=1, test_limit=spec.test_limit if lane.smoke else 2048,
                          train_limit=spec.train_limit if lane.smoke else steps * spec.batch_size)
             for spec in slice_specs(lane)]  # fmt: skip
    for spec in specs:  # each shape's layout timed alone first, as a study's first run would
        sizes = run_sizes(spec)
        choose_layout(spec, lane.device, work=torch_images(spec, sizes))
    group = run_group(specs, data, at_once, together=False)
    lane.record("probe", {"at_once": at_once, "rows": [row(r) for r, _ in group],
                          "summary": {"runs": len(group), "at_once": at_once}})  # fmt: skip
    return rates_by_shape(group)


def phase_slice(lane: Lane, data: dict, at_once: int, probe: dict, checkpoints: Path) -> dict:
    specs = slice_specs(lane)
    projected = projected_seconds(specs, probe, at_once) if probe else float("nan")
    group = run_group(specs, data, at_once, together=False, checkpoints=checkpoints)
    # The GPU never idles between the slice's runs: the last one's group is the whole slice.
    wall = max(r.environment["concurrency"]["group_wall_seconds"] for r, _ in group)
    images = sum(sum(e.images for e in r.history) for r, _ in group)
    accuracy = next(r.test_accuracy for r, _ in group
                    if (*shape_of(RunSpec.from_dict(r.spec)), r.spec["lr"]) == ACCURACY_SHAPE)  # fmt: skip
    summary = {"at_once": at_once, "wall_seconds": wall, "projected_seconds": round(projected, 1),
               "projection_error": f"{100 * (projected - wall) / wall:+.1f} %",
               "total_images_per_second_wall": round(images / wall, 1),
               "resnet18_mnist_b32_sgd_5_epochs_test_accuracy": accuracy}  # fmt: skip
    lane.record("slice", {"rows": [row(r) for r, _ in group], "summary": summary})
    return {"rates": rates_by_shape(group), "summary": summary}


def phase_lane(lane: Lane, at_once: int, rates: dict, q2: dict) -> None:
    """The 32 Q1(a) runs at the slice's rates, `at_once` at a time, then Q2's GPU rows: as
    measured alone, or (when their phase did not run) projected from the slice's rates of
    their shape, which ran sharing the GPU and so make the line an upper bound."""
    q1a = [lane.shrink(spec) for spec in q1a_specs()]
    shared = projected_seconds(q1a, rates, at_once)
    if q2:
        alone, how = sum(r["life_seconds"] for r in q2.values()), "alone, measured"
    else:
        rows = [lane.shrink(s) for s in load_study(ASSIGNMENT).experiment("q2_devices").specs()
                if s.device == "cuda"]  # fmt: skip
        alone, how = projected_seconds(rows, rates, 1), "projected from the slice (shared) rates"
    total = shared + alone
    line = (f"GPU lane of configs/assignment.toml on one {lane.results['device']}: "
            f"{total / 60:.1f} min ({len(q1a)} Q1(a) runs {at_once} at a time: "
            f"{shared / 60:.1f} min; Q2's 2 GPU rows {how}: {alone / 60:.1f} min)")  # fmt: skip
    lane.record("lane", {"q1a_runs": len(q1a), "at_once": at_once, "q1a_seconds": round(shared),
                         "q2_seconds": round(alone), "q2": how, "total_seconds": round(total),
                         "summary": line})  # fmt: skip


# Seconds each phase needs at least on an H200 (its start would be wasted with less left).
PHASE_SECONDS = {"probe": 40.0, "slice": 120.0, "q2": 90.0}


def run_phases(lane: Lane, data: dict, at_once: int, only: set[str], checkpoints: Path) -> None:
    """The phases in the order of what the issue's targets need most, each guarded (a failure
    is that phase's record, and the next goes on) and skipped when too little time is left."""

    def room(phase: str) -> bool:
        if lane.smoke or lane.left() >= PHASE_SECONDS[phase]:
            return True
        lane.record(phase, {"skipped": f"out of time ({lane.left():.0f} s left)"})
        return False

    if "sharing" in only:
        levels = (1, 2) if lane.smoke else (1, 2, 4, 8)
        guarded(lane, "sharing", None, phase_sharing, data, levels, 300)
    probe = {}
    if only & {"probe", "slice"} and room("probe"):
        probe = guarded(lane, "probe", {}, phase_probe, data, at_once, 250)
    measured = {}
    if only & {"slice", "lane"} and room("slice"):
        measured = guarded(lane, "slice", {}, phase_slice, data, at_once, probe, checkpoints)
    q2 = {}
    if only & {"q2", "lane"} and room("q2"):
        q2 = guarded(lane, "q2", {}, phase_q2, data, checkpoints)
    if "lane" in only and measured:
        guarded(lane, "lane", None, phase_lane, at_once, measured["rates"], q2)


# --- Output and main -------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# GPU lane on {results['device']}", "",
             f"torch {results['environment']['torch']}, CUDA {results['environment'].get('cuda')}, "
             f"CPU {results['environment']['cpu']}; {results.get('elapsed_seconds')} s in all", ""]  # fmt: skip
    for phase, values in results["phases"].items():
        lines += [f"## {phase}", "", f"{values.get('summary')}", ""]
        rows = values.get("rows") or []
        if rows and isinstance(rows[0], dict):
            keys = list(dict.fromkeys(k for r in rows for k in r))
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = machine_arguments(__doc__, "gpu_lane", 300.0, PHASES)
    parser.add_argument("--at-once", type=int, default=None,
                        help="Q1(a) runs sharing the GPU (default: the study file's num_gpus)")  # fmt: skip
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu-lane: no CUDA GPU on this machine; nothing was measured", file=sys.stderr)
        return 1
    lane = Lane(args.out, args.budget, torch.device(args.device), args.smoke)
    root = prepare_data(args.pack)
    lane.results["data_root"] = str(root)
    data = {name: load_dataset(name, root) for name in ("mnist", "fashion-mnist")}
    at_once = args.at_once or runs_at_once()
    with tempfile.TemporaryDirectory() as checkpoints:
        run_phases(lane, data, at_once, set(args.only), Path(checkpoints))
    print(f"gpu-lane: {args.out / 'gpu_lane.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU check: prove mnistbench's CUDA paths and measure them, in one run of under 8 minutes.

    make gpu-pack                                  # here: the datasets as .gz, into gpu-pack/
    PYTHONPATH=src python benchmarks/gpu_check.py OUT --pack gpu-pack   # on the GPU machine

Phases, each written to OUT/gpu_check.json and OUT/gpu_check.md as soon as it ends (a run cut
short keeps what it measured):
  tests       the CUDA-only tests (tests/test_cuda.py) and the two tests that must also pass on
              a GPU machine run from src/ (killed-run resume, study with a CUDA row)
  throughput  ResNet-18/50 at the published protocol (224x224x3, fp16 AMP + GradScaler) at
              batch 16 and 32, through the published DataLoader (pin_memory) and the memory
              loader: img/s, peak GPU memory, loss checked finite
  resume      an AMP run stopped after epoch 1 and resumed: the GradScaler state comes back
  q2          the Q2 GPU rows of configs/assignment.toml for real (ResNet-50 on a subset if its
              two epochs do not fit the budget; the result says so)
  sharing     total img/s of 1, 2 and 4 runs sharing the GPU at batch 16 (processes)
  cpu         this machine's CPU img/s at 224 px, for the projection's Q2 CPU rows
  projection  the whole configs/assignment.toml on this machine, from the numbers above
Without a GPU it says so in one line and exits 1. `--device cpu --smoke` runs every phase but
the tests on tiny sizes, to check the script itself on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mnistbench import published  # noqa: E402
from mnistbench.checkpoint import checkpoint_path, load_checkpoint  # noqa: E402
from mnistbench.config import RunSpec  # noqa: E402
from mnistbench.data import load_dataset  # noqa: E402
from mnistbench.data.fetch import fetch_dataset  # noqa: E402
from mnistbench.data.registry import DATASETS  # noqa: E402
from mnistbench.estimate import RunCost, makespan, shared_makespan, torch_run_images  # noqa: E402
from mnistbench.measure import cpu_model, device_name, environment  # noqa: E402
from mnistbench.progress import Reporter  # noqa: E402
from mnistbench.runner import run_spec  # noqa: E402
from mnistbench.studyfile import load_study  # noqa: E402
from mnistbench.train_torch import run  # noqa: E402

SMOKE = False  # set by --smoke: tiny sizes, to check this script on a CPU
PHASES = ("tests", "throughput", "resume", "q2", "sharing", "cpu", "projection")
ASSIGNMENT = REPO / "configs" / "assignment.toml"
SPLIT_SIZES = {"train": 49_000, "val": 7_000, "test": 14_000}  # the 70/10/20 split of 70k
PROTOCOL = {  # the published protocol (configs/assignment.toml's defaults)
    "split": "assignment", "image_size": 224, "channels": 3, "stem": "imagenet", "amp": "cuda",
    "weight_decay": 5e-4, "momentum": 0.9, "lr_schedule": "none", "eval_each_epoch": False,
}  # fmt: skip


class Check:
    """Results so far, rewritten to OUT after every phase; the time budget left."""

    def __init__(self, out: Path, budget: float, device: torch.device, smoke: bool) -> None:
        self.out, self.budget, self.device, self.smoke = out, budget, device, smoke
        self.started = time.perf_counter()
        self.results: dict[str, Any] = {
            "device": device_name(device),
            "environment": environment(device),
            "budget_seconds": budget,
            "smoke": smoke,
            "phases": {},
        }
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def record(self, phase: str, values: dict[str, Any]) -> None:
        values["seconds"] = round(values.get("seconds", 0.0), 1)
        self.results["phases"][phase] = values
        self.results["elapsed_seconds"] = round(time.perf_counter() - self.started, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2, default=str))
        (self.out / "gpu_check.md").write_text(markdown(self.results))
        print(f"[{self.results['elapsed_seconds']:6.1f} s] {phase}: {summary(phase, values)}",
              flush=True)  # fmt: skip


def engine_spec(model: str, batch: int, loader: str, steps: int, device: str, **extra) -> RunSpec:
    """A published-protocol run of `steps` steps on MNIST (SGD, lr 1e-3), evaluated on 1024
    test images; `extra` overrides any field."""
    values = {
        "dataset": "mnist", "model": model, "batch_size": batch, "epochs": 1, "optimizer": "sgd",
        "lr": 1e-3, "device": device, "loader": loader, "pin_memory": loader != "memory",
        "num_workers": 2 if loader != "memory" else 0, "train_limit": steps * batch,
        "test_limit": 1024, **PROTOCOL,
    }  # fmt: skip
    if SMOKE:  # no 7k-image validation pass at 224 px on a CPU, and a small test pass
        values |= {"split": "official", "test_limit": 64, "amp": False}
    return RunSpec(**{**values, **extra})


# --- phases -------------------------------------------------------------------------------------


TEST_SELECTIONS = {
    # The CUDA-only tests, and the study test that must find its CUDA row done on a GPU machine.
    "cuda": [
        "tests/test_cuda.py",
        "tests/test_study.py::test_runs_what_is_missing_and_records_failures_and_skips",
    ],
    # CPU only (one thread), so it runs in the background beside the GPU phases.
    "killed_run_from_src": ["tests/test_train_torch.py::test_killed_run_resumes_bit_exact"],
}


def start_tests(name: str, data_root: Path) -> subprocess.Popen:
    """pytest on one selection, with PYTHONPATH=src as on a machine where nothing is installed."""
    env = {**os.environ, "MNISTBENCH_DATA": str(data_root),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"),
                                                       os.environ.get("PYTHONPATH")]))}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=short", "-rfE",
               *TEST_SELECTIONS[name]]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def finish_tests(process: subprocess.Popen, timeout: float) -> dict[str, Any]:
    try:
        output, _ = process.communicate(timeout=max(timeout, 5.0))
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        return {"ok": False, "returncode": None, "tail": ["timed out", *output.splitlines()[-10:]]}
    return {"ok": process.returncode == 0, "returncode": process.returncode,
            "tail": output.strip().splitlines()[-60:]}  # fmt: skip


def guarded(check: Check, name: str, default: Any, phase, *args: Any) -> Any:
    """Run a phase; a crash is recorded as that phase's failure and the check goes on."""
    started = time.perf_counter()
    try:
        return phase(check, *args)
    except Exception as exc:
        check.record(name, {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc().splitlines()[-30:],
                            "seconds": time.perf_counter() - started})  # fmt: skip
        return default


def phase_tests(check: Check, parts: dict[str, dict[str, Any]], started: float) -> None:
    check.record("tests", {**parts, "ok": all(part["ok"] for part in parts.values()),
                           "seconds": time.perf_counter() - started})  # fmt: skip


def throughput_row(result, spec: RunSpec, steps: int) -> dict[str, Any]:
    """One measured configuration; a diverged run is a row too, with its message."""
    entry = result.history[0]
    loss = entry.train_loss if entry.train_loss is not None else float("nan")
    return {
        "model": spec.model, "batch": spec.batch_size, "loader": spec.loader,
        "optimizer": spec.optimizer, "status": result.status, "message": result.message,
        "images_per_second": round(result.images_per_second or 0.0, 1),
        "eval_images_per_second": round(spec.test_limit / result.eval_seconds, 1)
        if result.eval_seconds else None,
        "steps": steps, "train_seconds": round(result.train_seconds, 2),
        "peak_memory_gib": round((result.peak_memory_bytes or 0) / 2**30, 2),
        "loss": round(loss, 4), "loss_finite": math.isfinite(loss),
        "loss_scale": entry.loss_scale,
        "memory_format": result.protocol["memory_format"], "precision": result.precision,
    }  # fmt: skip


def phase_throughput(check: Check, mnist, steps: dict[str, int]) -> dict:
    started = time.perf_counter()
    rows, diagnosis = [], None
    for model in ("resnet18", "resnet50"):
        for batch in (16, 32):
            for loader in ("dataloader", "memory"):
                spec = engine_spec(model, batch, loader, steps[model], str(check.device))
                rows.append(throughput_row(run(spec, mnist), spec, steps[model]))
                print(f"  {rows[-1]}", flush=True)
                if not rows[-1]["loss_finite"] and diagnosis is None:
                    diagnosis = diagnose_divergence(spec, mnist)
    ok = all(row["loss_finite"] for row in rows)
    check.record("throughput", {"ok": ok, "rows": rows, "divergence_diagnosis": diagnosis,
                                "seconds": time.perf_counter() - started})  # fmt: skip
    return {(r["model"], r["batch"], r["loader"]): r for r in rows if r["loss_finite"]}


def diagnose_divergence(spec: RunSpec, mnist) -> list[dict[str, Any]]:
    """The diverged configuration again with one thing changed at a time (60 steps each)."""
    from mnistbench import recipe  # make_training looks make_optimizer up there

    variants: list[tuple[str, dict[str, Any]]] = [
        ("as is", {}), ("contiguous", {"memory_format": "contiguous"}), ("fp32", {"amp": False}),
        ("adam", {"optimizer": "adam"}),
        ("memory loader", {"loader": "memory", "num_workers": 0, "pin_memory": False}),
        ("no weight decay", {"weight_decay": 0.0}), ("28 px, 1 channel", {"image_size": 28, "channels": 1}),
    ]  # fmt: skip
    short = spec.replace(train_limit=60 * spec.batch_size)
    outcome = []
    original = recipe.make_optimizer

    def unfused(spec_: RunSpec, model: torch.nn.Module, device: torch.device, **kwargs: Any):
        return original(spec_, model, torch.device("meta"))  # "meta": no fused kernel asked for

    for name, change in [*variants, ("unfused optimizer", {})]:
        if name == "unfused optimizer":
            recipe.make_optimizer = unfused
        try:
            result = run(short.replace(**change), mnist)
            outcome.append({"variant": name, "status": result.status, "message": result.message,
                            "loss": result.history[0].train_loss})  # fmt: skip
        except Exception as exc:
            outcome.append({"variant": name, "status": "error", "message": repr(exc)})
        finally:
            recipe.make_optimizer = original
        print(f"    diagnosis {outcome[-1]}", flush=True)
    return outcome


class _StopAtEpoch(Reporter):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt  # the previous epoch's checkpoint is on disk now


def phase_resume(check: Check, mnist, steps: int) -> None:
    started = time.perf_counter()
    spec = engine_spec("resnet18", 32, "dataloader", steps, str(check.device), epochs=2)
    with tempfile.TemporaryDirectory() as directory:
        ckpt_dir = Path(directory)
        with contextlib.suppress(KeyboardInterrupt):
            run(spec, mnist, checkpoint_dir=ckpt_dir, reporter=_StopAtEpoch(2))
        state = load_checkpoint(checkpoint_path(ckpt_dir, spec), spec)
        saved = state["scaler"] if state else None
        resumed = run(spec, mnist, checkpoint_dir=ckpt_dir)
    restored_scale = resumed.history[0].loss_scale
    values = {
        "saved_scaler": saved,
        "resumed_from_epoch": resumed.resumed_from_epoch,
        "status": resumed.status,
        "epoch1_loss_scale_after_resume": restored_scale,
        "epoch2_loss_scale": resumed.history[-1].loss_scale,
        "test_accuracy": resumed.test_accuracy,
        "seconds": time.perf_counter() - started,
    }
    on_cuda = check.device.type == "cuda"
    values["ok"] = (
        resumed.status == "ok"
        and resumed.resumed_from_epoch == 1
        and (not on_cuda or (saved is not None and restored_scale == saved.get("scale")))
    )
    check.record("resume", values)


def phase_q2(check: Check, fashion, throughput: dict, smoke: bool) -> dict:
    """The Q2 GPU rows as configs/assignment.toml defines them, through the study's engine."""
    started = time.perf_counter()
    specs = [s for s in load_study(ASSIGNMENT).experiment("q2_devices").specs()
             if s.device == "cuda"]  # fmt: skip
    rows = []
    for spec in sorted(specs, key=lambda s: s.model):
        smoke = {"split": "official", "test_limit": 64, "amp": False} if SMOKE else {}
        spec = spec.replace(device=str(check.device), **smoke)
        measured = throughput.get((spec.model, spec.batch_size, spec.loader), {})
        rate = measured.get("images_per_second", 500.0)  # a guess only if throughput failed
        full = spec.epochs * SPLIT_SIZES["train"]
        reserve = 200.0  # for resume, sharing, cpu, projection and the tests after this phase
        affordable = int(max(check.left() - reserve, 10.0) * rate * 0.8)
        subset = None
        if smoke:
            subset = 2 * spec.batch_size
        elif full > affordable and spec.model != "resnet18":  # ResNet-18's row always in full
            subset = max(spec.batch_size * 20, affordable // spec.epochs)
        if subset is not None:
            spec = spec.replace(train_limit=subset)
        with tempfile.TemporaryDirectory() as directory:
            result = run_spec(spec, fashion, Path(directory))
            model_loads_on_cpu = (
                _loads_on_cpu(Path(result.model_path)) if result.model_path else False
            )
        reference = published.Q2[(spec.model, "cuda")]
        rows.append({
            "model": spec.model, "train_images": result.history[-1].images * spec.epochs,
            "subset": subset, "status": result.status, "test_accuracy": result.test_accuracy,
            "train_ms": round(1000 * result.train_seconds),
            "images_per_second": round(result.images_per_second, 1),
            "gmacs_per_image": round(result.macs_per_image / 1e9, 3),
            "published_accuracy": reference.accuracy,
            "published_train_ms": round(1000 * reference.train_seconds),
            "model_loads_on_cpu": model_loads_on_cpu,
            "loss_scale": result.history[-1].loss_scale,
        })  # fmt: skip
        print(f"  {rows[-1]}", flush=True)
    ok = all(row["status"] == "ok" and row["model_loads_on_cpu"] for row in rows)
    check.record("q2", {"ok": ok, "rows": rows, "seconds": time.perf_counter() - started})
    return {row["model"]: row for row in rows}


def _loads_on_cpu(path: Path) -> bool:
    saved = torch.load(path, weights_only=False)  # no map_location: CUDA tensors would stay
    return {tensor.device.type for tensor in saved["model"].values()} == {"cpu"}


def _sharing_worker(device: str, root: str, steps: int, smoke: bool, barrier, results) -> None:
    """One of k runs sharing the GPU: trains after all k have warmed up, reports its window."""
    global SMOKE
    SMOKE = smoke

    class Window(Reporter):
        def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
            barrier.wait(timeout=300)
            self.began = time.time()

        def end_epoch(self, summary: dict[str, object]) -> None:
            self.ended = time.time()

    window = Window()
    torch.set_num_threads(2)
    spec = engine_spec("resnet18", 16, "dataloader", steps, device, threads=2)
    try:
        result = run(spec, load_dataset("mnist", root), reporter=window)
        if result.status != "ok":
            raise RuntimeError(f"{result.status}: {result.message}")
        results.put((window.began, window.ended, result.history[0].images))
    except BaseException as exc:  # the driver must hear of it, not wait for a window
        barrier.abort()  # release the other runs waiting to start together
        results.put(f"{type(exc).__name__}: {exc}")


def phase_sharing(check: Check, root: Path, steps: int, levels: tuple[int, ...]) -> dict:
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    rows = []
    for k in levels:
        if check.left() < 60:
            rows.append({"runs": k, "skipped": "out of time"})
            continue
        barrier, results = context.Barrier(k), context.Queue()
        workers = [context.Process(target=_sharing_worker,
                                   args=(str(check.device), str(root), steps, check.smoke,
                                         barrier, results))
                   for _ in range(k)]  # fmt: skip
        for worker in workers:
            worker.start()
        try:
            windows = [results.get(timeout=max(check.left(), 30.0)) for _ in workers]
        except queue.Empty:
            windows = ["no result in time"]
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
        errors = [w for w in windows if isinstance(w, str)]
        if errors:
            rows.append({"runs": k, "skipped": "; ".join(sorted(set(errors)))})
            continue
        began, ended = min(w[0] for w in windows), max(w[1] for w in windows)
        images = sum(w[2] for w in windows)
        rows.append({"runs": k, "total_images_per_second": round(images / (ended - began), 1),
                     "per_run_images_per_second": round(images / k / (ended - began), 1)})  # fmt: skip
        print(f"  {rows[-1]}", flush=True)
    measured = [row for row in rows if "total_images_per_second" in row]
    alone = measured[0]["total_images_per_second"] if measured else None
    for row in measured:
        row["speedup_vs_one"] = round(row["total_images_per_second"] / alone, 2)
    best = max(measured, key=lambda row: row["total_images_per_second"]) if measured else None
    check.record("sharing", {"ok": bool(measured), "rows": rows, "best_runs": best and best["runs"],
                             "seconds": time.perf_counter() - started})  # fmt: skip
    return {row["runs"]: row for row in measured}


def phase_cpu(check: Check, mnist, smoke: bool) -> dict:
    """CPU training img/s at the Q2 protocol (224 px, batch 32, fp32 as published on CPU)."""
    started = time.perf_counter()
    rows = {}
    for model, steps in (("resnet18", 2 if smoke else 6), ("resnet50", 1 if smoke else 3)):
        spec = engine_spec(model, 32, "memory", steps, "cpu", amp=False,
                           threads=torch.get_num_threads(), test_limit=64)  # fmt: skip
        result = run(spec, mnist)
        rows[model] = {"images_per_second": round(result.images_per_second, 2),
                       "eval_images_per_second": round(64 / result.eval_seconds, 1),
                       "threads": spec.threads}  # fmt: skip
    check.record("cpu", {"ok": True, "cpu": cpu_model(), "rows": rows,
                         "seconds": time.perf_counter() - started})  # fmt: skip
    return rows


def phase_projection(check: Check, throughput: dict, sharing: dict, cpu: dict) -> None:
    """The whole configs/assignment.toml on this machine: GPU runs sharing the GPU at the best
    measured level, CPU runs (SVMs, Q2 CPU rows) beside them on the CPU."""
    started = time.perf_counter()
    study = load_study(ASSIGNMENT)
    gpu_seconds, cpu_resnet_seconds, svm_seconds = [], [], []
    n = SPLIT_SIZES
    for experiment in study.experiments:
        for spec in experiment.specs():
            if spec.is_svm:
                svm_seconds.append(published.SVM[(spec.dataset, spec.kernel)].train_seconds)
                continue
            train, evaluated = torch_run_images(spec.epochs, n["train"], n["val"], n["test"],
                                                spec.eval_each_epoch)  # fmt: skip
            if spec.device == "cpu":
                rates = cpu[spec.model]
                cost = RunCost(spec.key(), train, evaluated, rates["images_per_second"],
                               rates["eval_images_per_second"])  # fmt: skip
                cpu_resnet_seconds.append(cost.seconds)
                continue
            rates = throughput[(spec.model, spec.batch_size, spec.loader)]
            cost = RunCost(spec.key(), train, evaluated, rates["images_per_second"],
                           rates["eval_images_per_second"], overhead_seconds=10.0)  # fmt: skip
            gpu_seconds.append(cost.seconds)
    best = max(sharing.values(), key=lambda row: row["total_images_per_second"])
    gpu_alone = makespan(gpu_seconds, 1)
    gpu_shared = shared_makespan(gpu_seconds, best["runs"], best.get("speedup_vs_one", 1.0))
    # CPU lane: the ResNets on all cores one after another; the single-threaded SVMs beside them.
    cpu_lane = max(sum(cpu_resnet_seconds), makespan(svm_seconds, len(svm_seconds)))
    values = {
        "ok": True,
        "gpu_runs": len(gpu_seconds),
        "gpu_seconds_one_at_a_time": round(gpu_alone),
        "gpu_runs_at_once": best["runs"],
        "gpu_seconds_shared": round(gpu_shared),
        "cpu_resnet_seconds": [round(s) for s in cpu_resnet_seconds],
        "svm_seconds_published": svm_seconds,
        "cpu_lane_seconds": round(cpu_lane),
        "study_wall_seconds": round(max(gpu_shared, cpu_lane)),
        "study_wall_seconds_without_q2_cpu": round(max(gpu_shared, max(svm_seconds))),
        "assumptions": "GPU runs at the measured img/s of their (model, batch, loader) with the "
        "sharing speedup measured for ResNet-18 batch 16 applied to all; 10 s start-up per GPU run; "
        "SVM times are the published ones (sklearn, one core each, in parallel); Q2 CPU rows at "
        "the measured CPU img/s, one after another on all cores",
        "seconds": time.perf_counter() - started,
    }
    check.record("projection", values)


# --- output -------------------------------------------------------------------------------------


def summary(phase: str, values: dict[str, Any]) -> str:
    if phase == "projection":
        return (f"assignment.toml ≈ {values['study_wall_seconds'] / 60:.1f} min "
                f"(GPU lane {values['gpu_seconds_shared'] / 60:.1f} min with "
                f"{values['gpu_runs_at_once']} at once, CPU lane {values['cpu_lane_seconds'] / 60:.1f} min)")  # fmt: skip
    return f"{'ok' if values.get('ok') else 'FAILED'} in {values['seconds']} s"


def markdown(results: dict[str, Any]) -> str:
    phases = results["phases"]
    lines = [f"# GPU check on {results['device']}", "",
             f"torch {results['environment']['torch']}, CUDA {results['environment'].get('cuda')}, "
             f"driver {results['environment'].get('gpu_driver')}, CPU {results['environment']['cpu']} "
             f"({results['environment']['cpu_count']} cores); {results.get('elapsed_seconds')} s in all", "",
             "| phase | ok | seconds |", "|---|---|---|"]  # fmt: skip
    lines += [
        f"| {name} | {'yes' if v.get('ok') else 'NO'} | {v['seconds']} |"
        for name, v in phases.items()
    ]
    if "throughput" in phases:
        lines += [
            "",
            "| model | batch | loader | img/s | peak GiB | loss |",
            "|---|---|---|---|---|---|",
        ]
        lines += [f"| {r['model']} | {r['batch']} | {r['loader']} | {r['images_per_second']} | "
                  f"{r['peak_memory_gib']} | {r['loss']} |" for r in phases["throughput"]["rows"]]  # fmt: skip
    if "q2" in phases:
        lines += ["", "| Q2 GPU | images | test acc % | train ms | published acc % | published ms |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['model']} | {r['train_images']}{' (subset)' if r['subset'] else ''} | "
                  f"{r['test_accuracy']} | {r['train_ms']:,} | {r['published_accuracy']} | "
                  f"{r['published_train_ms']:,} |" for r in phases["q2"]["rows"]]  # fmt: skip
    if "sharing" in phases:
        lines += [
            "",
            "| runs sharing the GPU | total img/s | per run | vs one |",
            "|---|---|---|---|",
        ]
        lines += [f"| {r['runs']} | {r.get('total_images_per_second', r.get('skipped'))} | "
                  f"{r.get('per_run_images_per_second', '')} | {r.get('speedup_vs_one', '')} |"
                  for r in phases["sharing"]["rows"]]  # fmt: skip
    if "projection" in phases:
        lines += [
            "",
            f"Projected `configs/assignment.toml`: {summary('projection', phases['projection'])}.",
        ]
    return "\n".join(lines) + "\n"


# --- main ---------------------------------------------------------------------------------------


def prepare_data(pack: Path | None) -> Path:
    """Both datasets in a data root: from the pack when given, else the usual root."""
    root = Path(tempfile.mkdtemp(prefix="gpu-check-data-")) if pack else None
    for info in DATASETS.values():
        fetch_dataset(info, root or Path(os.environ.get("MNISTBENCH_DATA", "data")),
                      from_path=pack, log=lambda line: None)  # fmt: skip
    return root or Path(os.environ.get("MNISTBENCH_DATA", "data"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--pack", type=Path, default=None,
                        help="folder of .gz IDX files from `make gpu-pack` (default: the data root)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu with --smoke")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the script itself")
    parser.add_argument("--only", nargs="+", choices=PHASES, default=list(PHASES))
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); "
              "nothing was measured", file=sys.stderr)  # fmt: skip
        return 1
    device = torch.device(args.device)
    global SMOKE
    SMOKE = args.smoke
    check = Check(args.out, args.budget, device, args.smoke)
    root = prepare_data(args.pack)
    mnist, fashion = load_dataset("mnist", root), load_dataset("fashion-mnist", root)
    steps = {"resnet18": 2, "resnet50": 2} if args.smoke else {"resnet18": 300, "resnet50": 200}
    print(f"gpu-check on {check.results['device']}; data in {root}; budget {args.budget:.0f} s",
          flush=True)  # fmt: skip
    only = set(args.only)
    run_tests = "tests" in only and not args.smoke
    if run_tests:  # CPU only, one thread: beside the GPU phases without disturbing them
        tests_started = time.perf_counter()
        background = start_tests("killed_run_from_src", root)
    throughput, sharing, cpu = {}, {}, {}
    if only & {"throughput", "q2", "projection"}:
        throughput = guarded(check, "throughput", {}, phase_throughput, mnist, steps)
    if "q2" in only:
        guarded(check, "q2", None, phase_q2, fashion, throughput, args.smoke)
    if "resume" in only:
        guarded(check, "resume", None, phase_resume, mnist, 4 if args.smoke else 100)
    if only & {"sharing", "projection"}:
        levels = (1, 2) if args.smoke else (1, 2, 4)
        sharing = guarded(
            check, "sharing", {}, phase_sharing, root, 2 if args.smoke else 300, levels
        )
    if only & {"cpu", "projection"}:
        cpu = guarded(check, "cpu", {}, phase_cpu, mnist, args.smoke)
    if "projection" in only and throughput and sharing and cpu:
        guarded(check, "projection", None, phase_projection, throughput, sharing, cpu)
    if run_tests:  # last: the measurements above matter most when the budget runs short
        parts = {"cuda": finish_tests(start_tests("cuda", root), max(check.left(), 60.0))}
        parts["killed_run_from_src"] = finish_tests(background, max(check.left(), 30.0))
        phase_tests(check, parts, tests_started)
    failed = [name for name, values in check.results["phases"].items() if not values.get("ok")]
    print(f"gpu-check: {'all phases ok' if not failed else 'FAILED: ' + ', '.join(failed)}; "
          f"{args.out / 'gpu_check.md'}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

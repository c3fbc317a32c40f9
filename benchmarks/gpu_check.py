"""GPU check: prove mnistbench's CUDA paths and time its step, in under 6 minutes on one H200.

    make gpu-pack                                  # here: the datasets as .gz, into gpu-pack/
    PYTHONPATH=src python benchmarks/gpu_check.py OUT --pack gpu-pack   # on the GPU machine

Phases, each written to OUT/gpu_check.json and OUT/gpu_check.md as soon as it ends (a run cut
short keeps what it measured):
  tests       first, with time reserved: the CUDA tests (tests/engines/torch/test_cuda.py, the captured step
              against the eager one in tests/engines/torch/test_cudagraphs.py) and the tests that must also
              pass on a GPU machine run from src/ (killed-run resume, study with a CUDA row)
  throughput  ResNet-18/50 at the published protocol (224x224x3, fp16 AMP + GradScaler) at
              batch 16 and 32: eager against captured steps (ms per step, img/s), and the memory
              loader against the published pinned DataLoader under capture
  resume      a captured AMP run stopped after epoch 1 and resumed: the GradScaler state returns
  cpu         this machine's CPU img/s at 224 px (the Q2 CPU rows), with no validation pass
The GPU lane (sharing, Q2's GPU rows, a real slice, the projection) is benchmarks/gpu_lane.py.
Without a GPU it says so in one line and exits 1; without --pack on a machine whose data root
lacks the datasets it exits 2 at once, naming `make gpu-pack`. `--device cpu --smoke` runs every
phase but the tests on tiny sizes, to check the script itself on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
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

from mnistbench.config import RunSpec  # noqa: E402
from mnistbench.data import load_dataset  # noqa: E402
from mnistbench.data.fetch import fetch_dataset  # noqa: E402
from mnistbench.data.registry import DATASETS  # noqa: E402
from mnistbench.engines.torch.checkpoint import checkpoint_path, load_checkpoint  # noqa: E402
from mnistbench.engines.torch.train import run  # noqa: E402
from mnistbench.measure import cpu_model, device_name, environment  # noqa: E402
from mnistbench.progress import Reporter  # noqa: E402

SMOKE = False  # set by --smoke: tiny sizes, to check this script on a CPU
PHASES = ("tests", "throughput", "resume", "cpu")
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
        "split": "official",  # the same rates as the 70/10/20 split, without a 7k validation pass
    }  # fmt: skip
    if SMOKE:  # no 7k-image validation pass at 224 px on a CPU, and a small test pass
        values |= {"split": "official", "test_limit": 64, "amp": False, "image_size": 32}
    return RunSpec(**{**values, **extra})


# --- phases -------------------------------------------------------------------------------------


TEST_SELECTIONS = {
    # The CUDA-only tests, and the study test that must find its CUDA row done on a GPU machine.
    "cuda": [
        "tests/engines/torch/test_cuda.py",
        "tests/engines/torch/test_cudagraphs.py",
        "tests/study/test_run.py::test_runs_what_is_missing_and_records_failures_and_skips",
    ],
    # CPU only (one thread), so it runs in the background beside the GPU phases.
    "killed_run_from_src": ["tests/engines/torch/test_train.py::test_killed_run_resumes_bit_exact"],
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
        "cuda_graphs": result.protocol.get("cuda_graphs"),
        "cuda_graphs_reason": result.protocol.get("cuda_graphs_reason"),
        "steps": steps, "train_seconds": round(result.train_seconds, 2),
        "ms_per_step": round(1000 * result.train_seconds / steps, 3),
        "peak_memory_gib": round((result.peak_memory_bytes or 0) / 2**30, 2),
        "loss": round(loss, 4), "loss_finite": math.isfinite(loss),
        "loss_scale": entry.loss_scale,
        "memory_format": result.protocol["memory_format"], "precision": result.precision,
    }  # fmt: skip


# (cuda_graphs, loader) per model: eager and captured on the memory loader, and ResNet-18 captured
# through the published pinned DataLoader too (the loader comparison).
THROUGHPUT_FORMS = {
    "resnet18": [("off", "memory"), ("auto", "memory"), ("auto", "dataloader")],
    "resnet50": [("off", "memory"), ("auto", "memory")],
}


def phase_throughput(check: Check, mnist, steps: dict[str, int]) -> dict:
    started = time.perf_counter()
    rows, diagnosis = [], None
    for model, forms in THROUGHPUT_FORMS.items():
        for batch in (16, 32):
            for graphs, loader in forms:
                spec = engine_spec(model, batch, loader, steps[model], str(check.device),
                                   cuda_graphs=graphs)  # fmt: skip
                rows.append(throughput_row(run(spec, mnist), spec, steps[model]))
                print(f"  {rows[-1]}", flush=True)
                if not rows[-1]["loss_finite"] and diagnosis is None:
                    diagnosis = diagnose_divergence(spec, mnist)
    captured = [row["cuda_graphs"] == "on" for row in rows if row["cuda_graphs"] != "off"]
    on_cuda = check.device.type == "cuda"
    ok = all(row["loss_finite"] for row in rows) and (all(captured) or not on_cuda)
    check.record("throughput", {"ok": ok, "rows": rows, "divergence_diagnosis": diagnosis,
                                "seconds": time.perf_counter() - started})  # fmt: skip
    return {(r["model"], r["batch"], r["loader"], r["cuda_graphs"]): r
            for r in rows if r["loss_finite"]}  # fmt: skip


def diagnose_divergence(spec: RunSpec, mnist) -> list[dict[str, Any]]:
    """The diverged configuration again with one thing changed at a time (60 steps each)."""
    from mnistbench.engines.torch import recipe  # make_training looks make_optimizer up there

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
    """A captured AMP run stopped after epoch 1 and resumed must end its second epoch as the
    same run uninterrupted does: the same loss scale, and the same loss within cuDNN's run to
    run noise (a lost optimizer or GradScaler state shows there)."""
    started = time.perf_counter()
    spec = engine_spec("resnet18", 32, "dataloader", steps, str(check.device), epochs=2)
    # Captured steps fed by the published pinned DataLoader, stopped and resumed: the graphs
    # are captured again around the restored optimizer and GradScaler state.
    with tempfile.TemporaryDirectory() as directory:
        ckpt_dir = Path(directory)
        with contextlib.suppress(KeyboardInterrupt):
            run(spec, mnist, checkpoint_dir=ckpt_dir, reporter=_StopAtEpoch(2))
        state = load_checkpoint(checkpoint_path(ckpt_dir, spec), spec)
        saved = state["scaler"] if state else None
        resumed = run(spec, mnist, checkpoint_dir=ckpt_dir)
    whole = run(spec, mnist)
    second, expected = resumed.history[-1], whole.history[-1]
    values = {
        "saved_scaler": saved,
        "resumed_from_epoch": resumed.resumed_from_epoch,
        "status": resumed.status,
        "epoch2_loss_scale": [second.loss_scale, expected.loss_scale],
        "epoch2_train_loss": [second.train_loss, expected.train_loss],
        "test_accuracy": [resumed.test_accuracy, whole.test_accuracy],
        "cuda_graphs": resumed.protocol.get("cuda_graphs"),
        "seconds": time.perf_counter() - started,
    }
    values["ok"] = (
        resumed.status == "ok" == whole.status
        and resumed.resumed_from_epoch == 1
        and second.loss_scale == expected.loss_scale
        and math.isclose(second.train_loss, expected.train_loss, rel_tol=0.02)
    )
    check.record("resume", values)


def phase_cpu(check: Check, mnist, smoke: bool) -> dict:
    """CPU training img/s at the Q2 protocol (224 px, batch 32, fp32 as published on CPU), on
    the test split alone: no validation pass (it took 114 of this phase's 165 s once)."""
    started = time.perf_counter()
    rows = {}
    for model, steps in (("resnet18", 2 if smoke else 6), ("resnet50", 1 if smoke else 3)):
        spec = engine_spec(model, 32, "memory", steps, "cpu", amp=False, test_limit=64,
                           threads=torch.get_num_threads(), memory_format="contiguous")  # fmt: skip
        result = run(spec, mnist)
        rows[model] = {"images_per_second": round(result.images_per_second, 2),
                       "eval_images_per_second": round(64 / result.eval_seconds, 1),
                       "threads": spec.threads}  # fmt: skip
    check.record("cpu", {"ok": True, "cpu": cpu_model(), "rows": rows,
                         "seconds": time.perf_counter() - started})  # fmt: skip
    return rows


# --- output -------------------------------------------------------------------------------------


def summary(phase: str, values: dict[str, Any]) -> str:
    verdict = f"{'ok' if values.get('ok') else 'FAILED'} in {values['seconds']} s"
    if phase == "throughput" and values.get("rows"):
        steps = {(r["model"], r["batch"], r["cuda_graphs"]): r["ms_per_step"]
                 for r in values["rows"] if r["loader"] == "memory"}  # fmt: skip
        eager, captured = steps.get(("resnet18", 16, "off")), steps.get(("resnet18", 16, "on"))
        verdict += f"; ResNet-18 B16 step {eager} ms eager, {captured} ms captured"
    return verdict


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
        lines += ["", "| model | batch | loader | graphs | ms/step | img/s | peak GiB | loss |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['model']} | {r['batch']} | {r['loader']} | {r['cuda_graphs']} | "
                  f"{r['ms_per_step']} | {r['images_per_second']} | {r['peak_memory_gib']} | "
                  f"{r['loss']} |" for r in phases["throughput"].get("rows", [])]  # fmt: skip
    return "\n".join(lines) + "\n"


# --- main ---------------------------------------------------------------------------------------


def has_network(host: str = "pypi.org", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def prepare_data(pack: Path | None) -> Path:
    """Both datasets in a data root: from the pack when given, else the usual root. Without a
    pack, on a machine whose root lacks them and that cannot reach the network, exit 2 at once
    saying so, instead of trying every source."""
    if pack is None:
        root = Path(os.environ.get("MNISTBENCH_DATA", "data"))
        present = all((root / info.folder / "raw").is_dir() for info in DATASETS.values())
        if not present and not has_network():
            sys.exit(f"gpu-check: the datasets are not in {root} and this machine has no network; "
                     "run `make gpu-pack` where they are and carry gpu-pack/ (--pack gpu-pack)")  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="gpu-check-data-")) if pack else root
    for info in DATASETS.values():
        fetch_dataset(info, root, from_path=pack, log=lambda line: None)
    return root


def machine_arguments(doc: str, name: str, budget: float, phases: tuple[str, ...]):
    """The arguments both GPU scripts take: where results and data are, the time, the device."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("out", type=Path, help=f"folder for {name}.json and {name}.md")
    parser.add_argument("--pack", type=Path, default=None,
                        help="folder of .gz IDX files from `make gpu-pack` (default: the data root)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=budget, help="seconds for all phases")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu with --smoke")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the script itself")
    parser.add_argument("--only", nargs="+", choices=phases, default=list(phases))
    return parser


def main() -> int:
    parser = machine_arguments(__doc__, "gpu_check", 330.0, PHASES)
    parser.add_argument("--tests-seconds", type=float, default=150.0,
                        help="the part of the budget reserved for the tests, which run first")  # fmt: skip
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); "
              "nothing was measured", file=sys.stderr)  # fmt: skip
        return 1
    device = torch.device(args.device)
    global SMOKE
    SMOKE = args.smoke
    root = prepare_data(args.pack)
    check = Check(args.out, args.budget, device, args.smoke)
    mnist = load_dataset("mnist", root)
    steps = {"resnet18": 2, "resnet50": 2} if args.smoke else {"resnet18": 200, "resnet50": 120}
    print(f"gpu-check on {check.results['device']}; data in {root}; budget {args.budget:.0f} s",
          flush=True)  # fmt: skip
    only = set(args.only)
    if "tests" in only and not args.smoke:  # first, in the time reserved for them
        started = time.perf_counter()
        background = start_tests("killed_run_from_src", root)  # CPU only, one thread
        parts = {"cuda": finish_tests(start_tests("cuda", root), args.tests_seconds)}
        parts["killed_run_from_src"] = finish_tests(background, 30.0)
        phase_tests(check, parts, started)
    if "throughput" in only:
        guarded(check, "throughput", {}, phase_throughput, mnist, steps)
    if "resume" in only:
        guarded(check, "resume", None, phase_resume, mnist, 4 if args.smoke else 100)
    if "cpu" in only:
        guarded(check, "cpu", {}, phase_cpu, mnist, args.smoke)
    failed = [name for name, values in check.results["phases"].items() if not values.get("ok")]
    print(f"gpu-check: {'all phases ok' if not failed else 'FAILED: ' + ', '.join(failed)}; "
          f"{args.out / 'gpu_check.md'}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

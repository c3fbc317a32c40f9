"""Hardware efficiency: achieved training FLOP/s as a fraction of this machine's matmul peak.

The peak is measured here, at each precision, with square matmuls (the best case for the
hardware). Training FLOP/s = counted forward+backward FLOPs per image x images/s. Each change
that might raise it is measured on its own, cumulatively, on one training-step loop:

  notebook step     NCHW, for-each optimizer, loss.item() after every step (a host sync)
  - host sync       the same without the per-step .item()
  + fused optimizer one kernel for the whole optimizer step (torch.optim ... fused=True)
  + channels_last   NHWC activations and weights
  + torch.compile   inductor on the model (only with --compile: a minute of compiling per case)

and then the engine itself (train_torch.run, what `mnistbench train` runs, its defaults for
memory format and optimizer) for the number users get. Medians of --repeats runs.

    python benchmarks/efficiency.py --quick
    python benchmarks/efficiency.py --compile
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from mnistbench.data import load_dataset
from mnistbench.data.preprocess import Preprocess
from mnistbench.data.storage import resolve_root
from mnistbench.devices import resolve_device
from mnistbench.engines.torch.models import build_resnet
from mnistbench.engines.torch.recipe import make_precision
from mnistbench.measure import cpu_model, device_name, synchronize
from train_throughput import engine_result  # benchmarks/ is on sys.path as the script's dir

MATMUL_SIZE = 4096


def matmul_peak(dtype: torch.dtype, device: torch.device, seconds: float = 2.0) -> float:
    """FLOP/s of back-to-back square matmuls at `dtype` on `device`, synchronised."""
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, dtype=dtype, device=device)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, dtype=dtype, device=device)
    a @ b  # warm-up: thread pool, packing buffers, cuBLAS handles
    synchronize(device)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(1 if device.type == "cpu" else 50):  # queue enough work on a GPU
            a @ b
            count += 1
        synchronize(device)
    return 2 * MATMUL_SIZE**3 * count / (time.perf_counter() - started)


VARIANTS = ("notebook step", "- host sync", "+ fused optimizer", "+ channels_last", "+ compile")


def step_loop_images_per_second(
    variant: str, model_name: str, images: torch.Tensor, labels: torch.Tensor, size: int,
    batch: int, amp: bool, steps: int, device: torch.device,
) -> float:  # fmt: skip
    """Train `steps` steps (after two untimed ones) with every change up to `variant` applied.

    `images` and `labels` are on `device`; AMP is what the engine runs there (bf16 on CPU, fp16
    with a GradScaler on CUDA, where SGD is never fused: see recipe.make_optimizer)."""
    level = VARIANTS.index(variant)
    precision = make_precision(amp, device)
    channels = 3 if size > 28 else 1
    channels_last = level >= VARIANTS.index("+ channels_last")
    preprocess = Preprocess(0.5, 0.5, size, channels, channels_last=channels_last)
    torch.manual_seed(0)
    model = build_resnet(model_name, channels=channels).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fused = level >= VARIANTS.index("+ fused optimizer") and precision.scaler is None
    optimizer = torch.optim.SGD(
        model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4, fused=fused or None
    )
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if level >= VARIANTS.index("+ compile"):
        forward = torch.compile(model)
    criterion = nn.CrossEntropyLoss()
    sync_every_step = level == 0

    def step(index: int) -> None:
        start = (index * batch) % (len(labels) - batch)
        x = preprocess(images[start : start + batch])
        with precision.autocast(device):
            loss = criterion(forward(x), labels[start : start + batch])
        optimizer.zero_grad(set_to_none=True)
        precision.backward_and_step(loss, optimizer)
        if sync_every_step:
            loss.item()

    for index in range(2):
        step(index)
    synchronize(device)
    started = time.perf_counter()
    for index in range(steps):
        step(index)
    synchronize(device)
    return steps * batch / (time.perf_counter() - started)


def engine_run(
    model: str, size: int, batch: int, amp: bool, steps: int, data, threads: int, device: str
) -> tuple[float, float]:
    """(images/s, training FLOPs per image) of the real engine on `steps` steps."""
    result = engine_result(model, batch, size, amp, steps, data, threads, device)
    return result.images_per_second, result.train_flops / (steps * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load_dataset("mnist", resolve_root(None))
    images, labels = data.train_images[:4096].to(device), data.train_labels[:4096].to(device)

    amp_label = make_precision(True, device).label  # bf16 on CPU, fp16 on CUDA
    amp_dtype = torch.bfloat16 if amp_label == "bf16" else torch.float16
    peaks = {
        "fp32": statistics.median(matmul_peak(torch.float32, device) for _ in range(repeats)),
        amp_label: statistics.median(matmul_peak(amp_dtype, device) for _ in range(repeats)),
    }
    print(f"# {args.device}: {device_name(device)}; CPU {cpu_model()}, {args.threads} threads, "
          f"torch {torch.__version__}")  # fmt: skip
    print(
        f"# matmul peak ({MATMUL_SIZE}^2): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
        f"{amp_label} {peaks[amp_label] / 1e9:.0f} GFLOP/s; medians of {repeats} run(s)\n"
    )
    print("| case | precision | variant | img/s | training GFLOP/s | of peak | vs notebook step |")
    print("|---|---|---|---|---|---|---|")
    variants = VARIANTS if args.compile else VARIANTS[:-1]
    cases = [("resnet18", 224, 16), ("resnet18", 28, 128)]
    for model, size, batch in cases:
        # About the same wall time per case: a 224 px step costs ~60x a 28 px one.
        steps = (4 if args.quick else 8) if size > 28 else (12 if args.quick else 40)
        for amp in (False, True):
            precision = f"{amp_label} AMP" if amp else "fp32"
            peak = peaks[amp_label if amp else "fp32"]
            engine = [
                engine_run(model, size, batch, amp, steps, data, args.threads, args.device)
                for _ in range(repeats)
            ]
            flops_per_image = engine[0][1]
            rows = {
                variant: statistics.median(
                    step_loop_images_per_second(
                        variant, model, images, labels, size, batch, amp, steps, device
                    )
                    for _ in range(repeats)
                )
                for variant in variants
            }
            rows["engine (mnistbench train)"] = statistics.median(rate for rate, _ in engine)
            baseline = rows["notebook step"]
            for variant, rate in rows.items():
                achieved = rate * flops_per_image
                print(
                    f"| {model} {size}px B{batch} | {precision} | {variant} | {rate:.1f} | "
                    f"{achieved / 1e9:.0f} | {achieved / peak:.0%} | {rate / baseline:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()

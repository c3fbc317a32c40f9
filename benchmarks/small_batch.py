"""Small batches at native 28 px: where per-step overhead is most of a step (issue 15, item 3).

The published study's batch 16 at MNIST's own 28x28x1, SGD, fp32, timed side by side in one
invocation, the variants alternating across repeats so a slow spell hits all of them:
  notebook          torchvision MNIST, ToTensor + Normalize in 2 DataLoader workers, per-step
                    loss.item() (the published notebook's pipeline, without its upscaling)
  engine            train_torch.run as `mnistbench train` runs it (memory_format and
                    small_map_convs auto: both chosen by timing on this machine)
  engine NCHW conv  the engine with oneDNN's convolutions everywhere (what it ran before
                    small_map_convs)
  engine NCHW matmul / NHWC matmul   the 2x2 and 1x1 maps as matrix products, layout set
  engine 1 thread   the engine on one of the cores
  plain loop        the smallest in-memory loop: one random-order batch slice, fused SGD, no sync
  plain + matmul    the same with the small-map convolutions as matrix products
  plain + compile   the same with torch.compile(model) (only with --compile; compile time apart)
Every figure is training images per second over the same timed steps after a warm-up, the
median of --repeats; ratios are to the notebook's median from this invocation.

    python benchmarks/small_batch.py                 # 3 repeats, a few minutes on 2 cores
    python benchmarks/small_batch.py --compile
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torchvision import transforms

from mnistbench.data import load_dataset
from mnistbench.data.storage import resolve_root
from mnistbench.engines.torch.models import build_resnet
from mnistbench.engines.torch.smallmaps import use_matmul_for_small_maps
from mnistbench.measure import cpu_model
from train_throughput import engine_result

BATCH = 16


def notebook(steps: int, root: Path, threads: int) -> float:
    """The notebook's pipeline at 28 px: PIL to tensor and normalise in 2 workers."""
    torch.set_num_threads(threads)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    dataset = torchvision.datasets.MNIST(str(root), train=True, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2)
    torch.manual_seed(0)
    model = build_resnet("resnet18", channels=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    batches, seconds = iter(loader), 0.0
    for step in range(steps + 1):  # step 0 is warm-up (worker start), off the clock
        started = time.perf_counter()
        images, labels = next(batches)
        loss = criterion(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the notebook read the loss every step
        if step:
            seconds += time.perf_counter() - started
    return steps * BATCH / seconds


def plain_loop(steps: int, images: torch.Tensor, labels: torch.Tensor, threads: int,
               compiled: bool = False, matmul: bool = False) -> float:  # fmt: skip
    """The least a step can be: slice a batch of resident float images, forward, backward,
    one fused SGD kernel; no host sync until the end."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_resnet("resnet18", channels=1)
    if matmul:
        use_matmul_for_small_maps(model)
    forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(
        model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4, fused=True
    )
    criterion = torch.nn.CrossEntropyLoss()
    order = torch.randperm(len(labels))

    def step(index: int) -> torch.Tensor:
        picked = order[index * BATCH : (index + 1) * BATCH]
        loss = criterion(forward(images[picked]), labels[picked])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for index in range(3):  # warm-up (and compilation) off the clock
        step(index).item()
    started = time.perf_counter()
    for index in range(3, steps + 3):
        loss = step(index)
    loss.item()
    return steps * BATCH / (time.perf_counter() - started)


def engine(
    steps: int, data, threads: int, memory_format: str = "auto", convs: str = "auto"
) -> float:
    result = engine_result("resnet18", BATCH, 28, False, steps, data, threads, "cpu",
                           memory_format=memory_format, small_map_convs=convs)  # fmt: skip
    return result.images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=80, help="timed steps per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    root, threads, steps = resolve_root(args.root), args.threads, args.steps
    data = load_dataset("mnist", root)
    images = ((data.train_images[:20_000].float() / 255 - 0.1307) / 0.3081).unsqueeze(1)
    labels = data.train_labels[:20_000].long()
    variants: dict[str, Callable[[], float]] = {
        "notebook": lambda: notebook(steps, root, threads),
        "engine": lambda: engine(steps, data, threads),
        "engine NCHW conv": lambda: engine(steps, data, threads, "contiguous", "conv"),
        "engine NCHW matmul": lambda: engine(steps, data, threads, "contiguous", "matmul"),
        "engine NHWC matmul": lambda: engine(steps, data, threads, "channels_last", "matmul"),
        "engine 1 thread": lambda: engine(steps, data, 1),
        "plain loop": lambda: plain_loop(steps, images, labels, threads),
        "plain + matmul": lambda: plain_loop(steps, images, labels, threads, matmul=True),
    }
    if args.compile:
        variants["plain + compile"] = lambda: plain_loop(steps, images, labels, threads, True)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, measure in variants.items():
            rates[name].append(measure())
    print(f"{cpu_model()}, {threads} threads; ResNet-18 28x28x1, batch {BATCH}, SGD, fp32; "
          f"{steps} timed steps; medians of {args.repeats}\n")  # fmt: skip
    base = statistics.median(rates["notebook"])
    print("| variant | img/s (median) | runs | vs notebook |")
    print("|---|---:|---|---:|")
    for name, values in rates.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {name} | {statistics.median(values):.0f} | {runs} | "
              f"{statistics.median(values) / base:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()

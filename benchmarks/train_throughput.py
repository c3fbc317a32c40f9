"""Training throughput (images/s): the notebook way against mnistbench, fp32 and AMP.

Three ways to train the same model on MNIST, timed over the same number of optimizer steps:
  (a) notebook: torchvision.datasets.MNIST with PIL transforms Resize(224), Grayscale(3),
      ToTensor, Normalize(0.5, 0.5) and a DataLoader with num_workers=2 (the published study);
  (b) mnistbench at the same protocol: 224x224x3, resized per batch on the device, with the
      engine's defaults (channels_last at this size, fused optimizer, no per-step host sync);
  (c) mnistbench at native 28x28x1.
(b) and (c) run the real engine (train_torch.run) and read its synchronised train_seconds, which
exclude warm-up and evaluation. (a) is timed the same way: warm-up step first, then the clock.
Every figure is the median of --repeats runs; ratios compare numbers from the same invocation.

    python benchmarks/train_throughput.py --quick        # a few minutes
    python benchmarks/train_throughput.py                # both models, both batch sizes, AMP
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torchvision
from torchvision import transforms

from mnistbench.config import RunSpec
from mnistbench.data import load_dataset
from mnistbench.data.storage import resolve_root
from mnistbench.devices import resolve_device
from mnistbench.engines.torch.models import build_resnet
from mnistbench.engines.torch.recipe import make_precision
from mnistbench.engines.torch.train import run
from mnistbench.measure import cpu_model, device_name
from mnistbench.result import RunResult


def engine_result(
    model: str, batch: int, size: int, amp: bool, steps: int, data, threads: int,
    device: str = "cpu", memory_format: str = "auto", small_map_convs: str = "auto",
) -> RunResult:  # fmt: skip
    """The real engine (train_torch.run) on `steps` steps of MNIST at `size` px (3 channels when
    upscaled, as published), SGD at the published lr; evaluation off except one tiny batch."""
    spec = RunSpec(
        dataset="mnist", model=model, batch_size=batch, epochs=1, image_size=size,
        channels=3 if size > 28 else 1, amp=amp, device=device, threads=threads, optimizer="sgd",
        lr=1e-3, lr_schedule="none", train_limit=steps * batch, test_limit=batch,
        eval_each_epoch=False, memory_format=memory_format, small_map_convs=small_map_convs,
    )  # fmt: skip
    return run(spec, data)


def mnistbench_images_per_second(
    model: str, batch: int, size: int, amp: bool, steps: int, data, threads: int, device: str
) -> float:
    return engine_result(model, batch, size, amp, steps, data, threads, device).images_per_second


def notebook_images_per_second(
    model_name: str, batch: int, amp: bool, steps: int, root: Path, threads: int, device: str
) -> float:
    """The published notebook's input pipeline, timed like the engine times itself: PIL
    transforms in 2 workers, pinned copies to a GPU, AMP as the engine runs it on that device
    (fp16 + GradScaler on CUDA, bf16 on CPU), loss.item() every step."""
    torch.set_num_threads(threads)
    target = torch.device(device)
    precision = make_precision(amp, target)
    transform = transforms.Compose(
        [
            transforms.Resize(224),
            transforms.Grayscale(num_output_channels=3),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )
    dataset = torchvision.datasets.MNIST(str(root), train=True, transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=2, pin_memory=target.type == "cuda"
    )
    torch.manual_seed(0)
    model = build_resnet(model_name, channels=3).to(target)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    iterator = iter(loader)
    seconds = 0.0
    for step in range(steps + 1):  # step 0 is warm-up, off the clock
        started = time.perf_counter()
        images, labels = next(iterator)
        images = images.to(target, non_blocking=True)
        labels = labels.to(target, non_blocking=True)
        with precision.autocast(target):
            loss = criterion(model(images), labels)
        optimizer.zero_grad()
        precision.backward_and_step(loss, optimizer)
        loss.item()  # the notebook read the loss every step (a host sync)
        if step:
            seconds += time.perf_counter() - started
    return steps * batch / seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18, batch 16, fewer steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    models = ["resnet18"] if args.quick else ["resnet18", "resnet50"]
    batches = [16] if args.quick else [16, 32]
    root = resolve_root(args.root)
    data = load_dataset("mnist", root)
    print(f"# {args.device}: {device_name(resolve_device(args.device))}; CPU {cpu_model()}, "
          f"{args.threads} threads, torch {torch.__version__}")  # fmt: skip
    print(f"# medians of {args.repeats} runs; img/s of training (forward + backward + step)\n")
    print("| model | batch | precision | (a) notebook 224 | (b) mnistbench 224 | (c) mnistbench 28 "
          "| (b)/(a) | (b)/(a fp32) | (c)/(a) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for model in models:
        for batch in batches:
            # Fewer steps for the big model: ResNet-50 at 224 px runs a few images/s on 2 cores.
            steps = args.steps or (4 if args.quick else 12 if model == "resnet18" else 4)
            notebook_fp32 = None
            for amp in (False, True):
                notebook = median([
                    notebook_images_per_second(model, batch, amp, steps, root, args.threads, args.device)
                    for _ in range(args.repeats)
                ])  # fmt: skip
                notebook_fp32 = notebook_fp32 or notebook
                ours_224 = median([
                    mnistbench_images_per_second(model, batch, 224, amp, steps, data, args.threads, args.device)
                    for _ in range(args.repeats)
                ])  # fmt: skip
                ours_28 = median([
                    mnistbench_images_per_second(model, batch, 28, amp, 10 * steps, data, args.threads, args.device)
                    for _ in range(args.repeats)
                ])  # fmt: skip
                precision = make_precision(amp, resolve_device(args.device)).label
                # (b)/(a fp32) on the AMP row is the AMP target: mixed precision against the
                # notebook as published (fp32 on CPU).
                print(
                    f"| {model} | {batch} | {precision} | {notebook:.1f} | {ours_224:.1f} | "
                    f"{ours_28:.0f} | {ours_224 / notebook:.2f}x | {ours_224 / notebook_fp32:.2f}x | "
                    f"{ours_28 / notebook:.0f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()

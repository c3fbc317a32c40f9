"""Which precision and layout train fastest here, per shape (issue 15, item 1).

Precision stays the user's choice (bf16 changes the numerics); this says what each costs on the
machine at hand. Each shape's training step (ResNet-18, SGD, fake batch) is timed in fp32 and
in bf16 autocast, each in NCHW and NHWC (channels_last), with and without the small-map
convolutions as matrix products (small_map_convs; where the model has 2x2 maps), by the same
alternating timer that `memory_format = "auto"` uses (mnistbench.engines.torch.memory_format.time_layouts): a
warm-up step, then at least 3 timed steps per variant, the fastest step of each. Sizes above
28 px use 3 channels, as the published protocol.

    python benchmarks/precision.py                       # 28, 64 and 224 px
    python benchmarks/precision.py --sizes 28 --batches 16 32 128
"""

from __future__ import annotations

import argparse

import torch

from mnistbench.config import RunSpec
from mnistbench.engines.torch.memory_format import time_layouts
from mnistbench.measure import cpu_model

SHAPES = ((28, 16), (28, 32), (28, 128), (64, 32), (224, 16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    shapes = [
        (size, batch)
        for size, batch in SHAPES
        if (args.sizes is None or size in args.sizes)
        and (args.batches is None or batch in args.batches)
    ]
    if args.sizes and args.batches:
        shapes = [(size, batch) for size in args.sizes for batch in args.batches]
    torch.set_num_threads(args.threads)
    print(f"{cpu_model()}, {args.threads} threads, torch {torch.__version__}; ResNet-18 training "
          "steps, images/s (fastest of at least 3 alternating steps)\n")  # fmt: skip
    print(
        "| input | batch | precision | NCHW | NHWC | NCHW matmul | NHWC matmul | fastest | vs fp32 |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---|---:|")
    for size, batch in shapes:
        rows = {}
        for amp, precision in ((False, "fp32"), (True, "bf16")):
            spec = RunSpec(
                model="resnet18", image_size=size, channels=1 if size == 28 else 3,
                batch_size=batch, optimizer="sgd", amp=amp, device="cpu", threads=args.threads,
            )  # fmt: skip
            measured = time_layouts(spec, torch.device("cpu"))
            # training rates ('eval <layout>' are not shown); matmul where the model has 2x2 maps
            rows[precision] = {
                VARIANTS[name]: rate for name, rate in measured.items() if name in VARIANTS
            }
        fp32_best = max(rows["fp32"].values())
        channels = 1 if size == 28 else 3
        for precision, rates in rows.items():
            cells = " | ".join(
                f"{rates[name]:.1f}" if name in rates else "-" for name in VARIANTS.values()
            )
            fastest = max(rates, key=rates.__getitem__)
            print(f"| {size}×{size}×{channels} | {batch} | {precision} | {cells} | {fastest} | "
                  f"{max(rates.values()) / fp32_best:.2f}x |", flush=True)  # fmt: skip


# time_layouts' names -> the table's columns
VARIANTS = {
    "contiguous": "NCHW",
    "channels_last": "NHWC",
    "contiguous matmul": "NCHW matmul",
    "channels_last matmul": "NHWC matmul",
}


if __name__ == "__main__":
    main()

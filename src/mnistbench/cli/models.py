"""`mnistbench predict | evaluate | export`: use a saved model.

Each picks its model the same way (`--run KEY`, `--best`, `--model PATH`: selection.py), loads it
once (saved.py) and then predicts images (inputs.py, predict.py), re-evaluates it on a dataset
(evaluate.py) or writes it as ONNX (onnx_export.py). torch, PIL and onnx are imported by the
handlers, not at startup.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistbench.cli.args import (
    Output,
    add_command,
    add_json,
    add_root,
    add_store,
    check_outputs,
    require_store,
    study_name,
    write_json,
)
from mnistbench.errors import EXIT_FAILURE, EXIT_OK, UserError

if TYPE_CHECKING:
    from mnistbench.engines import SavedModel
    from mnistbench.use.selection import Choice

INVERT = ("auto", "yes", "no")
FITS = ("auto", "digit", "whole")  # mnistbench.use.inputs.FITS, not imported: --help stays fast
PARTS = ("test", "val", "train")


def add_parser(commands: argparse._SubParsersAction) -> None:
    predict = add_command(
        commands,
        "predict",
        help="predict the classes of images (PNG/JPEG, IDX, .npy) with a saved model",
        description="Predict with a saved model: pictures of any size and mode are converted to "
        "28x28 grayscale, white on black like MNIST (--invert for dark-on-light photos), and a "
        "photo's digit is cropped, fitted into 20x20 and centred by mass as MNIST's digits were "
        "(--fit); IDX and .npy files are read as arrays of images (MNIST-like already); folders "
        "are read whole. One batched pass: "
        "the model is loaded once. A file that cannot be read is named with the reason, and the "
        "others are predicted (exit 1 then).",
    )
    predict.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files or folders")
    _add_model_choice(predict)
    _add_picture_flags(predict)
    add_json(predict, "the predictions")
    predict.set_defaults(handler=predict_command)

    evaluate = add_command(
        commands,
        "evaluate",
        help="re-evaluate a saved model on a dataset: accuracy, per class, confusion matrix",
        description="Evaluate a saved ResNet or SVM on its own dataset and split (its test part "
        "gives back the stored test accuracy exactly), or with --dataset on another one, split "
        "the same way.",
    )
    _add_model_choice(evaluate)
    evaluate.add_argument(
        "--dataset", default=None, help="another dataset [default: the model's own]"
    )
    evaluate.add_argument("--part", choices=PARTS, default="test", help="which part of the split")
    add_json(evaluate, "the evaluation")
    evaluate.set_defaults(handler=evaluate_command)

    export = add_command(
        commands,
        "export",
        help="write a saved model as ONNX: uint8 (N, 28, 28) in, preprocessing inside",
        description="Export a saved model to ONNX. The graph takes raw uint8 images (N, 28, 28) "
        "with any batch size and does the run's preprocessing itself; onnxruntime runs it with "
        "nothing of mnistbench. After writing, it is run once with onnxruntime and compared "
        "with the saved model.",
    )
    _add_model_choice(export)
    export.add_argument("--format", choices=("onnx",), default="onnx", help="the format")
    export.add_argument(
        "--out", type=Path, default=None, metavar="PATH",
        help="output file [default: results/export/<run key>.onnx]",
    )  # fmt: skip
    add_json(export, "the file, its size and the onnxruntime comparison")
    export.set_defaults(handler=export_command)


def _add_picture_flags(predict: argparse.ArgumentParser) -> None:
    """How predict turns a picture file into MNIST's 28x28: --invert and --fit."""
    predict.add_argument(
        "--invert",
        choices=INVERT,
        default="auto",
        help="auto: invert pictures whose border is light (dark ink on paper); yes/no: always/never",
    )
    predict.add_argument(
        "--fit",
        choices=FITS,
        default="auto",
        help="pictures only. digit: crop the ink (above the paper's noise and lighting), fit it "
        "into 20x20 keeping its shape and centre it by mass in 28x28, as MNIST was made; whole: "
        "pad the whole picture to a square and resize it (the digit of a photo becomes a few "
        "pixels); auto: digit for dark-on-light or non-square pictures, whole for square "
        "white-on-black ones (MNIST images already)",
    )


def _add_model_choice(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("which model (one of)")
    choice = group.add_mutually_exclusive_group(required=True)
    choice.add_argument("--run", metavar="KEY", help="a run in the store (a unique key prefix)")
    choice.add_argument(
        "--best", action="store_true",
        help="the run the report names best, with a kept model: the highest mean test accuracy "
        "over seeds within --experiment, else per dataset among the Q1(a) grids (else SVMs)",
    )  # fmt: skip
    choice.add_argument("--model", type=Path, metavar="PATH", help="a model file")
    group.add_argument("--study", metavar="NAME|FILE", help="with --best: a study name or file")
    group.add_argument("--experiment", metavar="NAME", help="with --best: one experiment")
    group.add_argument(
        "--for-dataset", metavar="NAME", help="with --best: models trained on this dataset"
    )
    add_store(parser)
    add_root(parser)


def choose(args: argparse.Namespace) -> Choice:
    """The model file the flags name (selection.py), checked before anything is loaded."""
    from mnistbench.data.registry import canonical_name
    from mnistbench.study.store import Store
    from mnistbench.use import selection

    narrowing = [flag for flag, value in (("--study", args.study), ("--experiment", args.experiment),
                 ("--for-dataset", args.for_dataset)) if value is not None]  # fmt: skip
    if narrowing and not args.best:
        raise UserError(
            f"{', '.join(narrowing)} narrow(s) --best only; with --run or --model, leave it out"
        )
    if args.model is not None:
        return selection.model_path(args.model)
    require_store(args.store)
    with Store(args.store) as store:
        if args.run is not None:
            return selection.by_key(store, args.run)
        dataset = canonical_name(args.for_dataset) if args.for_dataset else None
        return selection.best(store, study_name(args.study), args.experiment, dataset)


def load_chosen(
    args: argparse.Namespace, outputs: list[Output], reads: list[Path] | None = None
) -> tuple[SavedModel, Choice]:
    """The chosen model, loaded once every file the command will write is known to be
    writable and none is a file it reads (the model, the store, `reads`): bad input fails
    before anything is loaded or written."""
    from mnistbench.cli.console import err_console, load_or_fetch
    from mnistbench.use.saved import load_model

    check_outputs(outputs)  # before the choice: a bad --out is said whatever the model
    chosen = choose(args)
    check_outputs(outputs, [chosen.path, args.store, *(reads or [])])
    err_console.print(f"model: {chosen.describe()}")
    if chosen.why:
        err_console.print(f"best: {chosen.why}")
    model = load_model(chosen.path, lambda name: load_or_fetch(name, args.root))
    if model.legacy:
        err_console.print(
            "  (a model file of the first format: its normalisation was recomputed from its "
            "run's training split)"
        )
    return model, chosen


def predict_command(args: argparse.Namespace) -> int:
    """Predict every readable input in one batched pass; exit 1 when a file was unreadable."""
    from mnistbench.cli.console import console, err_console
    from mnistbench.use.inputs import read_inputs
    from mnistbench.use.predict import predict_images

    model, _ = load_chosen(args, [("--json", args.json)], args.inputs)
    inputs = read_inputs(args.inputs, args.invert, args.fit)
    for file, why in inputs.problems:
        err_console.print(f"[red]cannot read[/red] {file}: {why}")
    if not inputs.names:
        raise UserError("no input could be read: " + "; ".join(f for f, _ in inputs.problems))
    predictions = predict_images(model, inputs.names, inputs.array())
    if args.json != "-":
        console.print(_predictions_table(predictions, model.has_probabilities))
    write_json(args.json, {
        "model": str(model.path), "run": model.key, "classes": list(model.classes),
        "predictions": [p.to_dict() for p in predictions],
        "unreadable": [{"input": f, "error": why} for f, why in inputs.problems],
    })  # fmt: skip
    return EXIT_FAILURE if inputs.problems else EXIT_OK


def _predictions_table(predictions: list[Any], probabilities: bool) -> Any:
    from rich.table import Table

    score = "probability" if probabilities else "score"
    table = Table(title=f"{len(predictions)} prediction(s)")
    table.add_column("input", overflow="fold")  # a path is never cut short
    table.add_column("class")
    table.add_column("probability", justify="right")
    table.add_column(f"top 3 ({score})")
    for p in predictions:
        top = ", ".join(f"{name} {value:.3f}" for name, value in p.top)
        shown = f"{p.probability:.3f}" if p.probability is not None else "-"
        table.add_row(p.input, p.name, shown, top)
    return table


def evaluate_command(args: argparse.Namespace) -> int:
    """Evaluate, print accuracy, per-class accuracy and the confusion matrix; compare with the
    stored test accuracy when the model is evaluated on its own test part."""
    from mnistbench.cli.console import console, load_or_fetch
    from mnistbench.data.registry import canonical_name
    from mnistbench.use.evaluate import evaluate_model

    other = canonical_name(args.dataset) if args.dataset else None  # unknown: before loading
    model, chosen = load_chosen(args, [("--json", args.json)])
    dataset = other or model.spec.dataset
    evaluation = evaluate_model(model, load_or_fetch(dataset, args.root), args.part)
    console.print(
        f"{evaluation.dataset}, {evaluation.part} part ({evaluation.images:,} images, split "
        f"{model.spec.split!r}): accuracy [bold]{evaluation.accuracy:.2f} %[/bold]"
    )
    stored = chosen.record.result.test_accuracy if chosen.record and chosen.record.result else None
    if stored is not None and dataset == model.spec.dataset and args.part == "test":
        # The same number of images right: formulas of older versions differ in the last bit.
        right = round(evaluation.accuracy * evaluation.images / 100)
        same = (
            "the same"
            if round(stored * evaluation.images / 100) == right
            else "[red]DIFFERENT[/red]"
        )
        console.print(f"stored test accuracy {stored:.2f} %: {same}")
    console.print(_confusion_table(evaluation))
    write_json(args.json, {"model": str(model.path), "run": model.key, **vars(evaluation)})
    return EXIT_OK


def _confusion_table(evaluation: Any) -> Any:
    from rich.table import Table

    table = Table(title="confusion matrix (rows: true class, columns: predicted)")
    table.add_column("class")
    table.add_column("accuracy %", justify="right")
    for index in range(len(evaluation.classes)):
        table.add_column(str(index), justify="right")
    for name, accuracy, row in zip(
        evaluation.classes, evaluation.per_class_accuracy, evaluation.confusion_matrix, strict=True
    ):
        shown = f"{accuracy:.1f}" if accuracy is not None else "-"
        table.add_row(name, shown, *(str(count) for count in row))
    return table


def export_command(args: argparse.Namespace) -> int:
    """Write the ONNX file, then run it with onnxruntime and compare it with the model."""
    from mnistbench.cli.console import console
    from mnistbench.use.onnx_export import compare, export_onnx

    model, chosen = load_chosen(args, [("--out", args.out), ("--json", args.json)])
    out = args.out or Path("results/export") / f"{model.key}.onnx"
    if args.out is None:  # the default, named after the run: checked once the model is known
        check_outputs([("--out", out), ("--json", args.json)], [chosen.path, args.store])
    export_onnx(model, out)
    images, what = _probe_images(model, args.root)
    agree, diff = compare(model, out, images)
    size = out.stat().st_size
    if args.json != "-":
        console.print(f"wrote {out} ({size / 1e6:.1f} MB)")
        console.print(
            f"onnxruntime vs the saved model on {len(images)} {what}: same class on "
            f"{agree:.1f} %, max |score difference| {diff:.2e}"
        )
    write_json(args.json, {
        "file": str(out), "bytes": size, "format": args.format, "run": model.key,
        "model": str(model.path),
        "onnxruntime": {"images": len(images), "what": what, "same_class_percent": agree,
                        "max_score_difference": diff},
    })  # fmt: skip
    return EXIT_OK


def _probe_images(model: SavedModel, root: Path | None) -> tuple[Any, str]:
    """Test images of the model's dataset when they are here, else seeded random images."""
    import numpy as np

    from mnistbench.data.load import DatasetNotFoundError, load_dataset

    try:
        data = load_dataset(model.spec.dataset, root)
    except (DatasetNotFoundError, OSError, ValueError):
        random = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
        return random, "random images (the dataset is not here)"
    return data.test_images[:256].numpy(), f"{model.spec.dataset} test images"

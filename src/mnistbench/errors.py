"""The user-error type of the command line. Imports nothing: the CLI loads it at startup."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # a failure at run time: a fetch, a run that failed or diverged, a corrupt store
EXIT_USAGE = 2  # bad input or usage, known before any work starts (argparse's code too)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


class UserError(Exception):
    """Bad input from the user: `mnistbench` prints the command's usage and
    `mnistbench COMMAND: error: <message>`, and exits 2."""

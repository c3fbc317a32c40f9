"""Studies: the study file, planning and running its runs, the results store, the executors
and their scheduler, and cleanup of what runs leave on disk."""

from pathlib import Path

DEFAULT_STORE = Path("results/mnistbench.db")
"""Where results go unless `--store` says otherwise (every command's default)."""

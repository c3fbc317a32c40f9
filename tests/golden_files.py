"""Golden files: compare a test's output with a file kept in tests/golden/, or, with
MNISTBENCH_REGOLD=1, write it there instead (a change on purpose, reviewed in `git diff` and
committed). A failure names the file, shows a short diff and says how to accept the change."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
REGOLD = "MNISTBENCH_REGOLD"
DIFF_LINES = 40  # of the diff shown on a failure: enough to see what changed, not a whole file
DIFF_WIDTH = 240  # characters per diff line: a CSV row is longer; runs.json shows it per field


def assert_matches_golden(actual: str, golden: Path) -> None:
    """Compare `actual` with the golden file; with MNISTBENCH_REGOLD=1, write it there instead."""
    name = golden.relative_to(GOLDEN.parent.parent)
    if os.environ.get(REGOLD) == "1":
        if not golden.is_file() or golden.read_text(encoding="utf-8") != actual:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(actual, encoding="utf-8")
        return
    # PYTEST_CURRENT_TEST: "tests/test_x.py::test_y[param] (call)": the module to run again
    module = os.environ.get("PYTEST_CURRENT_TEST", "tests/").split("::")[0]
    regold = (
        f"{REGOLD}=1 .venv/bin/python -m pytest {module}, then review "
        f"`git diff {GOLDEN.relative_to(GOLDEN.parent.parent)}` and commit it"
    )
    if not golden.is_file():
        pytest.fail(f"no golden file {name}; write it: {regold}.", pytrace=False)
    expected = golden.read_text(encoding="utf-8")
    if actual == expected:
        return
    diff = list(
        difflib.unified_diff(
            expected.splitlines(),
            actual.splitlines(),
            fromfile=f"{name} (golden)",
            tofile="this run",
            lineterm="",
            n=1,
        )
    )
    if not diff:  # the same lines: only the line endings or the final newline differ
        diff = [
            f"the same lines, but the text ends {actual[-20:]!r}, the golden file {expected[-20:]!r}"
        ]
    shown = _clipped(diff)
    if len(shown) > DIFF_LINES:
        shown[DIFF_LINES:] = [f"… {len(shown) - DIFF_LINES} more diff lines"]
    message = [f"{name} differs from this run's output:", *shown]
    message.append(f"If the change is meant, accept it: {regold}.")
    pytest.fail("\n".join(message), pytrace=False)


def _clipped(diff: list[str]) -> list[str]:
    """Diff lines cut to DIFF_WIDTH characters, from a little before the first change: a CSV
    row is over 1,000 characters long, and its change may lie far to the right."""
    removed = next((d[1:] for d in diff if d.startswith("-") and not d.startswith("---")), "")
    added = next((d[1:] for d in diff if d.startswith("+") and not d.startswith("+++")), "")
    pairs = enumerate(zip(removed, added, strict=False))  # lines of different lengths
    first = next((i for i, (a, b) in pairs if a != b), min(len(removed), len(added)))
    start = max(0, first - DIFF_WIDTH // 3)
    clipped = []
    for line in diff:
        if line.startswith(("---", "+++", "@@")) or len(line) <= DIFF_WIDTH:
            clipped.append(line)
            continue
        sign, text = line[0], line[1:]
        part = text[start : start + DIFF_WIDTH]
        before, after = "…" * (start > 0), "…" * (start + DIFF_WIDTH < len(text))
        clipped.append(f"{sign}{before}{part}{after}")
    return clipped

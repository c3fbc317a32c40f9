"""Golden files of the CLI: what each command prints, on stdout and stderr, and its exit code.

- every command's `--help` (the commands found in the parser, so a new one needs its file);
- `study status` of tests/report/test_report.py's synthetic store and of tests/fixtures/store_v1.db;
- `study run --dry-run` and `study status FILE` of a small study file (no store, no training,
  the probes replaced by constants as in tests/test_cli_structure.py);
- two bad study files, an unknown field and a bad value: exit 2, the `study run` usage and
  one error line, no traceback.

Each golden file in tests/golden/cli/ is a transcript: the command line, the exit code, stdout
and stderr. The commands run in-process through `mnistbench.cli.main`, in the test's temporary
directory with relative paths, 100 columns wide (argparse reads COLUMNS; rich's consoles are
pinned), so nothing is masked but the temporary directory, should a path still show it.

When a change is meant, regenerate the files and review them before committing:

    MNISTBENCH_REGOLD=1 .venv/bin/python -m pytest tests/test_golden_cli.py
    git diff tests/golden/cli

With MNISTBENCH_REGOLD=1 these tests write the golden files instead of comparing with them
(and delete the help files of commands that no longer exist).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mnistbench.cli import build_parser, main
from tests.golden_files import GOLDEN, REGOLD, assert_matches_golden
from tests.report.test_report import build_synthetic_store
from tests.test_golden_report import FIXTURE

HELP = GOLDEN / "cli" / "help"
WIDTH = 100  # columns of the terminal the output is laid out for

TINY_STUDY = """\
[study]
name = "tiny"
description = "Two small ResNet-18 runs and an SVM, for the CLI's golden files."

[defaults]
threads = 1
train_limit = 1000
test_limit = 500

[experiments.grid]
base = { model = "resnet18", epochs = 2, device = "cpu" }
grid = { batch_size = [16, 32] }

[experiments.svm]
base = { model = "svm", kernel = "rbf", svm_backend = "sklearn" }
"""
BAD_STUDIES = {
    "unknown-field": '[study]\nname = "bad"\n[experiments.grid]\nbase = { epochz = 2 }\n',
    "bad-value": '[study]\nname = "bad"\n[experiments.svm]\nbase = { model = "svm", C = -1 }\n',
}


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple]:
    """Every command's words, the top level's () first, in the parser's order."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(build_parser()))


def _help_file(command: tuple[str, ...]) -> Path:
    return HELP / ("-".join(("mnistbench", *command)) + ".txt")


Run = Callable[..., str]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Run:
    """`run(*args)`: `mnistbench ARGS` in-process in tmp_path; its transcript, tmp_path masked."""
    from mnistbench.cli import console as ui

    monkeypatch.chdir(tmp_path)  # relative paths: the tables' widths do not depend on tmp_path
    monkeypatch.setenv("MNISTBENCH_DATA", str(tmp_path / "data"))  # none: nothing to load
    monkeypatch.setenv("COLUMNS", str(WIDTH))  # argparse's help width
    for console in (ui.console, ui.err_console):
        # rich reads COLUMNS once, when the console is made, if it is set then: pin the width
        monkeypatch.setattr(console, "_width", WIDTH)

    def transcript(*args: str) -> str:
        capsys.readouterr()  # what earlier set-up printed is not this command's
        try:
            code = main(list(args))
        except SystemExit as exited:
            code = exited.code
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        text = (
            f"$ mnistbench {shlex.join(args)}\nexit code: {code}\n"
            f"--- stdout ---\n{out}--- stderr ---\n{err}"
        )
        return text.replace(str(tmp_path), "<tmp>")

    return transcript


@pytest.mark.parametrize("command", COMMANDS, ids=lambda words: " ".join(("mnistbench", *words)))
def test_each_commands_help_is_what_its_golden_file_holds(run: Run, command: tuple) -> None:
    text = run(*command, "--help")
    assert text.split("\n")[1] == "exit code: 0"
    assert_matches_golden(text, _help_file(command))


def test_every_help_golden_file_belongs_to_a_command() -> None:
    stale = {path.name for path in HELP.glob("*.txt")} - {_help_file(c).name for c in COMMANDS}
    if os.environ.get(REGOLD) == "1":
        for name in stale:
            (HELP / name).unlink()
        return
    assert not stale, f"help files of commands that no longer exist: {sorted(stale)}"


def test_study_status_of_the_synthetic_store_prints_its_golden_file(
    run: Run, tmp_path: Path
) -> None:
    build_synthetic_store(tmp_path / "results.db")
    text = run("study", "status", "--store", "results.db")
    assert_matches_golden(text, GOLDEN / "cli" / "study-status-synthetic.txt")


def test_study_status_of_a_store_an_older_mnistbench_wrote_prints_its_golden_file(
    run: Run, tmp_path: Path
) -> None:
    shutil.copyfile(FIXTURE, tmp_path / "store_v1.db")  # opening migrates it: a copy
    text = run("study", "status", "--store", "store_v1.db")
    assert_matches_golden(text, GOLDEN / "cli" / "study-status-store_v1.txt")


@pytest.fixture
def tiny_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The small study file, and probes replaced by constants: the dry run and the status
    estimate from them, and train nothing (the real probes: tests/cost/test_probe.py). Named by
    module path: after a move, a stale name fails here instead of probing for real."""
    from mnistbench.config import RunSpec
    from mnistbench.cost.rates import Observation
    from mnistbench.data.sizes import Sizes
    from mnistbench.engines.svm import ENGINE as SVM
    from tests.stub_probes import stub_probes

    # ResNet runs: 24 s each (tests/stub_probes.py). An SVM probe of the study's own size
    # (1000 fitted, 500 predicted): 2 s in all.
    svm_work = SVM.work(RunSpec(model="svm", svm_backend="sklearn"), Sizes(1_000, 0, 500))
    stub_probes(monkeypatch, svm=Observation(svm_work, 1.0, 0.5, wall_seconds=2.0))
    (tmp_path / "tiny.toml").write_text(TINY_STUDY)
    return "tiny.toml"


def test_a_dry_run_lists_the_runs_and_their_estimates_and_runs_nothing(
    run: Run, tiny_study: str, tmp_path: Path
) -> None:
    text = run("study", "run", tiny_study, "--dry-run", "--store", "results.db")
    assert_matches_golden(_sklearn_masked(text), GOLDEN / "cli" / "study-run-dry-run.txt")
    assert not (tmp_path / "results.db").exists(), "a dry run writes no store"
    assert not (tmp_path / "results" / "checkpoints").exists(), "nor checkpoints"


def test_study_status_of_a_study_file_without_a_store_prints_its_golden_file(
    run: Run, tiny_study: str
) -> None:
    text = run("study", "status", tiny_study, "--store", "results.db")
    assert_matches_golden(_sklearn_masked(text), GOLDEN / "cli" / "study-status-file.txt")


def _sklearn_masked(text: str) -> str:
    """The SVM's calibration key names the installed scikit-learn's version: masked."""
    import sklearn

    return text.replace(f"sklearn {sklearn.__version__}", "sklearn <version>")


@pytest.mark.parametrize("name", BAD_STUDIES)
def test_a_bad_study_file_exits_2_with_the_usage_and_one_error_line(
    run: Run, tmp_path: Path, name: str
) -> None:
    (tmp_path / f"{name}.toml").write_text(BAD_STUDIES[name])
    text = run("study", "run", f"{name}.toml", "--dry-run")
    assert text.split("\n")[1] == "exit code: 2"
    assert_matches_golden(text, GOLDEN / "cli" / f"error-{name}.txt")

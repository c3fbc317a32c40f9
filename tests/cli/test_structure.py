"""The CLI as a whole: exit codes, help text, startup imports, and its one-place-per-command shape."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mnistbench.cli
from mnistbench.cli import build_parser, main
from mnistbench.cli.args import HelpFormatter
from mnistbench.study.store import Store
from tests.report.test_report import build_synthetic_store

CLI_DIR = Path(mnistbench.cli.__file__).parent
HEAVY = ("torch", "torchvision", "numpy", "sklearn", "matplotlib", "pandas", "rich.progress")


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default paths (results/, ./data) land in a temporary directory, whatever a test runs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNISTBENCH_DATA", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_store(tmp_path_factory.mktemp("cli") / "results.db")


def _exit_code(args: list[str]) -> int:
    """main's exit code, whether it returns it or exits with it."""
    try:
        return main(args)
    except SystemExit as exited:
        return exited.code


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --- exit codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--batch-size", "many"], "--batch-size"),  # argparse: not an int
        (["train", "--epochs", "0"], "mnistbench train: error: --epochs: "),  # RunSpec: SpecError
        (["train", "--optimizer", "rmsprop"], "--optimizer: invalid choice: 'rmsprop'"),
        (["train", "--batch-size", "0"], "mnistbench train: error: --batch-size: "),
        (["data", "fetch", "cifar10"], "mnistbench data fetch: error: unknown dataset 'cifar10'"),
        (["data", "pack", "DEST", "cifar10"], "unknown dataset 'cifar10'"),
        (["data", "fetch", "--from", "MISSING"], "no such file or directory"),
        (["study", "run", "BAD_TOML"], "not valid TOML"),
        (["study", "run", "MISSING.toml", "--dry-run"], "no such study file"),
        (["study", "status", "BAD_TOML"], "not valid TOML"),
        (["study", "run", "GOOD_TOML", "--only", "nope"], "no experiment 'nope'"),
        (["study", "run", "GOOD_TOML", "--jobs", "0"], "argument --jobs: must be at least 1"),
        (["study", "run", "GOOD_TOML", "--jobs", "all"], "not an integer: 'all'; or write 'auto'"),
        (["study", "run", "GOOD_TOML", "--executor", "slurm"], "invalid choice: 'slurm'"),
        (
            ["study", "run", "GOOD_TOML", "--dry-run", "--set", "epochz=1"],
            "--set epochz=1: unknown",
        ),
        (["study", "run", "GOOD_TOML", "--set", "C=-1", "--dry-run"], "C=-1.0 is invalid"),
        (["study", "run", "GOOD_TOML", "--dry-run", "--set", "kernel"], "expected KEY=VALUE"),
        (["study", "clean", "GOOD_TOML", "--store", "MISSING.db"], "no results store at"),
        (["study", "status", "--store", "MISSING.db"], "no results store at"),
        (["report", "--store", "MISSING.db"], "no results store at"),
        (["report", "--format", "pdf"], "--format 'pdf': choose from md, html, csv, json"),
        (["report", "--format", ","], "choose from md, html, csv, json"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["export", "--model", "x.model.pt", "--out", "DIR"], "is a folder: give the file"),
        (
            ["track", "mlflow", "--tracking-uri", "foo://bar", "--store", "STORE"],
            "foo://bar: MLflow cannot keep runs there (scheme 'foo')",
        ),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    (tmp_path / "bad.toml").write_text("[study\n")
    (tmp_path / "good.toml").write_text(
        '[study]\nname = "s"\n[experiments.grid]\nbase = { model = "svm" }\n'
    )
    (tmp_path / "folder").mkdir()
    with Store(tmp_path / "store.db") as store:  # an empty store, written by today's code
        store.register("s", "grid", [])
    names = {"BAD_TOML": "bad.toml", "GOOD_TOML": "good.toml", "DEST": "out", "DIR": "folder",
             "STORE": "store.db"}  # fmt: skip
    args = [
        str(tmp_path / names.get(a, a)) if a in names or a.startswith("MISSING") else a
        for a in args
    ]
    assert _exit_code(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "MISSING.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.toml",
        "folder",
        "good.toml",
        "store.db",
    ], "nothing written"
    assert not list((tmp_path / "folder").iterdir())


@pytest.mark.skipif(_cuda(), reason="this machine has CUDA")
def test_cuda_without_cuda_exits_2_before_touching_the_data(tmp_path: Path, capsys) -> None:
    assert _exit_code(["train", "--device", "cuda", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "mnistbench train: error: --device: " in err and "CUDA is not available" in err
    assert list(tmp_path.iterdir()) == [], "nothing fetched"


def test_unavailable_svm_backend_exits_2(tmp_path: Path, capsys) -> None:
    from mnistbench.engines.svm.backends import svm_backend_problem

    if svm_backend_problem("cuml") is None:
        pytest.skip("cuML runs here")
    args = ["train", "--model", "svm", "--svm-backend", "cuml", "--root", str(tmp_path)]
    assert _exit_code(args) == 2
    assert "mnistbench train: error: --svm-backend: svm_backend='cuml'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_corrupt_store_is_a_runtime_failure(tmp_path: Path, capsys) -> None:
    store = tmp_path / "corrupt.db"
    store.write_bytes(b"this is not a SQLite database, " * 200)
    assert _exit_code(["study", "status", "--store", str(store)]) == 1
    assert f"mnistbench study status: error: {store}" in capsys.readouterr().err
    assert _exit_code(["report", "--store", str(store), "--out", str(tmp_path / "r")]) == 1


def test_fetch_from_an_empty_dir_is_a_runtime_failure(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    args = ["data", "fetch", "mnist", "--from", str(tmp_path / "empty"), "--root", str(tmp_path)]
    assert _exit_code(args) == 1
    assert "failed: mnist" in capsys.readouterr().err


def test_ctrl_c_exits_130(monkeypatch, store_path: Path, capsys) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("mnistbench.cli.study.show_status", interrupted)
    try:
        code = _exit_code(["study", "status", "--store", str(store_path)])
    except KeyboardInterrupt:  # not pytest's own Ctrl-C: fail this test only
        pytest.fail("main let KeyboardInterrupt through")
    assert code == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_bug_is_not_disguised_as_a_user_error(monkeypatch, store_path: Path) -> None:
    def buggy(args: argparse.Namespace) -> int:
        raise ValueError("a bug")

    monkeypatch.setattr("mnistbench.cli.study.show_status", buggy)
    with pytest.raises(ValueError, match="a bug"):
        main(["study", "status", "--store", str(store_path)])


@pytest.mark.parametrize(
    "args",
    [
        ["GOOD_TOML", "--sett", "epochs=1"],  # argparse's, found after the subcommand's parse
        ["GOOD_TOML", "--dry-run", "--set", "epochz=1"],  # the handler's StudyFileError
        ["BAD_TOML"],
    ],
)
def test_study_run_errors_print_the_study_run_usage(tmp_path: Path, capsys, args) -> None:
    (tmp_path / "bad.toml").write_text("[study\n")
    (tmp_path / "good.toml").write_text('[experiments.grid]\nbase = { model = "svm" }\n')
    names = {"BAD_TOML": "bad.toml", "GOOD_TOML": "good.toml"}
    args = [str(tmp_path / names[a]) if a in names else a for a in args]
    assert _exit_code(["study", "run", *args]) == 2
    err = capsys.readouterr().err
    assert "usage: mnistbench study run [-h]" in err and "mnistbench study run: error: " in err
    assert "usage: mnistbench [-h]" not in err


def test_study_run_dry_run_shows_the_overrides_and_their_runs(tmp_path: Path, capsys) -> None:
    study = tmp_path / "s.toml"
    study.write_text(
        '[experiments.grid]\nbase = { model = "resnet18", epochs = 2, device = "cpu" }\n'
    )
    store = ["--store", str(tmp_path / "none.db"), "--dry-run"]
    assert _exit_code(["study", "run", str(study), *store]) == 0
    plain = capsys.readouterr().out
    assert _exit_code(["study", "run", str(study), *store, "--set", "epochs=1", "lr=0.5"]) == 0
    varied = capsys.readouterr().out
    assert "--set epochs=1 lr=0.5" in " ".join(varied.split()) and "--set" not in plain

    from mnistbench.study.file import load_study

    spec = load_study(study).experiments[0].specs()[0]
    assert spec.key() in plain and spec.key() not in varied
    assert spec.replace(epochs=1, lr=0.5).key() in varied


def test_status_of_a_store(store_path: Path, capsys) -> None:
    assert _exit_code(["study", "status", "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "grid_mnist" in out and "syn" in out


def test_status_of_a_study_without_a_store_lists_its_runs_as_pending(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.stub_probes import TWO_EXPERIMENTS, stub_probes

    stub_probes(monkeypatch)  # 24 s a run here, 5 s start-up
    study = tmp_path / "s.toml"
    study.write_text(TWO_EXPERIMENTS)
    store = tmp_path / "none.db"
    assert _exit_code(["study", "status", str(study), "--store", str(store)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # experiment, done, failed, skipped, running, pending, skip here, time here, disk
    assert "grid 0 0 0 0 2 0 0m48s 44.7 MB" in out  # keep_models 'best': one model
    assert "gpu 0 0 0 0 1 1 0m00s 0 B" in out
    assert "study 0 0 0 0 3 1 0m53s" in out  # + 5 s start-up
    assert "skipped here: 1 run(s) of gpu: device 'cuda:99' needs" in out
    assert not store.exists(), "status writes no store"


def test_top_level_help_documents_the_exit_codes() -> None:
    text = build_parser().format_help()
    for line in ("  0    success", "  1    a failure at run time", "  2    bad input or usage"):
        assert line in text
    assert "130  interrupted" in text


# --- help text ----------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {
        name: sub
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, sub in action.choices.items()
    }


def _all_parsers() -> list[argparse.ArgumentParser]:
    parsers, todo = [], [build_parser()]
    while todo:
        parser = todo.pop()
        parsers.append(parser)
        todo.extend(_subparsers(parser).values())
    return parsers


def test_every_parser_shows_each_default_at_most_once() -> None:
    parsers = _all_parsers()
    # mnistbench, data (fetch, pack, info), train, study (3), report, predict, evaluate, export,
    # track (mlflow)
    assert len(parsers) == 16
    for parser in parsers:
        assert parser.formatter_class is HelpFormatter, parser.prog
        text = parser.format_help()
        assert "(default" not in text, parser.prog
        assert "default: None" not in text and "default: SUPPRESS" not in text, parser.prog
        for action in parser._actions:
            if action.help in (None, argparse.SUPPRESS):
                continue
            shown = HelpFormatter(parser.prog)._expand_help(action)  # as --help prints it
            assert shown.count("default:") <= 1, (parser.prog, action.dest, shown)


def test_train_help_states_each_default_once() -> None:
    (train,) = [p for p in _all_parsers() if p.prog == "mnistbench train"]
    text = " ".join(train.format_help().split())  # undo the line wrapping
    assert text.count("[default: results/checkpoints]") == 1
    assert "Training batch size (images per step). [default: 32]" in text
    assert "[default: all cores]" in text  # the computed default, in the field's own words
    assert "write the RunResult as JSON --checkpoint-dir" in text  # --json: no default shown


# --- startup ------------------------------------------------------------------------------------

_PROBE = """\
import sys
from mnistbench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exited:
    code = exited.code
print("HEAVY", *sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def _probe(*args: str) -> tuple[int, list[str], str]:
    """Run the CLI in a fresh interpreter: exit code, heavy modules imported, stdout."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    (heavy_line,) = [line for line in done.stderr.splitlines() if line.startswith("HEAVY")]
    return done.returncode, heavy_line.split()[1:], done.stdout


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["train", "--help"], ["study", "status"], ["report", "--help"]],
)
def test_startup_imports_nothing_heavy(args: list[str], store_path: Path) -> None:
    if args == ["study", "status"]:
        args = [*args, "--store", str(store_path)]
    code, heavy, out = _probe(*args)
    assert code == 0 and heavy == [], (args, heavy)
    assert out


def test_importing_the_cli_imports_nothing_heavy() -> None:
    code = (
        "import sys, mnistbench.cli; mnistbench.cli.build_parser()\n"
        f"assert not [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert 'rich' not in sys.modules  # the consoles are imported by the handlers\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- shape --------------------------------------------------------------------------------------


def test_one_small_module_per_command_group() -> None:
    assert not (CLI_DIR.parent / "commands.py").exists()
    for path in CLI_DIR.glob("*.py"):
        source = path.read_text()
        assert source.count("\n") <= 400, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 60, (path.name, node.name)
    for group in ("data", "train", "study", "report"):
        module = getattr(mnistbench.cli, group)
        assert callable(module.add_parser), group


def test_every_library_error_is_a_user_error_or_a_run_failure() -> None:
    """main catches these two bases once; a library error outside them would be a traceback."""
    from mnistbench.data.fetch import FetchError
    from mnistbench.data.registry import UnknownDatasetError
    from mnistbench.devices import DeviceUnavailableError
    from mnistbench.engines.svm.backends import SVMBackendUnavailableError
    from mnistbench.errors import RunFailure, UserError
    from mnistbench.report import EmptyReportError
    from mnistbench.specfields import SpecError
    from mnistbench.study.file import StudyFileError
    from mnistbench.study.store import StoreError

    for error in (SpecError, StudyFileError, UnknownDatasetError, DeviceUnavailableError,
                  SVMBackendUnavailableError, EmptyReportError):  # fmt: skip
        assert issubclass(error, UserError), error
    assert issubclass(StoreError, RunFailure) and issubclass(FetchError, RunFailure)
    assert DeviceUnavailableError("x").flag == "--device"
    assert SpecError("batch_size", 0, "must be > 0").flag == "--batch-size"

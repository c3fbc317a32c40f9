"""Golden files of the report: its Markdown, CSV and JSON, byte for byte, for three stores.

- `synthetic`: tests/report/test_report.py's synthetic store (no GPU run), with a study description and
  an experiment description, as `report --study FILE` passes them;
- `synthetic-gpu`: the same store with its CUDA runs finished, one of them beside other runs on
  its GPU (the speedups, the ‡ mark and its footnote);
- `store_v1`: tests/fixtures/store_v1.db, written by an older mnistbench (README there).

The expected files live in tests/golden/report/<store>/. They guard a refactor that moves
modules: a move that changes what the report says fails here, naming the file and showing a
short diff. Only what changes from one test run to the next is masked first (`normalise`).
Plots are off: the Markdown then has no figure lines, and no PNG is drawn.

When a change is meant, regenerate the files and review them before committing:

    MNISTBENCH_REGOLD=1 .venv/bin/python -m pytest tests/test_golden_report.py
    git diff tests/golden/report

With MNISTBENCH_REGOLD=1 these tests write the golden files instead of comparing with them.
tests/golden_files.py compares (and regenerates) the files, for every golden test.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from mnistbench.report import Report, build_report, write_report
from mnistbench.study.store import Store
from tests.golden_files import GOLDEN, assert_matches_golden
from tests.report.test_report import STUDY, build_synthetic_store

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1.db"
FILES = ("report.md", "runs.csv", "runs.json")
STORES = ("synthetic", "synthetic-gpu", "store_v1")

VOLATILE_COLUMNS = ("host", "started_at", "finished_at")
"""Columns the store fills as a run is claimed and finished: this machine's hostname and the
wall-clock times. In a store built by this test they change from run to run; in store_v1.db
they are history written long ago, and stay compared."""


def normalise(file: str, text: str, report: Report, tmp: Path, *, built_now: bool) -> str:
    """Mask what changes from one test run to the next, and nothing else:

    - `report.generated_at`, the wall clock in the machine's time zone, in report.md's header;
    - `tmp`, the test's temporary directory, in the store's path in that header;
    - when this test built the store (`built_now`), the values of VOLATILE_COLUMNS in runs.csv
      and runs.json (empty ones stay: a run never claimed has no host and no times).

    Library versions, git commits and hostnames in the report come from the results stored in
    the stores (`env_*`, the SVM back-end), not from this machine: they are compared as they are.
    """
    text = text.replace(report.generated_at, "<generated at>").replace(str(tmp), "<tmp>")
    if built_now and file == "runs.csv":
        text = _mask_csv_columns(text, VOLATILE_COLUMNS)
    if built_now and file == "runs.json":
        # to_json(indent=1) writes one field per line: `  "host":"vm",`
        names = "|".join(VOLATILE_COLUMNS)
        text = re.sub(rf'^(\s*"(?:{names})":)"[^"]*"', r'\1"<volatile>"', text, flags=re.M)
    return text


def _mask_csv_columns(text: str, columns: tuple[str, ...]) -> str:
    """The CSV with the non-empty values of `columns` replaced; re-written by the csv module,
    which must give the original text back unmasked (else masking would change more)."""

    def written(rows: list[list[str]]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue()

    rows = list(csv.reader(io.StringIO(text)))
    assert written(rows) == text, "runs.csv no longer round-trips through the csv module"
    masked = [index for index, name in enumerate(rows[0]) if name in columns]
    for row in rows[1:]:
        for index in masked:
            row[index] = row[index] and "<volatile>"
    return written(rows)


def _open_store(name: str, directory: Path) -> tuple[Path, str | None, bool]:
    """(store path, study, whether this test wrote its runs) for one of STORES."""
    if name == "store_v1":
        path = directory / "store_v1.db"
        shutil.copyfile(FIXTURE, path)  # opening migrates it: never touch the checked-in file
        return path, None, False  # its only study
    sharing = {
        "resnet18": {"runs_at_once": 3, "runs_on_same_gpu": 2, "mean_runs_on_same_gpu": 1.5},
        "resnet50": {"runs_at_once": 1, "runs_on_same_gpu": 1, "mean_runs_on_same_gpu": 1.0},
    }
    gpu = name == "synthetic-gpu"
    path = build_synthetic_store(
        directory / "results.db", gpu=gpu, gpu_sharing=sharing if gpu else None
    )
    return path, STUDY, True


@pytest.fixture(scope="module", params=STORES)
def written(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, str]]:
    """(store name, {file: normalised text}) of the report of one of STORES, built once."""
    name = request.param
    directory = tmp_path_factory.mktemp(name)
    path, study, built_now = _open_store(name, directory)
    with Store(path) as store:
        report = build_report(
            store,
            study,
            descriptions={"grid_mnist": "Q1(a): ResNets on MNIST."} if study else None,
            study_description="A synthetic study, made by hand." if study else "",
            plots=False,
        )
    write_report(report, directory / "report", ["md", "csv", "json"])
    texts = {
        file: normalise(
            file,
            (directory / "report" / file).read_text(encoding="utf-8"),
            report,
            directory,
            built_now=built_now,
        )
        for file in FILES
    }
    return name, texts


@pytest.mark.parametrize("file", FILES)
def test_the_report_writes_what_its_golden_file_holds(
    written: tuple[str, dict[str, str]], file: str
) -> None:
    name, texts = written
    assert_matches_golden(texts[file], GOLDEN / "report" / name / file)


def test_the_masks_hide_the_volatile_columns_and_nothing_else(tmp_path: Path) -> None:
    path, study, _ = _open_store("synthetic", tmp_path)
    with Store(path) as store:
        report = build_report(store, study, plots=False)
    write_report(report, tmp_path, ["csv", "json"])
    csv_text, json_text = (tmp_path / "runs.csv").read_text(), (tmp_path / "runs.json").read_text()
    masked_csv = normalise("runs.csv", csv_text, report, tmp_path, built_now=True)
    masked_json = normalise("runs.json", json_text, report, tmp_path, built_now=True)
    assert "<volatile>" in masked_csv and "<volatile>" in masked_json
    pairs = [
        (csv.DictReader(io.StringIO(csv_text)), csv.DictReader(io.StringIO(masked_csv))),
        (json.loads(json_text), json.loads(masked_json)),
    ]
    for raw_rows, masked_rows in pairs:
        for raw, masked in zip(raw_rows, masked_rows, strict=True):
            volatile = {column for column in VOLATILE_COLUMNS if raw[column] not in ("", None)}
            assert {column for column in raw if masked[column] != raw[column]} == volatile
            assert all(masked[column] == "<volatile>" for column in volatile)

"""mnistbench.published: the one copy of the published study's numbers, true to its README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mnistbench import published
from mnistbench.published import GridKey, Published, Q2Key, SvmKey

REPO = Path(__file__).resolve().parents[1]
SEED_README = REPO.parent / "shared" / "seed" / "000_48f8ae2cb403eb43.txt"


def test_every_table_is_complete_and_typed() -> None:
    assert len(published.GRID) == 2 * 2 * 2 * 2 * 2  # dataset x model x batch x optimizer x lr
    assert {key.dataset for key in published.GRID} == {"mnist", "fashion-mnist"}
    assert set(published.SVM) == {
        SvmKey(d, k) for d in ("mnist", "fashion-mnist") for k in ("poly", "rbf")
    }
    assert set(published.Q2) == {
        Q2Key(m, d) for m in ("resnet18", "resnet50") for d in ("cpu", "cuda")
    }
    rows: list[Published] = [
        *published.GRID.values(),
        *published.SVM.values(),
        *published.Q2.values(),
    ]
    assert all(row.source and row.table for row in rows)
    assert all(row.train_ms is None for row in published.GRID.values())
    assert all(
        isinstance(row.train_ms, int) for row in (*published.SVM.values(), *published.Q2.values())
    )


def test_the_cells_other_copies_got_wrong_or_lost() -> None:
    # The collapsed ResNet-50 run, a plain tuple looking it up as well as a GridKey.
    cell = published.GRID[("fashion-mnist", "resnet50", 32, "adam", 1e-3)]
    assert cell.accuracy == 50.81 and cell.source == "32 Adam 0.001 91.12 50.81"
    assert published.GRID[GridKey("mnist", "resnet18", 16, "sgd", 0.001)].accuracy == 99.20
    poly = published.SVM[("fashion-mnist", "poly")]  # the row one copy lacked
    assert (poly.accuracy, poly.train_ms, poly.train_seconds) == (89.84, 367_438, 367.438)
    assert published.SVM[("mnist", "poly")].train_ms == 286_093  # not rounded to 286 s
    cpu = published.Q2[("resnet18", "cpu")]
    assert (cpu.accuracy, cpu.train_ms, cpu.macs_per_image) == (87.40, 1_149_299, 1.824e9)
    assert published.SVM_C == 10.0 and published.Q2_EPOCHS == 2
    assert published.Q1A_EPOCHS == {"mnist": 5, "fashion-mnist": 10}
    assert published.NAMES["resnet18"] == "ResNet-18" and published.NAMES["cuda"] == "GPU"
    assert published.NAMES["fashion-mnist"] == "FashionMNIST"


def test_best_is_the_readmes_key_results() -> None:
    key, row = published.best("mnist")
    assert key == ("mnist", "resnet18", 16, "sgd", 1e-3) and row.accuracy == 99.20
    key, row = published.best("fashion-mnist")
    assert key == ("fashion-mnist", "resnet50", 16, "adam", 1e-4) and row.accuracy == 92.60
    assert published.best("mnist", "resnet50")[1].accuracy == 99.11
    with pytest.raises(KeyError):
        published.best("kmnist")


def test_records_are_one_flat_table() -> None:
    records = published.records()
    assert len(records) == 32 + 4 + 4
    assert {r["part"] for r in records} == {"q1a", "q1b_svm", "q2"}
    fashion_poly = [r for r in records if r["part"] == "q1b_svm" and r.get("kernel") == "poly"]
    assert {r["accuracy"] for r in fashion_poly} == {97.61, 89.84}


def _seed_tables() -> tuple[dict[str, list[str]], dict[str, str]]:
    """The README's tables: title -> data rows, as printed; and title -> the footnote under it."""
    tables: dict[str, list[str]] = {}
    footnotes: dict[str, str] = {}
    current = None
    for line in SEED_README.read_text().splitlines():
        line = line.strip()
        if line in {row.table for row in _all_rows()}:
            current = line
            tables.setdefault(current, [])
        elif current is not None and re.match(r"^(\d+ |MNIST |FashionMNIST |GPU |CPU )", line):
            tables[current].append(line)
        elif current is not None and line.startswith("*"):
            footnotes[current] = line
            current = None
        elif line.startswith("Key Insights"):
            current = None
    return tables, footnotes


def _all_rows() -> list[Published]:
    return [*published.GRID.values(), *published.SVM.values(), *published.Q2.values()]


@pytest.mark.skipif(not SEED_README.exists(), reason="the published README is not beside the repo")
def test_every_number_is_the_readmes_and_every_readme_row_is_here() -> None:
    tables, footnotes = _seed_tables()
    assert sorted(len(rows) for rows in tables.values()) == [4, 4, 8, 8]
    ours = {(row.table, row.source) for row in _all_rows()}
    theirs = {(table, line) for table, rows in tables.items() for line in rows}
    assert ours == theirs
    # The epochs are those of the footnote under the dataset's own Q1(a) table.
    for dataset, epochs in published.Q1A_EPOCHS.items():
        (table,) = {row.table for key, row in published.GRID.items() if key.dataset == dataset}
        assert re.fullmatch(
            rf"\* Results with pin_memory=(True|False), Epochs={epochs}", footnotes[table]
        )
    # Values are what their line says: accuracy in the line, time as printed (1,149,299 ms).
    for row in _all_rows():
        assert f"{row.accuracy:.2f}" in row.source.split()
        if row.train_ms is not None:
            assert f"{row.train_ms:,}" in row.source.split()


def test_no_other_module_keeps_a_copy() -> None:
    """The report and the benchmarks read mnistbench.published; a second copy drifts (one had
    lost the FashionMNIST poly row, another rounded the times)."""
    values = {f"{row.accuracy:.2f}" for row in _all_rows()}
    pattern = re.compile(r"(?<![\d.])(" + "|".join(re.escape(v) for v in values) + r")(?![\d])")
    sources = [*(REPO / "src" / "mnistbench").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    copies = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sources
        if path.name != "published.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert copies == []

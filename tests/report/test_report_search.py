"""The report's search section, with the numbers in the store and the Optuna storage: a real
(tiny) SVM search and a grid of the same space in one store."""

from pathlib import Path

import optuna
import pytest

from mnistbench.report.search import search_sections
from mnistbench.study.file import load_study
from mnistbench.study.run import run_study
from mnistbench.study.search import RUN_KEY, open_search
from mnistbench.study.store import Store

pytestmark = pytest.mark.network  # runs on the real datasets (fetched once per session)

STUDY = """
[study]
name = "versus"

[defaults]
dataset = "mnist"
model = "svm"
train_limit = 300
val_fraction = 0.1
val_limit = 100
test_limit = 100
threads = 1

[experiments.grid]
grid = { C = [0.1, 1.0, 10.0], kernel = ["rbf", "poly"] }

[experiments.wider]
description = "The same fixed fields, but a C past the search's space: not its grid"
grid = { C = [100.0], kernel = ["rbf"] }

[experiments.find]

[experiments.find.search]
trials = 5
sampler = "random"
seed = 2

[experiments.find.search.space]
C = [0.1, 1.0, 10.0]
kernel = ["rbf", "poly"]
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory, real_data_root) -> tuple[Path, object]:
    directory = tmp_path_factory.mktemp("versus")
    path = directory / "versus.toml"
    path.write_text(STUDY)
    study = load_study(path)
    run_study(study, directory / "runs.db", root=str(real_data_root))
    return directory / "runs.db", study


def test_the_section_states_the_best_trial_and_its_test_accuracy(searched):
    store_path, study = searched
    opened = open_search(store_path, study, study.experiment("find"), create=False)
    best = opened.best_trial
    with Store(store_path) as store:
        (section,) = search_sections(store, "versus")
        record = store.get(best.user_attrs[RUN_KEY])
    assert section.experiment == "find"
    line = section.lines[0]
    assert line.startswith(f"Best trial: #{best.number} ")
    assert f"validation accuracy {best.value:.2f}" in line
    assert f"test accuracy {record.result.test_accuracy:.2f} %" in line
    assert "not used to choose it" in line
    trials = section.trials.cells
    assert list(trials["trial"]) == [str(t.number) for t in opened.trials]
    assert set(trials["state"]) == {"complete"}
    assert section.plots and section.plots[0].png.startswith(b"\x89PNG")


def test_the_search_sits_beside_the_grid_of_its_space_with_the_compute_each_spent(searched):
    store_path, _ = searched
    with Store(store_path) as store:
        (section,) = search_sections(store, "versus")
        grid = store.runs("versus", "grid")
        keys = {t for t in (r.key for r in store.runs("versus", "find"))}
    versus = section.versus.cells.set_index("")
    assert list(versus.index) == ["search find", "grid grid"]  # not "wider": C past the space
    assert versus.loc["grid grid", "runs"] == "6"
    best = max(grid, key=lambda r: r.result.val_accuracy)
    assert versus.loc["grid grid", "best val %"] == f"{best.result.val_accuracy:.2f}"
    assert versus.loc["grid grid", "its test %"] == f"{best.result.test_accuracy:.2f}"
    assert versus.loc["search find", "runs"] == str(len(keys))
    seconds = sum(r.result.train_seconds for r in grid)
    assert versus.loc["grid grid", "train s"] == f"{seconds:.0f}"


def test_pruned_trials_are_named_with_the_epoch_they_reached(tmp_path):
    """Trials made directly in a storage beside an empty store: the section reads Optuna's."""
    from mnistbench.report.search import _pruned_lines

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    for stop in (2, 3):
        trial = study.ask()
        for epoch in range(1, stop + 1):
            trial.report(50.0, epoch)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    trial = study.ask()
    study.tell(trial, 90.0)
    (line,) = _pruned_lines(study.trials, {})
    assert line == "2 of 3 trials pruned: #0 after epoch 2; #1 after epoch 3."


def test_the_report_writes_the_search_section_and_no_grid_section_for_it(searched, tmp_path):
    from mnistbench.report.build import build_report
    from mnistbench.report.render import write_report

    store_path, _ = searched
    with Store(store_path) as store:
        report = build_report(store, "versus")
    slugs = [s.exp.slug for s in report.sections]
    assert slugs == ["grid", "wider"], "the search is not a grid section"
    written = write_report(report, tmp_path, ("md", "html"))
    markdown = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "## Search: find" in markdown and report.searches[0].lines[0] in markdown
    assert "![find: optimisation history](search-find-history.png)" in markdown
    assert (tmp_path / "search-find-history.png") in written
    assert 'id="search-find"' in html and 'data-table="search-find-versus"' in html

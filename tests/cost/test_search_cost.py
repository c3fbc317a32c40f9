"""What a search will cost at most: its trials left, each at its space's dearest corner, as
the dry run and `study status FILE --json` say."""

import json

import optuna
import pytest

from mnistbench.cli import main
from mnistbench.study.file import load_study, parse_overrides
from mnistbench.study.search import open_search
from tests.stub_probes import stub_probes

# Each trial: 2 epochs of 1000 images (a probe: 24 s, tests/stub_probes.py) or 4 epochs (44 s).
SEARCH = """
[study]
name = "s"

[defaults]
model = "resnet18"
device = "cpu"
train_limit = 1000
test_limit = 500
val_fraction = 0.1
val_limit = 100

[experiments.find]

[experiments.find.search]
trials = 5

[experiments.find.search.space]
epochs = { low = 2, high = 4 }
lr = { low = 1e-3, high = 1e-1, log = true }
"""


def test_dry_run_prices_the_trials_left_at_the_dearest_corner(tmp_path, monkeypatch, capsys):
    stub_probes(monkeypatch)
    path = tmp_path / "search.toml"
    path.write_text(SEARCH)
    store_path = tmp_path / "runs.db"
    # Two trials told already, one left running by a killed search: 2 + 1 still to run.
    study = load_study(path)
    opened = open_search(store_path, study, study.experiment("find"))
    for value in (80.0, 85.0):
        opened.tell(opened.ask(study.experiment("find").search.distributions()), value)
    opened.ask(study.experiment("find").search.distributions())

    assert main(["study", "status", str(path), "--store", str(store_path), "--json", "-"]) == 0
    (search,) = json.loads(capsys.readouterr().out)["searches"]
    assert (search["complete"], search["running"], search["left"]) == (2, 1, 2)
    dearest = search["seconds_at_most"] / 3
    cheapest = tmp_path / "cheap.toml"  # the same search with every trial at 2 epochs
    cheapest.write_text(SEARCH.replace("epochs = { low = 2, high = 4 }", "epochs = [2]"))
    assert (
        main(["study", "status", str(cheapest), "--store", str(tmp_path / "x.db"), "--json", "-"])
        == 0
    )
    (cheap,) = json.loads(capsys.readouterr().out)["searches"]
    assert cheap["seconds_at_most"] / 5 < dearest, "the dearest corner is the 4-epoch one"

    assert main(["study", "run", str(path), "--store", str(store_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (
        "search find: 3 of 5 trials asked (2 complete, 0 pruned, 0 failed, 1 running), 2 left"
        in out
    )
    assert "3 trial(s) to run: at most" in out
    assert (
        len(optuna.load_study(study_name=opened.study_name, storage=opened._storage).trials) == 3
    ), "a dry run asks no trial"


def test_status_with_set_shows_the_search_that_study_run_with_set_runs(
    tmp_path, monkeypatch, capsys
):
    # A smoke (`study run FILE --set ...`) is a search of its own: `study status FILE --set ...`
    # shows it, and without --set the file's own search, which has asked nothing.
    stub_probes(monkeypatch)
    path = tmp_path / "search.toml"
    path.write_text(SEARCH)
    store_path = tmp_path / "runs.db"
    smoke = load_study(path).with_overrides(parse_overrides(["val_limit=50"]))
    opened = open_search(store_path, smoke, smoke.experiment("find"))
    opened.tell(opened.ask(smoke.experiment("find").search.distributions()), 80.0)

    def status(*extra: str) -> dict:
        args = ["study", "status", str(path), "--store", str(store_path), "--json", "-", *extra]
        assert main(args) == 0
        (search,) = json.loads(capsys.readouterr().out)["searches"]
        return search

    assert status("--set", "val_limit=50")["complete"] == 1
    assert status()["complete"] == 0


def test_status_set_without_a_study_file_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["study", "status", "--store", str(tmp_path / "runs.db"), "--set", "epochs=1"])
    assert exit_.value.code == 2
    assert "--set applies to a study file" in capsys.readouterr().err

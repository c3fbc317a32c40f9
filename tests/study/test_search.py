"""Adaptive search for real: Optuna's storage beside a real store, real (tiny) runs, a pruner
that stops a run, a SIGKILLed search that goes on, and --jobs 2."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from mnistbench.pruning import TrialLink
from mnistbench.study.file import load_study
from mnistbench.study.forecast import forecast_run
from mnistbench.study.run import checkpoint_dir_for, expand, run_study
from mnistbench.study.search import SearchCounts, open_search, storage_path
from mnistbench.study.store import Store

pytestmark = pytest.mark.network  # runs on the real datasets (fetched once per session)

SVM_SEARCH = """
[study]
name = "svmsearch"

[defaults]
dataset = "mnist"
model = "svm"
train_limit = 300
val_fraction = 0.1
val_limit = 100
test_limit = 100
threads = 1

[experiments.find]

[experiments.find.search]
trials = {trials}
sampler = "random"
seed = 1

[experiments.find.search.space]
{space}
"""

RESNET_SEARCH = """
[study]
name = "netsearch"

[defaults]
dataset = "mnist"
model = "resnet18"
train_limit = 96
val_fraction = 0.1
val_limit = 64
test_limit = 64
batch_size = 32
threads = 1
memory_format = "contiguous"
small_map_convs = "conv"
epochs = {epochs}

[experiments.find]

[experiments.find.search]
trials = {trials}
sampler = "random"
pruner = "{pruner}"

[experiments.find.search.space]
lr = {{ low = 1e-3, high = 1e-1, log = true }}
"""


def _study(tmp_path: Path, text: str):
    path = tmp_path / "search.toml"
    path.write_text(text)
    return path, load_study(path)


def _trials(store_path: Path, study, name: str = "find") -> list[optuna.trial.FrozenTrial]:
    opened = open_search(store_path, study, study.experiment(name), create=False)
    return opened.get_trials() if opened is not None else []


def test_a_search_runs_its_trials_as_store_runs_and_tells_optuna(tmp_path, real_data_root):
    _, study = _study(
        tmp_path,
        SVM_SEARCH.format(
            trials=4, space='C = { low = 0.1, high = 100.0, log = true }\nkernel = ["rbf", "poly"]'
        ),
    )
    store_path = tmp_path / "runs.db"
    outcome = run_study(study, store_path, root=str(real_data_root))

    assert storage_path(store_path).exists(), "the Optuna storage lies beside the store"
    assert outcome.searches["find"].complete == 4 and outcome.searches["find"].left == 0
    trials = _trials(store_path, study)
    with Store(store_path) as store:
        runs = {record.key: record for record in store.runs()}
        members = store.experiments("svmsearch")
    assert ("svmsearch", "find") in members
    assert len(trials) == 4 and len(runs) == 4
    for trial in trials:
        record = runs[trial.user_attrs["run_key"]]
        assert record.status == "done"
        assert (record.spec.C, record.spec.kernel) == (trial.params["C"], trial.params["kernel"])
        assert trial.value == record.result.val_accuracy, "told the validation accuracy"
        assert (
            trial.value != record.result.test_accuracy
            or record.result.val_accuracy == record.result.test_accuracy
        )

    # Raising `trials` goes on with the same search: 2 more, none of the 4 again.
    _, more = _study(
        tmp_path,
        SVM_SEARCH.format(
            trials=6, space='C = { low = 0.1, high = 100.0, log = true }\nkernel = ["rbf", "poly"]'
        ),
    )
    again = run_study(more, store_path, root=str(real_data_root))
    assert again.searches["find"].complete == 6
    with Store(store_path) as store:
        assert all(record.attempt == 1 for record in store.runs())


def test_a_config_sampled_twice_runs_once(tmp_path, real_data_root):
    _, study = _study(tmp_path, SVM_SEARCH.format(trials=3, space='kernel = ["rbf"]'))
    store_path = tmp_path / "runs.db"
    run_study(study, store_path, root=str(real_data_root))
    trials = _trials(store_path, study)
    with Store(store_path) as store:
        (record,) = store.runs()
    assert len(trials) == 3 and {t.user_attrs["run_key"] for t in trials} == {record.key}
    assert record.attempt == 1
    assert [t.value for t in trials] == [record.result.val_accuracy] * 3


def test_a_grid_search_past_its_grid_and_a_trial_stranded_by_a_kill(tmp_path, real_data_root):
    """Optuna's GridSampler stops a study once its grid is used up (an error outside
    optimize); a trial asked but killed before its spec was kept is still run."""
    text = SVM_SEARCH.format(trials=4, space='kernel = ["rbf", "poly"]').replace(
        '"random"', '"grid"'
    )
    _, study = _study(tmp_path, text)
    store_path = tmp_path / "runs.db"
    experiment = study.experiment("find")
    stranded = open_search(store_path, study, experiment).ask(experiment.search.distributions())
    outcome = run_study(study, store_path, root=str(real_data_root))
    assert outcome.searches["find"] == SearchCounts(complete=4)
    trials = _trials(store_path, study)
    assert trials[stranded.number].state == optuna.trial.TrialState.COMPLETE
    with Store(store_path) as store:
        assert sorted(r.spec.kernel for r in store.runs()) == ["poly", "rbf"]
        assert all(r.attempt == 1 and r.spec.trial is None for r in store.runs())


def test_the_median_pruner_judges_a_trial_through_its_link(tmp_path):
    """The engine's side: an epoch far under the finished trials' median is told to stop."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for _ in range(3):
        trial = study.ask()
        trial.report(90.0, 1)
        study.tell(trial, 90.0)
    weak, strong = study.ask(), study.ask()
    link = {"storage": url, "study": "s", "metric": "val_accuracy", "pruner": "median"}
    assert TrialLink(trial_id=weak._trial_id, **link).hears(1, {"val_accuracy": 10.0}, last=False)
    assert not TrialLink(trial_id=strong._trial_id, **link).hears(
        1, {"val_accuracy": 95.0}, last=False
    )
    assert not TrialLink(trial_id=weak._trial_id, **link).hears(
        2, {"val_accuracy": 10.0}, last=True
    )
    assert not TrialLink(trial_id=weak._trial_id, **{**link, "pruner": "none"}).hears(
        3, {"val_accuracy": 1.0}, last=False
    )
    assert study.trials[3].intermediate_values == {1: 10.0, 2: 10.0, 3: 1.0}


def test_a_pruned_run_is_stored_as_pruned_and_a_grid_takes_it_on(
    tmp_path, real_data_root, monkeypatch
):
    # Every trial's pruner says stop after epoch 1 (Optuna's own pruners: the test above).
    monkeypatch.setattr(TrialLink, "should_stop", lambda self, epoch, value: True)
    _, study = _study(tmp_path, RESNET_SEARCH.format(epochs=3, trials=2, pruner="median"))
    store_path = tmp_path / "runs.db"
    outcome = run_study(study, store_path, root=str(real_data_root))

    assert outcome.searches["find"].pruned == 2
    trials = _trials(store_path, study)
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    with Store(store_path) as store:
        runs = store.runs()
    assert {r.status for r in runs} == {"pruned"}
    for record in runs:
        assert record.result.status == "pruned" and len(record.result.history) == 1
        assert record.result.test_accuracy is None, (
            "a pruned trial spends nothing on the test split"
        )
        assert (checkpoint_dir_for(store_path) / f"{record.key}.ckpt.pt").exists()

    # A grid of the same config takes the pruned run on from its checkpoint, unpruned.
    monkeypatch.undo()
    spec = runs[0].spec
    grid = tmp_path / "grid.toml"
    grid.write_text(RESNET_SEARCH.format(epochs=3, trials=2, pruner="none").split("[experiments.find]")[0]
                    + f"[experiments.grid]\nbase = {{ lr = {spec.lr!r} }}\n")  # fmt: skip
    (planned,) = expand(load_study(grid))
    with Store(store_path) as store:  # the dry run says the grid will run it
        forecast = forecast_run(planned, store.get(planned.key), lambda spec: (1.0, "stub"))
    assert (forecast.status, forecast.seconds) == ("pending", 1.0)
    run_study(load_study(grid), store_path, root=str(real_data_root))
    with Store(store_path) as store:
        record = store.get(spec.key())
    assert record.status == "done" and record.result.resumed_from_epoch == 1
    assert len(record.result.history) == 3


@pytest.mark.slow
def test_a_sigkilled_search_goes_on_with_no_trial_lost_or_run_twice(tmp_path, real_data_root):
    path, study = _study(tmp_path, RESNET_SEARCH.format(epochs=3, trials=3, pruner="none"))
    store_path = tmp_path / "runs.db"
    command = [
        sys.executable, "-m", "mnistbench", "study", "run", str(path),
        "--store", str(store_path), "--root", str(real_data_root), "--quiet",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    checkpoints = checkpoint_dir_for(store_path)
    deadline = time.monotonic() + 300
    while not any(checkpoints.glob("*.ckpt.pt")):  # the first trial is mid-run
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = _trials(store_path, study)
    assert [t.state for t in killed] == [optuna.trial.TrialState.RUNNING]

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    trials = _trials(store_path, study)
    assert [t.number for t in trials] == [0, 1, 2], "no trial lost, none asked past 3"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    with Store(store_path) as store:
        runs = {record.key: record for record in store.runs()}
    first = runs[trials[0].user_attrs["run_key"]]
    assert first.result.resumed_from_epoch >= 1 and first.attempt == 2, "the killed trial resumed"
    assert sorted(r.attempt for r in runs.values()) == [1, 1, 2]
    assert trials[0].params == killed[0].params


@pytest.mark.slow
def test_jobs_2_runs_trials_two_at_a_time_in_worker_processes(tmp_path, real_data_root):
    text = RESNET_SEARCH.format(epochs=1, trials=4, pruner="none")
    # On the CPU: a visible GPU would take the trials in threads of this process.
    _, study = _study(tmp_path, text.replace("threads = 1", 'threads = 1\ndevice = "cpu"'))
    store_path = tmp_path / "runs.db"
    outcome = run_study(study, store_path, jobs=2, root=str(real_data_root))
    assert outcome.searches["find"] == SearchCounts(complete=4)
    with Store(store_path) as store:
        runs = store.runs()
    assert len(runs) == 4
    # Two at a time, and the second batch in the first one's workers: one pool per study run.
    assert len({r.result.environment["worker_pid"] for r in runs}) == 2
    assert all(
        json.loads(r.result.spec["trial"])["study"].startswith("netsearch.find.") for r in runs
    )

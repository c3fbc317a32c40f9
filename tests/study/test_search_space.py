"""The `search` table of a study file: parsed into Optuna's objects, every mistake an error that
names the file, the experiment and the key."""

import pytest

from mnistbench.study.file import StudyFileError, load_study

HEAD = """
[study]
name = "s"

[defaults]
dataset = "fashion-mnist"
model = "resnet18"
val_fraction = 0.1
epochs = 3

[experiments.find]
"""

SPACE = """
[experiments.find.search.space]
lr = { low = 1e-4, high = 1e-1, log = true }
epochs = { low = 1, high = 4 }
optimizer = ["sgd", "adam"]
"""


def _load(tmp_path, search: str, space: str = SPACE, head: str = HEAD):
    path = tmp_path / "study.toml"
    path.write_text(head + "[experiments.find.search]\n" + search + space)
    return load_study(path)


def test_space_becomes_optuna_distributions(tmp_path):
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    study = _load(tmp_path, 'trials = 7\nsampler = "random"\nseed = 3\npruner = "hyperband"\n')
    search = study.experiment("find").search
    assert (search.trials, search.sampler, search.seed, search.pruner) == (
        7,
        "random",
        3,
        "hyperband",
    )
    assert search.metric == "val_accuracy" and search.direction == "maximize"
    dists = search.distributions()
    assert dists["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["epochs"] == IntDistribution(1, 4)
    assert dists["optimizer"] == CategoricalDistribution(("sgd", "adam"))
    assert study.experiment("find").specs() == [], "a search alone runs no grid runs up front"


def test_samplers_and_pruners_are_optunas(tmp_path):
    import optuna

    from mnistbench.pruning import make_pruner

    made = {}
    for sampler in ("tpe", "random", "cmaes"):
        made[sampler] = type(
            _load(tmp_path, f'sampler = "{sampler}"\n').experiment("find").search.make_sampler()
        )
    assert made == {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                    "cmaes": optuna.samplers.CmaEsSampler}  # fmt: skip
    grid = _load(
        tmp_path, 'sampler = "grid"\n', "[experiments.find.search.space]\nlr = [0.1, 0.01]\n"
    )
    assert isinstance(grid.experiment("find").search.make_sampler(), optuna.samplers.GridSampler)
    assert isinstance(make_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("halving"), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)


@pytest.mark.parametrize(
    ("search", "space", "names"),
    [
        ("trials = 0\n", SPACE, "search.trials"),
        ('sampler = "bayes"\n', SPACE, "search.sampler"),
        ('pruner = "asha"\n', SPACE, "search.pruner"),
        ('metric = "test_accuracy"\n', SPACE, "never the test split"),
        ('metric = "f1"\n', SPACE, "search.metric"),
        ("budget = 3\n", SPACE, "unknown key 'budget'"),
        ("", "", "search.space"),
        (
            "",
            "[experiments.find.search.space]\nlearning_rate = [0.1]\n",
            "search.space.learning_rate",
        ),
        ("", "[experiments.find.search.space]\nseed = [0, 1]\n", "search.space.seed"),
        ("", "[experiments.find.search.space]\nlr = { low = 0.1, high = 0.01 }\n", "low < high"),
        (
            "",
            "[experiments.find.search.space]\nlr = { low = 0.0, high = 0.1, log = true }\n",
            "log range",
        ),
        ("", "[experiments.find.search.space]\nlr = { low = 0.01 }\n", "search.space.lr"),
        ("", "[experiments.find.search.space]\nbatch_size = [16, -4]\n", "batch_size"),
        ("", "[experiments.find.search.space]\noptimizer = []\n", "empty list"),
        ('sampler = "grid"\n', SPACE, "lists only"),
    ],
)
def test_bad_search_table_names_the_key(tmp_path, search, space, names):
    with pytest.raises(StudyFileError) as caught:
        _load(tmp_path, search, space)
    message = str(caught.value)
    assert "experiment 'find'" in message and names in message


def test_val_accuracy_needs_a_validation_split(tmp_path):
    head = HEAD.replace("val_fraction = 0.1\n", "")
    with pytest.raises(StudyFileError, match="needs a validation split"):
        _load(tmp_path, "", head=head)
    assert _load(
        tmp_path,
        "",
        head=head.replace('model = "resnet18"', 'model = "resnet18"\nsplit = "assignment"'),
    )


def test_pruning_needs_an_evaluation_each_epoch(tmp_path):
    head = HEAD + "base = { eval_each_epoch = false }\n"
    with pytest.raises(StudyFileError, match="eval_each_epoch"):
        _load(tmp_path, 'pruner = "median"\n', head=head)
    assert _load(tmp_path, 'pruner = "none"\n', head=head)


def test_search_identity_follows_space_and_overrides_not_trials(tmp_path):
    """A raised trial count goes on with the same Optuna study; a --set smoke is another."""
    from mnistbench.study.search import optuna_name

    study = _load(tmp_path, "trials = 5\n")
    more = _load(tmp_path, "trials = 50\n")
    other = _load(tmp_path, "trials = 5\nseed = 1\n")
    smoke = study.with_overrides({"train_limit": 100})
    name = optuna_name(study, study.experiment("find"))
    assert name == optuna_name(more, more.experiment("find"))
    assert name != optuna_name(other, other.experiment("find"))
    assert name != optuna_name(smoke, smoke.experiment("find"))


def test_trial_link_is_not_a_study_file_key(tmp_path):
    with pytest.raises(StudyFileError, match="unknown key 'trial'"):
        _load(tmp_path, "", head=HEAD + 'base = { trial = "x" }\n')


def test_a_range_takes_its_type_from_the_field_not_from_how_it_is_written(tmp_path):
    from optuna.distributions import FloatDistribution

    space = "[experiments.find.search.space]\nweight_decay = { low = 0, high = 1 }\n"
    dists = _load(tmp_path, "", space).experiment("find").search.distributions()
    assert dists["weight_decay"] == FloatDistribution(0.0, 1.0)
    with pytest.raises(StudyFileError, match="epochs is an integer"):
        _load(
            tmp_path,
            "",
            "[experiments.find.search.space]\nepochs = { low = 1, high = 4, step = 0.5 }\n",
        )


@pytest.mark.parametrize(
    ("search", "space", "names"),
    [
        (
            'metric = "train_loss"\ndirection = "maximize"\n',
            SPACE,
            "train_loss is better minimized",
        ),
        (
            "",
            "[experiments.find.search.space]\nmemory_format = ['channels_last', 'contiguous']\n",
            "not searched",
        ),
    ],
)
def test_a_search_that_would_mislead_is_refused(tmp_path, search, space, names):
    with pytest.raises(StudyFileError, match=names):
        _load(tmp_path, search, space)


def test_set_overrides_are_checked_against_the_space(tmp_path):
    study = _load(tmp_path, 'pruner = "median"\n')
    with pytest.raises(StudyFileError, match="eval_each_epoch"):
        study.with_overrides({"eval_each_epoch": False})

"""`headstart evaluate --set`: evaluate.* settings are checked like the run config (typos get a did-you-mean), and
settings of the trained run are refused with the reason, before any model is loaded."""

import pytest

from headstart.config import load_config, save_config
from headstart.errors import HeadstartError
from headstart.evaluate import evaluate_run


@pytest.fixture
def run_folder(tmp_path):
    """A run folder holding only its config: the settings are checked before the model is looked for."""
    save_config(load_config({"name": "demo", "data": {"source": "bbc"}}), tmp_path / "config.yaml")
    return tmp_path


def settings_error(run_folder, *overrides) -> str:
    with pytest.raises(HeadstartError) as caught:
        evaluate_run(run_folder, overrides=list(overrides), progress=False)
    return str(caught.value)


@pytest.mark.parametrize("override, typo, suggestion", [
    ("evaluate.bootstrp=20", "evaluate.bootstrp", "evaluate.bootstrap"),
    ("evaluate.costs.false_postive=2", "evaluate.costs.false_postive", "evaluate.costs.false_positive"),
])
def test_a_typo_gets_the_field_it_meant(run_folder, override, typo, suggestion):
    message = settings_error(run_folder, override)
    assert f"- {typo}: unknown field. Did you mean '{suggestion}'?" in message


@pytest.mark.parametrize("override, reason", [
    ("train.max_epochs=3", "'train' belongs to the trained run: change it in the run config and fit again"),
    ("evalute.bootstrap=3", "there is no 'evalute' section; did you mean 'evaluate'?"),
    ("evaluate.bootstrap", "it has no '='"),
    ("data=3", "name a field of it (data.<field>=value)"),
])
def test_only_evaluate_and_data_settings_can_be_set(run_folder, override, reason):
    message = settings_error(run_folder, override)
    assert f"--set '{override}': `headstart evaluate` changes only evaluate.* settings" in message
    assert reason in message and "evaluate.train" not in message


def test_an_invalid_value_names_the_field(run_folder):
    message = settings_error(run_folder, "evaluate.bootstrap=-1")
    assert "- evaluate.bootstrap: Input should be greater than or equal to 0 (got -1)" in message


@pytest.mark.parametrize("overrides, problem", [
    (["evaluate.costs.false_negative=.inf"], "evaluate.costs.false_negative: Input should be a finite number"),
    (["evaluate.costs.per_class={ok: .nan}"], "evaluate.costs.per_class.ok: Input should be a finite number"),
    (["evaluate.costs.false_negative=0", "evaluate.costs.false_positive=0"], "with both errors free"),
])
def test_costs_that_mean_nothing_are_refused(run_folder, overrides, problem):
    assert problem in settings_error(run_folder, *overrides)


def test_valid_settings_pass_and_the_missing_model_is_reported(run_folder):
    # bare evaluate fields and numeric labels are accepted; the next problem is the run's missing model
    message = settings_error(run_folder, "bootstrap=20", "evaluate.positive_label=1", "evaluate.latency=false")
    assert "has no model folder yet" in message


def test_data_settings_for_another_source_change_only_the_fields_named(run_folder):
    from headstart.evaluate.runner import _data_config

    config = load_config({"name": "demo", "data": {"source": "bbc", "label_column": "topic",
                                                   "split": {"train": 0.6, "val": 0.2, "test": 0.2}}})
    data = _data_config(config, "other.csv", {"split": {"seed": 3}, "text_column": "body"}, "text")
    # the run's own values, not the defaults, where nothing is named
    assert (data.split.seed, data.split.train, data.split.val, data.text_column, data.label_column) == (
        3, 0.6, 0.2, "body", "topic")

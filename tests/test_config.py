"""The run config (headstart/config.py): defaults, helpful errors, `--set` overrides, save / load round trip."""

import re
import subprocess
import sys

import pytest
import yaml

from headstart.config import RunConfig, load_config, save_config
from headstart.errors import HeadstartError

MINIMAL = "name: demo\ndata:\n  source: bbc\n"


def write_config(tmp_path, text=MINIMAL, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_match_the_documented_contract(tmp_path):
    config = load_config(write_config(tmp_path))
    data, head, strategy, train = config.data, config.head, config.strategy, config.train
    assert (data.split.train, data.split.val, data.split.test, data.split.seed) == (0.7, 0.15, 0.15, 0)
    assert (data.balance, data.augment) == ("none", "default")
    assert config.backbone == "minilm"
    assert (head.hidden, head.dropout) == ([256], 0.4)
    assert (strategy.name, strategy.unfreeze, strategy.discriminative_factor) == ("gradual", "plateau", 2.6)
    assert (train.max_epochs, train.batch_size, train.lr, train.patience) == (20, 32, 1e-3, 5)
    assert (train.reduce_lr_factor, train.reduce_lr_patience) == (0.5, 3)
    assert train.precision == "32" and train.seed == 0
    assert config.output == "runs"


@pytest.mark.parametrize("text, typo, suggestion", [
    (MINIMAL + "train:\n  max_epoch: 3\n", "train.max_epoch", "train.max_epochs"),
    (MINIMAL + "bakcbone: minilm\n", "bakcbone", "backbone"),
    (MINIMAL + "  split: {train: 0.7, val: 0.15, test: 0.15, sed: 1}\n", "data.split.sed", "data.split.seed"),
])
def test_a_typo_is_named_and_the_right_field_suggested(tmp_path, text, typo, suggestion):
    with pytest.raises(HeadstartError) as caught:
        load_config(write_config(tmp_path, text))
    message = str(caught.value)
    assert f"{typo}: unknown field" in message
    assert f"Did you mean '{suggestion}'?" in message


def test_set_overrides_are_applied_and_typed(tmp_path):
    config = load_config(write_config(tmp_path), ["train.max_epochs=3", "strategy.unfreeze=[1,2]",
                                                  "train.precision=bf16-mixed", "data.split.seed=7"])
    assert config.train.max_epochs == 3 and isinstance(config.train.max_epochs, int)
    assert config.strategy.unfreeze == [1, 2]
    assert config.train.precision == "bf16-mixed"
    assert config.data.split.seed == 7
    assert config.data.source == "bbc"  # the rest of the file is kept


def test_a_section_set_whole_changes_only_the_fields_given_and_a_hash_is_text(tmp_path):
    text = MINIMAL + "train: {max_epochs: 4, lr: 0.01}\n"
    config = load_config(write_config(tmp_path, text), [
        "train={max_epochs: 3}", "data.group_column=site #2", "data.text_column=#",
        "data.label_column='topic' # quoted: YAML reads the comment"])
    assert (config.train.max_epochs, config.train.lr) == (3, 0.01)  # the file's lr is kept
    assert (config.data.group_column, config.data.text_column, config.data.label_column) == ("site #2", "#", "topic")
    # a trailing colon is text too: YAML alone reads `hf:` as a mapping
    assert load_config(write_config(tmp_path), ["data.group_column=site:"]).data.group_column == "site:"
    with pytest.raises(HeadstartError, match="backbone: hf: names no folder"):
        load_config(write_config(tmp_path), ["backbone=hf:"])


def test_bad_overrides_are_refused(tmp_path):
    with pytest.raises(HeadstartError, match="key.sub=value"):
        load_config(write_config(tmp_path), ["train.max_epochs"])
    with pytest.raises(HeadstartError, match="Did you mean 'train.max_epochs'"):
        load_config(write_config(tmp_path), ["train.max_epoch=3"])
    with pytest.raises(HeadstartError, match=r"--set 'train.lr=\[': the value is not valid YAML \(expected"):
        load_config(write_config(tmp_path), ["train.lr=["])
    for key in ["", "train..lr", ".lr"]:
        with pytest.raises(HeadstartError, match=f"--set '{re.escape(key)}=3': the key '{re.escape(key)}' has an "
                                                 "empty part"):
            load_config(write_config(tmp_path), [f"{key}=3"])


def test_a_mapping_set_on_a_field_replaces_it_and_a_section_check_shows_no_partial_input(tmp_path):
    path = write_config(tmp_path, MINIMAL + "evaluate: {costs: {per_class: {sport: 5}}}\n")
    assert load_config(path, ["evaluate.costs.per_class={tech: 2}"]).evaluate.costs.per_class == {"tech": 2}
    costs = load_config(path, ["evaluate.costs.per_class={}", "evaluate.costs.false_negative=4"]).evaluate.costs
    assert (costs.per_class, costs.false_negative) == ({}, 4)
    assert load_config(path, ["evaluate={costs: {per_class: {x: 1}}}"]).evaluate.costs.per_class == {"x": 1}
    with pytest.raises(HeadstartError) as caught:
        load_config(path, ["data.split.train=0.8"])
    assert "- data.split: train + val + test must add up to 1, got 1.1.\n" in str(caught.value)


@pytest.mark.parametrize("override, field, detail", [
    ("data.split={train: 0.7, val: 0.2, test: 0.2}", "data.split", "must add up to 1"),
    ("head.hidden=[512, 256, 128]", "head.hidden", "at most 2 hidden sizes"),
    ("train.precision=64", "train.precision", "'64'"),
    ("strategy.unfreeze=[4, 2]", "strategy.unfreeze", "in order"),
    ("strategy.unfreeze=platea", "strategy.unfreeze", "give plateau, or a list of whole epochs"),
    ("strategy.unfreeze=[2, x]", "strategy.unfreeze", "give plateau, or a list of whole epochs"),
    # Lightning's settings are checked with the config, not when Lightning starts
    ("train.accelerator=gpux", "train.accelerator", "'auto', 'cpu', 'gpu', 'cuda' or 'mps'"),
    ("train.devices=banana", "train.devices", "a list of GPU indices ([0, 1] or '0,1'), or auto"),
    ("train.devices=0", "train.devices", "a count (1, 2, ...; -1: every GPU)"),
    ("train.strategy=fsdpx", "train.strategy", "'auto' or 'ddp'"),
    # numpy and Lightning refuse these seeds: one crashed after training, in the evaluation
    ("train.seed=-1", "train.seed", "greater than or equal to 0"),
    ("evaluate.seed=-1", "evaluate.seed", "greater than or equal to 0"),
    ("data.split.seed=4294967296", "data.split.seed", "less than or equal to 4294967295"),
    ("strategy.unfreeze=[]", "strategy.unfreeze", "an empty list unfreezes nothing"),
    ("train={accelerator: cpu, precision: 16-mixed}", "train", "precision 16-mixed runs on CUDA GPUs only"),
    ("data.labels=[spam, spam]", "data.labels", "list at least two labels, or give null"),
    ("name=my run", "name", "use letters, digits, _, . and -, starting with a letter or digit"),
])
def test_invalid_values_name_the_field(tmp_path, override, field, detail):
    with pytest.raises(HeadstartError) as caught:
        load_config(write_config(tmp_path), [override])
    message = str(caught.value)
    assert f"- {field}:" in message and detail in message
    assert str(tmp_path / "run.yaml") in message


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(HeadstartError, match="does not exist") as caught:
        load_config(missing)
    assert str(missing) in str(caught.value)


@pytest.mark.parametrize("text, detail", [
    ("name: demo\ndata: [unclosed\n", "is not valid YAML"),
    ("just some words, not a mapping\n", "must hold a mapping"),
])
def test_a_file_that_is_not_a_yaml_mapping_is_named(tmp_path, text, detail):
    path = write_config(tmp_path, text, name="notes.yaml")
    with pytest.raises(HeadstartError, match=detail) as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(MINIMAL.encode() + "# caf\u00e9\n".encode("cp1252"))
    with pytest.raises(HeadstartError, match=f"Config file {path} is not UTF-8 text \\(byte {len(MINIMAL) + 5} "):
        load_config(path)


def test_save_then_load_round_trips(tmp_path):
    config = load_config(write_config(tmp_path), ["strategy.unfreeze=[2,4]", "head.hidden=[128, 64]",
                                                  "data.labels=[business, tech]", "train.lr=3e-4"])
    saved = tmp_path / "resolved.yaml"
    save_config(config, saved)
    assert yaml.safe_load(saved.read_text())["train"]["reduce_lr_patience"] == 3  # every default is written out
    again = load_config(saved)
    assert isinstance(again, RunConfig)
    assert again == config
    assert again.train.precision == "32"


def test_a_bare_off_in_yaml_turns_the_cache_off():
    # YAML reads `off` as false; the cache setting still means "off"
    config = load_config({"name": "x", "data": {"source": "bbc"}}, ["train.cache=off"])
    assert config.train.cache == "off"


def test_the_evaluation_batch_is_small_for_images_on_a_cpu_unless_set():
    train = load_config({"name": "x", "data": {"source": "bbc"}}).train
    assert train.eval_batch_size is None
    assert (train.eval_batch(images_on_cpu=True), train.eval_batch(images_on_cpu=False)) == (8, 64)
    train = load_config({"name": "x", "data": {"source": "bbc"}}, ["train.eval_batch_size=32"]).train
    assert (train.eval_batch(images_on_cpu=True), train.eval_batch(images_on_cpu=False)) == (32, 32)


@pytest.mark.parametrize("devices, parsed", [
    ("2", 2), ("-1", -1), ("auto", "auto"), ("'0,1'", [0, 1]), ("'1,'", [1]), ("[0, 2]", [0, 2]),
])
def test_device_forms_lightning_takes_are_accepted(devices, parsed):
    config = load_config({"name": "x", "data": {"source": "bbc"}}, [f"train.devices={devices}"])
    assert config.train.devices == parsed


def test_gpu_indices_on_the_cpu_are_refused():
    with pytest.raises(HeadstartError, match="train.devices: with accelerator cpu, give a number of processes"):
        load_config({"name": "x", "data": {"source": "bbc"}}, ["train.accelerator=cpu", "train.devices=[0, 1]"])


def test_an_unknown_backbone_is_refused_before_anything_heavy_loads(tmp_path):
    path = write_config(tmp_path, MINIMAL + "backbone: minilmx\n")
    code = ("import sys\nfrom headstart.config import load_config\ntry:\n    load_config(sys.argv[1])\n"
            "except Exception as exc:\n    print(exc)\n"
            "print(sorted(m for m in ('torch', 'lightning', 'transformers', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert "- backbone: Unknown backbone 'minilmx'. Did you mean 'minilm'?" in done.stdout
    assert "efficientnet_lite0" in done.stdout and "hf:<folder>" in done.stdout
    assert done.stdout.strip().endswith("[]")  # nothing heavy was imported to tell


def test_registered_and_prefixed_backbones_pass_the_config():
    from headstart.backbones import registry

    for name in ("minilm", "efficientnet_lite0", "hf:/not/checked/yet", "module:pkg.mod:factory"):
        assert load_config({"name": "x", "data": {"source": "bbc"}, "backbone": name}).backbone == name
    registry.register("mine", lambda data: None)
    try:
        assert load_config({"name": "x", "data": {"source": "bbc"}, "backbone": "mine"}).backbone == "mine"
    finally:
        del registry._REGISTRY["mine"]


def test_numbers_in_text_fields_are_read_as_text(tmp_path):
    config = load_config(write_config(tmp_path, "name: 2024\ndata:\n  source: bbc\n  labels: [0, 1, '0.5']\n"),
                         ["evaluate.positive_label=1", "evaluate.costs.per_class={0: 2}", "data.label_column=7"])
    assert config.name == "2024"
    assert config.data.labels == ["0", "1", "0.5"]
    assert config.evaluate.positive_label == "1" and config.evaluate.costs.per_class == {"0": 2.0}
    assert config.data.label_column == "7"


def test_a_decimal_in_a_text_field_must_be_quoted(tmp_path):
    with pytest.raises(HeadstartError, match="- name: YAML reads an unquoted decimal as a number.*put it in quotes"):
        load_config(write_config(tmp_path), ["name=1.10"])  # YAML would make the run folder "1.1"
    assert load_config(write_config(tmp_path), ["name='1.10'"]).name == "1.10"


@pytest.mark.parametrize("override, field", [
    ("evaluate.positive_label=yes", "evaluate.positive_label"),
    ("data.labels=[no, yes]", "data.labels.0"),
])
def test_a_yaml_boolean_for_a_label_is_refused_with_a_hint_to_quote(tmp_path, override, field):
    with pytest.raises(HeadstartError) as caught:
        load_config(write_config(tmp_path), [override])
    assert f"- {field}: YAML reads an unquoted yes, no, on, off, true or false as true/false" in str(caught.value)
    assert "put it in quotes" in str(caught.value)
    assert load_config(write_config(tmp_path), [override.replace("yes", "'yes'").replace("no", "'no'")])


def test_unfreeze_epochs_start_at_1_because_epoch_0_trains_the_head():
    with pytest.raises(HeadstartError, match="epoch 0, the first, trains the head alone"):
        load_config({"name": "x", "data": {"source": "bbc"}}, ["strategy.unfreeze=[0, 1]"])


def test_early_stopping_must_wait_longer_than_unfreezing_on_plateau():
    config = {"name": "x", "data": {"source": "bbc"}}
    with pytest.raises(HeadstartError, match=r"\n- train.patience \(2\) must be larger than "
                                             r"strategy.unfreeze_patience \(2\) .* instead of unfreezing the next "
                                             r"group\.\n") as caught:
        load_config(config, ["train.patience=2", "strategy.unfreeze_patience=2"])
    assert "got" not in str(caught.value)  # the whole config is not repeated
    assert load_config(config, ["train.patience=3", "strategy.unfreeze_patience=2"]).train.patience == 3
    assert load_config(config, ["train.patience=1", "strategy.unfreeze=[2]"]).train.patience == 1


@pytest.mark.parametrize("overrides", ["train.max_epochs=5", {"train.max_epochs": 5}])
def test_overrides_that_are_not_a_list_are_named(overrides):
    import headstart

    with pytest.raises(HeadstartError, match=r"overrides is a list of 'key.sub=value' strings, e.g. "
                                             r"\['train.max_epochs=5'\], not a (str|dict)"):
        headstart.fit({"name": "x", "data": {"source": "bbc"}}, overrides)


def test_numbers_yaml_1_1_would_change_stay_text(tmp_path):
    # octal, hex, underscores, sexagesimal and dates: PyYAML's defaults give 8, 31, 1000, 90 and a date
    config = load_config(write_config(tmp_path, "name: 2024-01-01\ndata:\n  source: bbc\n"
                                                "  labels: [010, 0x1F, 1_000, '1:30', 1:30, 7, 1e3]\n"))
    assert config.name == "2024-01-01"
    assert config.data.labels == ["010", "0x1F", "1_000", "1:30", "1:30", "7", "1e3"]
    assert load_config(write_config(tmp_path), ["train.lr=1e-3", "train.max_epochs=+3"]).train.lr == 1e-3


def test_a_key_given_twice_is_refused_with_its_lines(tmp_path):
    path = write_config(tmp_path, MINIMAL + "train: {lr: 0.5}\ntrain: {max_epochs: 2}\n")
    with pytest.raises(HeadstartError, match=f"(?s)'train' is given twice \\(first on line 4\\).*in {path}, line 5"):
        load_config(path)
    with pytest.raises(HeadstartError, match="not valid YAML .*unhashable"):  # a list as a key: YAML's own error
        load_config(write_config(tmp_path), ["data.labels={[a]: 1}"])


def test_a_section_with_every_line_commented_out_is_empty(tmp_path):
    path = write_config(tmp_path, MINIMAL + "train:\n#  lr: 0.5\nevaluate:\n  costs:\n")
    assert load_config(path).train.lr == 1e-3
    assert load_config(path, ["train.lr=0.5"]).train.lr == 0.5


@pytest.mark.parametrize("override, field", [("train.lr=.inf", "train.lr"), ("train.cache_memory_gb=.nan",
                                                                              "train.cache_memory_gb"),
                                              ("data.source=''", "data.source")])
def test_infinite_numbers_and_an_empty_source_are_refused(tmp_path, override, field):
    with pytest.raises(HeadstartError, match=f"- {field}: "):
        load_config(write_config(tmp_path), [override])


def test_a_dict_config_may_hold_paths_and_numpy_numbers(tmp_path):
    import numpy as np

    config = load_config({"name": "x", "data": {"source": tmp_path, "split": {"seed": np.int64(3)},
                                                "labels": np.array(["a", "b"])}, "train": {"lr": np.float32(0.5)}}, None)
    assert (config.data.source, config.data.split.seed, config.train.lr) == (str(tmp_path), 3, 0.5)
    assert config.data.labels == ["a", "b"]
    with pytest.raises(HeadstartError, match="a object .* is not a config value"):
        load_config({"name": "x", "data": {"source": object()}})


def test_a_folder_given_as_the_config_file_is_named(tmp_path):
    with pytest.raises(HeadstartError, match=f"{tmp_path} is a folder, not a config file"):
        load_config(tmp_path)


def test_the_output_folder_may_start_with_a_tilde(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_config(write_config(tmp_path), ["output=~/runs"]).run_dir() == tmp_path / "runs" / "demo"


def test_a_module_backbone_without_its_factory_or_an_empty_hf_is_refused_with_the_config(tmp_path):
    with pytest.raises(HeadstartError, match=r"- backbone: module:my_module must name a factory as "
                                             r"module:<package.module>:<function>"):
        load_config({"name": "x", "data": {"source": "bbc"}}, ["backbone=module:my_module"])
    with pytest.raises(HeadstartError, match=r"- backbone: hf: names no folder: give hf:<folder>"):
        load_config({"name": "x", "data": {"source": "bbc"}, "backbone": "hf:"})
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "__init__.py").touch()
    with pytest.raises(HeadstartError, match=rf"names a file: name the module as Python imports it, "
                                             rf"module:pkg.my_module:make, running headstart in {tmp_path / 'src'} "):
        load_config({"name": "x", "data": {"source": "bbc"}},
                    [f"backbone=module:{tmp_path / 'src' / 'pkg' / 'my_module.py'}:make"])
    for given, fix in (("mine/my_module.py", ", running headstart in mine or with it on PYTHONPATH"),
                       ("my_module.py", " \\(got"), ("./my_module", " \\(got")):  # a file, which import cannot take
        with pytest.raises(HeadstartError, match=rf"- backbone: module:{given}:make names a file: name the module as "
                                                 rf"Python imports it, module:my_module:make{fix}"):
            load_config({"name": "x", "data": {"source": "bbc"}}, [f"backbone=module:{given}:make"])


def test_a_saved_config_quotes_texts_that_read_as_numbers(tmp_path):
    config = load_config({"name": "1e3", "data": {"source": "bbc", "labels": ["010", "1e5", "2024-01-01", "7"]}})
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config  # the config's own reading
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text())["data"]["labels"] == config.data.labels  # YAML 1.1


@pytest.mark.parametrize("override, field", [
    ("train.lr=true", "train.lr"), ("train.max_epochs=true", "train.max_epochs"),
    ("data.split.seed=false", "data.split.seed"), ("evaluate.costs.false_negative=yes", "evaluate.costs.false_negative"),
    ("head.hidden=[64, true]", "head.hidden"), ("evaluate.costs.per_class={sport: true}", "evaluate.costs.per_class"),
])
def test_true_or_false_is_not_read_as_a_number(tmp_path, override, field):
    with pytest.raises(HeadstartError, match=rf"{re.escape(field)}: .*give a number, not (true|false)"):
        load_config(write_config(tmp_path), [override])

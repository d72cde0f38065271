"""`headstart compress` / `Run.compress()` end to end on the tiny CNN run: the variants folder, the comparison in
metrics.json and report.html, the variant predictor, and clear refusals of unusable input."""

from __future__ import annotations

import json
import re
import shutil
from html import unescape

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.compress import compress, list_variants, load_variant
from headstart.errors import HeadstartError

VARIANTS = ["fp32-pytorch", "fp32-onnx", "bf16", "int8-static"]


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """A copy of the shared tiny run: compressing writes variants into its model folder, which other tests serve."""
    copy = tmp_path_factory.mktemp("compress") / "tiny"
    shutil.copytree(tiny_run.path, copy)
    return headstart.Run(copy)


@pytest.fixture(scope="module")
def compressed(run):
    return run, run.compress(method="auto", budget=1.0, progress=False)


def test_variants_folder_describes_itself(compressed):
    run, metrics = compressed
    root = run.model_dir / "variants"
    assert list(metrics["variants"]) == VARIANTS
    for name in VARIANTS[1:]:
        manifest = json.loads((root / name / "variant.json").read_text())
        assert manifest["format"] == "headstart-variant" and manifest["name"] == name
        assert (root / name / manifest["file"]).is_file()
        if manifest["runtime"] == "onnxruntime":  # shipped without the exporter's stack traces and local paths
            assert not any(n.metadata_props for n in onnx.load(str(root / name / "model.onnx")).graph.node)
        assert {"method", "precision", "runtime", "accepted", "verdict", "accuracy", "accuracy_drop", "agreement",
                "macro_f1", "size_mb", "latency"} <= set(manifest)
    int8 = json.loads((root / "int8-static" / "variant.json").read_text())
    assert int8["precision"] == "int8" and int8["runtime"] == "onnxruntime"
    assert int8["quantized_groups"] and "head" in int8["quantized_groups"] + int8["float_groups"]
    assert not (root / ".work").exists()
    assert metrics["int8"]["calibration"]["source"] == "the run's validation split"
    assert metrics["int8"]["calibration"]["problems"] == []


def test_comparison_scores_every_variant_on_the_test_split(compressed):
    run, metrics = compressed
    test = run.split.query("split == 'test'")
    assert metrics["data"]["examples"] == len(test)
    full = metrics["variants"]["fp32-pytorch"]
    assert full["accuracy"] == pytest.approx(run.test_metrics["test_acc"], abs=1e-6)
    assert metrics["variants"]["fp32-onnx"]["agreement"] == 1.0
    assert metrics["variants"]["fp32-onnx"]["max_logit_difference"] < 1e-4
    for name, row in metrics["variants"].items():
        assert row["accuracy_drop"] == pytest.approx(100 * (full["accuracy"] - row["accuracy"]))
        assert row["accepted"] == (row["accuracy_drop"] <= 1.0)
        assert row["size_ratio"] == pytest.approx(full["size_mb"] / row["size_mb"])
        t = row["latency"]
        assert t["batch1_p50_ms"] > 0 and t["batch1_p95_ms"] >= t["batch1_p50_ms"] and t["batch32_throughput_per_s"] > 0
        # the model alone skips preprocessing: it runs at least as fast as the whole predictor, within timing noise
        assert t["batch32_model_throughput_per_s"] > 0.5 * t["batch32_throughput_per_s"]
    # the tiny CNN's 4k weights weigh less than its graph: size ratios are checked on the real backbones
    assert metrics["variants"]["bf16"]["size_ratio"] > 1.5
    assert metrics["variants"]["fp32-pytorch"]["latency"]["speedup_batch1"] == 1.0


def test_report_shows_the_numbers_of_metrics_json(compressed):
    run, metrics = compressed
    html = (run.model_dir / "variants" / "report.html").read_text()
    saved = json.loads((run.model_dir / "variants" / "metrics.json").read_text())
    assert saved == metrics
    tagged = re.findall(r"<span data-key='([^']+)'>([^<]+)</span>", html)
    assert len(tagged) > 40
    for key, shown in tagged:
        value = metrics
        for part in json.loads(unescape(key)):
            value = value[part]
        digits = len(shown.split(".")[1]) if "." in shown else 0
        assert float(shown) == pytest.approx(value, abs=10 ** -digits)
    for name in VARIANTS:
        assert f">{name}<" in html


def test_variant_predictor_takes_the_inputs_of_the_full_predictor(compressed, digits_folder):
    run, metrics = compressed
    images = sorted(str(p) for p in digits_folder.rglob("*.png"))[::40]
    full = headstart.load(run.model_dir).predict(images)
    for name in VARIANTS[1:]:
        variant = load_variant(run.model_dir / "variants" / name, force=True)
        predicted = variant.predict(images)
        assert [p["label"] for p in predicted][:3] and set(predicted[0]) == set(full[0])
        agreement = np.mean([a["label"] == b["label"] for a, b in zip(predicted, full)])
        assert agreement >= (1.0 if name == "fp32-onnx" else 0.8)
    accepted = [m["name"] for m in list_variants(run.model_dir, accepted_only=True)]
    assert accepted == [n for n in sorted(VARIANTS[1:]) if metrics["variants"][n]["accepted"]]


def test_a_rejected_variant_opens_only_when_forced(compressed, tmp_path):
    run, _ = compressed
    model = tmp_path / "model"
    shutil.copytree(run.model_dir, model)
    manifest = model / "variants" / "int8-static" / "variant.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "accepted": False, "verdict": "accuracy drop +3.00 points exceeds the "
                                                                          "budget of 1."}))
    with pytest.raises(HeadstartError, match="rejected: accuracy drop"):
        load_variant(model / "variants" / "int8-static")
    assert load_variant(model / "variants" / "int8-static", force=True).predict([np.zeros((16, 16), np.uint8)])
    assert "int8-static" not in [m["name"] for m in list_variants(model, accepted_only=True)]


def test_broken_calibration_set_is_refused_not_used(run, digits_folder, tmp_path):
    one_class = tmp_path / "one-class"
    shutil.copytree(digits_folder / "digit1", one_class / "digit1")
    with pytest.raises(HeadstartError, match=r"set \(--calibration\) is not usable: every example is of one class"):
        compress(run.path, method="static", calibration_data=str(one_class), latency=False, progress=False)
    handful = tmp_path / "handful"
    for digit in ("digit0", "digit1", "digit2"):
        (handful / digit).mkdir(parents=True)
        for image in sorted((digits_folder / digit).glob("*.png"))[:2]:
            shutil.copy(image, handful / digit / image.name)
    with pytest.raises(HeadstartError, match="6 distinct examples; at least 32"):
        compress(run.path, method="static", calibration_data=str(handful), latency=False, progress=False)


def test_forced_broken_calibration_is_marked_in_the_report(run, digits_folder, tmp_path):
    one_class = tmp_path / "one-class"
    shutil.copytree(digits_folder / "digit2", one_class / "digit2")
    metrics = compress(run.path, method="static", calibration_data=str(one_class), latency=False,
                       force_calibration=True, progress=False)
    assert metrics["int8"]["calibration"]["problems"] == ["every example is of one class (digit2)"]
    assert "Broken calibration set" in (run.model_dir / "variants" / "report.html").read_text()


def test_a_model_folder_without_its_run_needs_test_data(run, digits_folder, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(run.model_dir, model, ignore=shutil.ignore_patterns("variants"))
    with pytest.raises(HeadstartError, match="without its run.*--data"):
        compress(model, latency=False, progress=False)
    with pytest.raises(HeadstartError, match="--calibration SOURCE"):
        compress(model, method="static", data=str(digits_folder), latency=False, progress=False)
    metrics = compress(model, method="dynamic", data=str(digits_folder), latency=False, progress=False)
    assert metrics["data"]["scope"] == "all examples" and metrics["data"]["examples"] > 500
    assert (model / "variants" / "int8-dynamic" / "model.onnx").is_file()
    with pytest.raises(HeadstartError, match="neither a run folder"):
        compress(tmp_path, latency=False, progress=False)


def test_quantization_aware_training_variant(run):
    metrics = compress(run.path, method="qat", qat_epochs=1, qat_lr=1e-3, latency=False, progress=False)
    assert list(metrics["variants"]) == ["fp32-pytorch", "fp32-onnx", "bf16", "int8-qat"]
    row = metrics["variants"]["int8-qat"]
    assert "quantization-aware training" in row["method"] and row["agreement"] >= 0.8
    train = int((run.split["split"] == "train").sum())
    assert metrics["int8"]["qat"] == {"epochs": 1, "lr": 1e-3, "examples": train}


def test_cli_compress_prints_the_table_and_refuses_bad_options(run):
    runner = CliRunner()
    result = runner.invoke(app, ["compress", str(run.path), "--method", "bf16", "--no-latency"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "fp32-onnx" in result.output and "bf16" in result.output and "report.html" in result.output
    # the int8 variants of earlier calls were judged on another method: they are gone, so nothing serves them
    assert [v["name"] for v in list_variants(run.model_dir)] == ["bf16", "fp32-onnx"]
    result = runner.invoke(app, ["compress", str(run.path), "--method", "int4", "--no-latency"])
    assert isinstance(result.exception, HeadstartError) and "int4 is not one of" in str(result.exception)

"""`headstart compress` / `Run.compress()` end to end on the tiny CNN run: the variants folder, the comparison in
metrics.json and report.html, the variant predictor, and clear refusals of unusable input."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import onnx
import pytest
import yaml
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.compress import compress, list_variants, load_variant
from headstart.compress.pipeline import LOCK, PREVIOUS, STAGING
from headstart.errors import HeadstartError

VARIANTS = ["fp32-pytorch", "fp32-onnx", "bf16", "int8-static"]


def files(folder) -> dict:
    """Every file under `folder` with its bytes, but compress's lock file (empty, made by the first call)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK}


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """A copy of the shared tiny run: compressing writes variants into its model folder, which other tests serve."""
    copy = tmp_path_factory.mktemp("compress") / "tiny"
    shutil.copytree(tiny_run.path, copy)
    return headstart.Run(copy)


@pytest.fixture(scope="module")
def compressed(run):
    return run, run.compress(method="auto", budget=1.0, progress=False)


def test_a_variant_given_as_a_model_folder_says_how_to_use_it(compressed):
    run, _ = compressed
    variant = run.model_dir / "variants" / "int8-static"
    with pytest.raises(HeadstartError, match=rf"is a compressed variant, not a model folder: .*load_variant.*"
                                             rf"`headstart serve --runtime int8-static`.*takes the model folder, "
                                             rf"{run.model_dir}"):
        headstart.load(variant)


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
        t = row["latency"]  # how fast is a benchmark's to say (bench/): timed here, it fails on busy cores
        assert t["batch1_p50_ms"] > 0 and t["batch1_p95_ms"] >= t["batch1_p50_ms"] and t["batch32_throughput_per_s"] > 0
        assert t["batch32_model_throughput_per_s"] > 0
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
        # ONNX Runtime runs images fastest in batches of 32, PyTorch on a CPU in batches of 8
        assert variant.batch_size == (8 if name == "bf16" else 32)
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


def test_an_onnx_variant_refuses_labels_reordered_by_hand(compressed, tmp_path):
    run, _ = compressed
    model = tmp_path / "model"
    shutil.copytree(run.model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "labels": config["labels"][::-1]}))
    for name in ("fp32-onnx", "int8-static", "bf16"):  # the ONNX files hold no labels; the bf16 weights do
        with pytest.raises(HeadstartError, match=r"lists the labels \['digit2', 'digit1', 'digit0'\], but "
                                                 r"model.safetensors was trained with them in the order"):
            load_variant(model / "variants" / name, force=True)
    renamed = {**config, "labels": ["zero", "one", "two"]}  # renaming is the user's to do
    (model / "config.json").write_text(json.dumps(renamed))
    assert load_variant(model / "variants" / "fp32-onnx", force=True).labels == ["zero", "one", "two"]


def _set_variants(run_dir, settings: dict) -> None:
    """Rewrite variants' manifests: {name: {key: value}}."""
    for name, values in settings.items():
        manifest = run_dir / "model" / "variants" / name / "variant.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), **values}))


def test_serving_picks_the_fastest_accepted_onnx_runtime_variant(compressed, tmp_path):
    from headstart.registry.store import Registry
    from headstart.serve.models import load_predictor

    run, _ = compressed
    copy = tmp_path / "tiny"
    shutil.copytree(run.path, copy)
    registry = Registry(tmp_path / "registry")
    # measured throughputs vary from run to run: set them, and accept both ONNX Runtime variants
    _set_variants(copy, {"fp32-onnx": {"accepted": True, "latency": {"batch32_throughput_per_s": 500.0}},
                         "int8-static": {"accepted": True, "latency": {"batch32_throughput_per_s": 300.0}},
                         "bf16": {"accepted": True, "latency": {"batch32_throughput_per_s": 900.0}}})
    version = registry.push(copy, "tiny")
    # auto chooses among ONNX Runtime variants; the PyTorch bf16 variant is served when named
    assert [load_predictor(version, runtime)[1] for runtime in ("auto", "torch", "int8-static", "bf16")] == [
        "fp32-onnx", "torch", "int8-static", "bf16"]
    _set_variants(copy, {"fp32-onnx": {"accepted": False, "verdict": "accuracy drop +3.00 points exceeds the budget"}})
    version = registry.push(copy, "tiny")  # the faster variant rejected: never served
    assert load_predictor(version, "auto")[1] == "int8-static"
    with pytest.raises(HeadstartError, match="--runtime fp32-onnx: tiny@2 has no accepted variant of that name"):
        load_predictor(version, "fp32-onnx")
    _set_variants(copy, {"int8-static": {"accepted": False}})
    assert load_predictor(registry.push(copy, "tiny"), "auto")[1] == "torch"  # none accepted: the PyTorch model


def test_damaged_variant_files_are_named_not_tracebacks(compressed, tmp_path):
    run, _ = compressed
    model = tmp_path / "model"
    shutil.copytree(run.model_dir, model)
    variants = model / "variants"
    onnx_file = variants / "int8-static" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:500])  # truncated
    (variants / "bf16" / "model.safetensors").write_bytes(b"not safetensors" * 10)
    (variants / "fp32-onnx" / "variant.json").write_text('{"format": "headstart-variant", "name": ')
    for name, file, why in (("int8-static", "model.onnx", "is damaged"), ("bf16", "model.safetensors", "is damaged"),
                            ("fp32-onnx", "variant.json", "is not valid JSON")):
        with pytest.raises(HeadstartError, match=rf"{name}/{file} {why} .*Run `headstart compress` again"):
            load_variant(variants / name)
    with pytest.raises(HeadstartError, match="fp32-onnx/variant.json is not valid JSON"):
        list_variants(model)


def test_broken_calibration_set_is_refused_not_used(run, digits_folder, tmp_path):
    before = files(run.model_dir)
    one_class = tmp_path / "one-class"
    shutil.copytree(digits_folder / "digit1", one_class / "digit1")
    # copies of the run's files: those of test examples are left out of calibration as the same examples
    with pytest.raises(HeadstartError, match=r"set \(--calibration \(\d+ examples that are also test examples left "
                                             r"out\)\) is not usable: every example is of one class"):
        compress(run.path, method="static", calibration_data=str(one_class), latency=False, progress=False)
    handful = tmp_path / "handful"
    for digit in ("digit0", "digit1", "digit2"):
        (handful / digit).mkdir(parents=True)
        for image in sorted((digits_folder / digit).glob("*.png"))[:2]:
            shutil.copy(image, handful / digit / image.name)
    with pytest.raises(HeadstartError, match=r"[1-6] distinct examples; at least 32"):
        compress(run.path, method="static", calibration_data=str(handful), latency=False, progress=False)
    assert files(run.model_dir) == before


def test_calibration_examples_that_are_test_examples_are_left_out(run, digits_folder):
    from headstart.compress.data import load_data

    labels = ["digit0", "digit1", "digit2"]
    data = load_data(run.model_dir, run.path, labels, "image", calibration=str(digits_folder))  # the whole folder
    test = set(data.test.inputs)
    assert len(test) > 50 and not test & set(data.val.inputs)
    every = len(list(digits_folder.rglob("*.png")))
    assert len(data.val) == every - len(test)
    assert data.val_origin == f"--calibration ({len(test)} examples that are also test examples left out)"
    with pytest.raises(HeadstartError, match=r"Every --calibration example \(\d+\) is also a test example"):
        load_data(run.model_dir, run.path, labels, "image", data=str(digits_folder), calibration=str(digits_folder))


def test_the_same_image_files_are_left_out_however_their_paths_are_spelled(run, digits_folder, tmp_path,
                                                                           monkeypatch):
    from headstart.compress.data import load_data

    labels = ["digit0", "digit1", "digit2"]
    (tmp_path / "linked").symlink_to(digits_folder)
    data = load_data(run.model_dir, run.path, labels, "image", calibration=str(tmp_path / "linked"))
    assert len(data.val) == len(list(digits_folder.rglob("*.png"))) - len(data.test)  # none of the test images
    # --data without --calibration: the run's own validation and training examples that --data scores are left out
    data = load_data(run.model_dir, run.path, labels, "image", data=str(tmp_path / "linked"))
    assert data.val is None and data.train is None
    assert data.seen_in_training == (run.split["split"] != "test").sum()  # counted, not scored apart
    with pytest.raises(HeadstartError, match="needs the run's training split, but every example of the run's "
                                             "training split is also a --data example"):
        compress(run.path, method="qat", data=str(tmp_path / "linked"), latency=False, progress=False)
    some = tmp_path / "some"
    some.mkdir()
    (some / "digit0").symlink_to(digits_folder / "digit0")
    data = load_data(run.model_dir, run.path, labels, "image", data=str(some))
    held = {str(p) for p in (digits_folder / "digit0").glob("*.png")}
    assert data.val is not None and not held & set(data.val.inputs) and not held & set(data.train.inputs)
    assert data.val_origin.startswith("the run's validation split (") and "also --data examples left out" in \
        data.val_origin


def test_auto_quantizes_a_cnn_with_a_wide_head_statically(tiny_config):
    tiny_config["head"]["hidden"] = [256, 256]  # more Linear weights in the head than convolution weights in the CNN
    tiny_config["train"]["max_epochs"] = 1
    wide = headstart.fit(tiny_config)
    metrics = compress(wide.path, method="auto", latency=False, progress=False)
    assert metrics["int8"]["kind"] == "static" and "int8-static" in metrics["variants"]
    assert metrics["variants"]["int8-static"]["quantized_groups"] == ["stem", "block", "top", "head"]


def test_a_run_whose_data_is_gone_is_compressed_on_data_given(run, digits_folder, tmp_path):
    moved = Path(shutil.copytree(run.path, tmp_path / "run", ignore=shutil.ignore_patterns("variants")))
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["data"]["source"] = str(tmp_path / "gone")
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(HeadstartError, match="static int8 needs calibration data, and the run's own data could not "
                                             "be read .*gone.* is neither a bundled dataset"):
        compress(moved, method="static", data=str(digits_folder), latency=False, progress=False)
    said = []
    metrics = compress(moved, method="dynamic", data=str(digits_folder), latency=False, progress=said.append)
    assert "is neither a bundled dataset" in metrics["data"]["without_run_data"]
    # dynamic int8 rewrites MatMuls (the head) only: the CNN's convolutions are not claimed as quantized
    assert metrics["variants"]["int8-dynamic"]["quantized_groups"] == ["head"]
    assert any("dynamic int8 leaves" in line and "stem" in line for line in said)
    assert "own splits could not be read" in (moved / "model" / "variants" / "report.html").read_text()
    with pytest.raises(HeadstartError, match="neither a bundled dataset"):  # without --data: nothing to score
        compress(moved, method="dynamic", latency=False, progress=False)


def test_variants_are_listed_and_opened_from_any_path_to_them(compressed, tmp_path, monkeypatch):
    run, _ = compressed
    assert list_variants(run.path) == list_variants(run.model_dir) and list_variants(run.path)
    with pytest.raises(HeadstartError, match="is not a headstart model folder"):
        list_variants(tmp_path / "nosuch")
    monkeypatch.chdir(run.model_dir / "variants")
    assert load_variant("int8-static").model_dir == run.model_dir.resolve()


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


def test_a_stopped_call_leaves_the_previous_set_as_it_was(compressed, monkeypatch):
    run, _ = compressed
    model = run.model_dir
    before = files(model / "variants")

    def stop(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("headstart.compress.report.write", stop)  # the last step before the new set goes in
    with pytest.raises(KeyboardInterrupt):
        compress(run.path, method="bf16", latency=False, progress=False)
    assert files(model / "variants") == before
    assert not (model / STAGING).exists() and not (model / PREVIOUS).exists()
    # a call killed in the middle of its swap: the previous set moved aside, the new one still staged
    (model / "variants").rename(model / PREVIOUS)
    (model / STAGING / "bf16").mkdir(parents=True)
    monkeypatch.setattr("headstart.compress.pipeline.Compression.export", stop)
    with pytest.raises(KeyboardInterrupt):
        compress(run.path, method="bf16", latency=False, progress=False)
    assert files(model / "variants") == before
    assert not (model / STAGING).exists() and not (model / PREVIOUS).exists()


def test_one_call_at_a_time_and_the_model_still_registers(compressed, tmp_path):
    from headstart.registry.store import Registry

    run, _ = compressed
    before = files(run.model_dir / "variants")
    fd = os.open(run.model_dir / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a call in another process holds it
        with pytest.raises(HeadstartError, match="Another `headstart compress` is writing the variants of"):
            compress(run.path, method="bf16", latency=False, progress=False)
    finally:
        os.close(fd)
    assert files(run.model_dir / "variants") == before
    version = Registry(tmp_path / "registry").push(run.path, "tiny")  # the lock file is not part of the model
    assert (version.model_dir / "variants" / "metrics.json").is_file() and not (version.model_dir / LOCK).exists()


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A tiny BERT classifier's model folder (random weights) for the digit labels."""
    from headstart.backbones.registry import build
    from headstart.config import DataConfig
    from headstart.model.classifier import Classifier
    from headstart.model.folder import save_model
    from tests.test_compress_quantize import tiny_bert_folder

    bert = tiny_bert_folder(tmp_path_factory.mktemp("bert"))
    model = Classifier(build(f"hf:{bert}", DataConfig(source="unused", max_length=32)), ["digit0", "digit1", "digit2"],
                       [16], 0.3)
    return save_model(model, tmp_path_factory.mktemp("text") / "model", {"hidden": [16], "dropout": 0.3})


def test_a_model_onnx_cannot_trace_gets_bf16_and_a_short_error_for_int8(digits_folder, tmp_path, capfd):
    from headstart.backbones.registry import build
    from headstart.config import DataConfig
    from headstart.model.classifier import Classifier
    from headstart.model.folder import save_model

    model = Classifier(build("module:tests.tiny:branching_cnn", DataConfig(source="unused")),
                       ["digit0", "digit1", "digit2"], [8], 0.0)
    folder = save_model(model, tmp_path / "model", {"hidden": [8], "dropout": 0.0})
    said = []
    metrics = compress(folder, method="bf16", data=str(digits_folder), latency=False, progress=said.append)
    assert list(metrics["variants"]) == ["fp32-pytorch", "bf16"] and any("fp32-onnx left out" in s for s in said)
    capfd.readouterr()
    with pytest.raises(HeadstartError) as caught:
        compress(folder, method="dynamic", data=str(digits_folder), latency=False, progress=False)
    message = str(caught.value)
    assert message.startswith("Exporting the BranchingCNN model to ONNX failed: ") and "\x1b" not in message
    assert len(message) < 700 and "`--method bf16` needs no export" in message
    assert capfd.readouterr().err == ""  # not the traced graph, line by line
    assert [v["name"] for v in list_variants(folder)] == ["bf16"]  # the failed call kept the set it would replace


def test_data_of_another_modality_is_refused(run, text_model, digits_folder, tmp_path):
    before = files(run.model_dir)
    texts = tmp_path / "texts.csv"
    texts.write_text("text,label\nhello,zero\nworld,one\nagain,two\n")  # the kind is named before the labels
    with pytest.raises(HeadstartError, match=r"The model reads images, but .*texts.csv holds texts: give --data "
                                             r"labelled images \(for a table of image paths.*data.image_column"):
        compress(run.path, data=str(texts), latency=False, progress=False)
    with pytest.raises(HeadstartError, match="reads images, but .*texts.csv holds texts: give --calibration"):
        compress(run.path, calibration_data=str(texts), latency=False, progress=False)
    with pytest.raises(HeadstartError, match="--calibration 'nosuch.csv' is neither a bundled dataset"):
        compress(run.path, calibration_data="nosuch.csv", latency=False, progress=False)
    assert files(run.model_dir) == before
    with pytest.raises(HeadstartError, match="The model reads texts, but .*digits.* holds images: give --data "
                                             "labelled texts."):
        compress(text_model, data=str(digits_folder), latency=False, progress=False)
    assert not (text_model / "variants").exists()


def test_auto_refuses_a_broken_calibration_set_for_its_search_and_says_when_it_skips_qat(text_model, tmp_path,
                                                                                          monkeypatch):
    from headstart.compress import pipeline

    words = ["rates rose", "the striker scored", "shares fell", "a late winner", "profits rose", "the cup final"]
    rows = [f"{words[i % 6]} {i},digit{i % 3}" for i in range(60)]
    (tmp_path / "test.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "one.csv").write_text("text,label\n" + "\n".join(f"sport {i},digit1" for i in range(40)) + "\n")
    options = dict(data=str(tmp_path / "test.csv"), calibration_data=str(tmp_path / "one.csv"), latency=False,
                   progress=False)
    with pytest.raises(HeadstartError, match=r"The calibration set \(--calibration\) is not usable: every example "
                                             r"is of one class \(digit1\)"):  # dynamic int8, but auto's search
        compress(text_model, **options)
    # a small set of every class guides the search of dynamic int8, which takes no activation ranges from it
    (tmp_path / "few.csv").write_text("text,label\n" + "\n".join(f"news {i},digit{i % 3}" for i in range(9)) + "\n")
    few = {**options, "calibration_data": str(tmp_path / "few.csv")}
    assert compress(text_model, **few)["int8"]["calibration"]["problems"] == []
    with pytest.raises(HeadstartError, match=r"it holds 9 distinct examples; at least 32 are needed\. Its activation "
                                             r"ranges"):
        compress(text_model, **{**few, "method": "static"})
    monkeypatch.setattr(pipeline, "_search", lambda *args: ([], {"accuracy_drop": 100.0}, {}))  # a miss
    metrics = compress(text_model, force_calibration=True, **options)
    assert metrics["int8"]["qat"] == {"skipped": "a model folder without its run has no training split: pass the "
                                                 "run folder (runs/<name>)"}
    assert "Validation set of the search" in (text_model / "variants" / "report.html").read_text()


def test_dynamic_quantization_aware_training_needs_no_calibration_set(run, tmp_path, monkeypatch):
    from headstart.compress import pipeline

    small = Path(shutil.copytree(run.path, tmp_path / "run", ignore=shutil.ignore_patterns("variants")))
    split = pd.read_csv(small / "split.csv", dtype=str, keep_default_na=False)
    val = split.index[split["split"] == "val"]
    split.loc[val[6:], "split"] = "train"  # a small labelled dataset: 6 validation examples
    split.to_csv(small / "split.csv", index=False)
    results = json.loads((small / "results.json").read_text())  # as the run would have recorded that split
    results["examples"] = split["split"].value_counts().to_dict()
    (small / "results.json").write_text(json.dumps(results))
    with pytest.raises(HeadstartError, match="holds 6 distinct examples; at least 32 are needed"):
        compress(small, method="qat", qat_epochs=1, latency=False, progress=False)  # static: it calibrates
    monkeypatch.setattr(pipeline, "linear_heavy", lambda backbone: True)  # as for a text model: dynamic int8
    metrics = compress(small, method="qat", qat_epochs=1, latency=False, progress=False)
    assert metrics["int8"]["kind"] == "dynamic" and metrics["int8"]["calibration"] is None


@pytest.mark.parametrize("options, message", [
    (["--method", "qat", "--qat-lr", "-1"], "--qat-lr -1.0: the learning rate"),
    (["--method", "qat", "--qat-lr", "nan"], "--qat-lr nan: the learning rate"),
    (["--qat-epochs", "0"], "--qat-epochs 0: quantization-aware training runs a whole number of epochs, 1 or more"),
    (["--qat-epochs", "-1"], "--qat-epochs -1"),
    (["--budget", "nan"], "--budget nan: the accuracy budget is a number of points of accuracy, 0 to 100"),
    (["--budget", "200"], "--budget 200.0: the accuracy budget"),
    (["--budget", "-0.5"], "--budget -0.5"),
    (["--set", "data.image_column=path"], "--set data.* settings say how to read a --data or --calibration source"),
    (["--set", "data.image_column=["], "--set 'data.image_column=[': the value is not valid YAML"),
    (["--method", "int4"], "--method int4 is not one of"),
])
def test_cli_refuses_bad_options_before_writing(run, options, message):
    before = files(run.model_dir)
    result = CliRunner().invoke(app, ["compress", str(run.path), "--no-latency", *options])
    assert isinstance(result.exception, HeadstartError) and message in str(result.exception)
    assert files(run.model_dir) == before


def test_a_data_setting_typo_gets_the_nearest_field(run, digits_folder):
    with pytest.raises(HeadstartError, match=r"data.image_colum: unknown field. Did you mean 'data.image_column'\?"):
        compress(run.path, data=str(digits_folder), data_settings={"image_colum": "path"}, latency=False,
                 progress=False)


def test_quantization_aware_training_variant(run):
    metrics = compress(run.path, method="qat", qat_epochs=1, qat_lr=1e-3, latency=False, progress=False)
    assert list(metrics["variants"]) == ["fp32-pytorch", "fp32-onnx", "bf16", "int8-qat"]
    row = metrics["variants"]["int8-qat"]
    assert "quantization-aware training" in row["method"] and row["agreement"] >= 0.8
    train = int((run.split["split"] == "train").sum())
    assert metrics["int8"]["qat"] == {"epochs": 1, "lr": 1e-3, "examples": train}


def test_cli_compress_prints_tables_that_read_at_80_columns(compressed, digits_folder):
    run, _ = compressed
    assert any(v["name"].startswith("int8-") for v in list_variants(run.model_dir))  # of an earlier call
    result = CliRunner().invoke(app, ["compress", str(run.path), "--method", "bf16", "--no-latency", "--data",
                                      str(digits_folder)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in result.output
    assert "Compression: all examples of" in result.output and "report.html" in result.output
    for name in ("fp32-pytorch", "fp32-onnx", "bf16"):
        assert sum(f"│ {name} " in line for line in lines) == 2  # whole, in both tables
    metrics = json.loads((run.model_dir / "variants" / "metrics.json").read_text())
    assert metrics["data"]["scope"] == "all examples" and metrics["data"]["examples"] > 500
    # the int8 variants of earlier calls were judged on another method: they are gone, so nothing serves them
    assert [v["name"] for v in list_variants(run.model_dir)] == ["bf16", "fp32-onnx"]


def test_a_drop_of_exactly_the_budget_is_within_it():
    from headstart.compress.data import Split
    from headstart.compress.score import scores

    y = np.zeros(100, int)
    reference = np.eye(3)[[0] * 99 + [1]]  # 99 right
    variant = np.eye(3)[[0] * 98 + [2, 1]]  # 98 right; one mistake into a class absent from the split
    row = scores(Split([None] * 100, y), variant, reference)
    assert row["accuracy_drop"] == 1.0  # not 1.0000000000000009: a 1-point budget accepts it
    # macro-F1 over the split's classes only, whatever classes a variant predicts
    assert row["macro_f1"] == scores(Split([None] * 100, y), np.eye(3)[[0] * 98 + [1, 1]])["macro_f1"]

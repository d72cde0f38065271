"""`headstart evaluate` on tiny runs: the files it writes, determinism, the report against metrics.json, baselines
against an independent scikit-learn computation, costs, slices, latency, another data source, the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import headstart
from headstart.errors import HeadstartError
from headstart.evaluate import evaluate_run, summary_rows
from tests.test_cli import ROOT, cli

FAST = {"bootstrap": 200, "latency": False}


@pytest.fixture(scope="module")
def tiny_metrics(tiny_run):
    return tiny_run.evaluate(**FAST)


@pytest.fixture(scope="module")
def cells_table(digits_folder, tmp_path_factory):
    """The digits as a table: binary label (zero / other) and a metadata column `pen`."""
    folder = tmp_path_factory.mktemp("cells")
    paths = sorted(digits_folder.rglob("*.png"))
    table = pd.DataFrame({"path": [str(p) for p in paths],
                          "label": ["zero" if p.parent.name == "digit0" else "other" for p in paths],
                          "pen": ["A" if i % 2 else "B" for i in range(len(paths))]})
    table.to_csv(folder / "cells.csv", index=False)
    return folder / "cells.csv"


@pytest.fixture(scope="module")
def binary_run(cells_table, tmp_path_factory):
    return headstart.fit({"name": "binary", "data": {"source": str(cells_table), "image_column": "path",
                                                     "metadata_columns": ["pen"], "augment": "none"},
                          "backbone": "module:tests.tiny:tiny_cnn", "head": {"hidden": [16]},
                          "strategy": {"name": "full"}, "train": {"max_epochs": 2, "lr": 0.02},
                          "evaluate": {"slice_by": ["pen"], "costs": {"false_negative": 5.0}, "bootstrap": 200,
                                       "after_fit": False},
                          "output": str(tmp_path_factory.mktemp("binary-runs"))})


def test_a_damaged_metrics_json_is_named_with_what_to_run(tiny_run, tiny_metrics, tmp_path):
    from headstart.run import Run

    copy = tmp_path / "tiny"
    shutil.copytree(tiny_run.path, copy)
    (copy / "metrics.json").write_text('{"overall": ')  # cut short
    with pytest.raises(HeadstartError, match=rf"metrics.json is not valid JSON .*`headstart evaluate {copy}`"):
        Run(copy).evaluation


def test_report_and_metrics_are_written_with_stable_keys(tiny_run, tiny_metrics):
    assert (tiny_run.path / "report.html").is_file()
    saved = json.loads((tiny_run.path / "metrics.json").read_text())
    assert saved == tiny_metrics == tiny_run.evaluation
    assert {"schema", "version", "run", "data", "settings", "overall", "roc", "costs", "slices", "baselines",
            "baselines_left_out", "robustness", "failures", "latency", "training"} == set(saved)
    overall = saved["overall"]
    for name in ("accuracy", "macro_f1", "weighted_f1", "roc_auc"):
        low, high = overall[f"{name}_ci"]
        assert low <= overall[name] <= high, name
    assert "ece_ci" not in overall and 0 < overall["calibration"]["ece_by_chance"] < 0.5
    n = saved["data"]["examples"]
    assert n == (tiny_run.split["split"] == "test").sum()
    assert np.array(overall["confusion_matrix"]["counts"]).sum() == n
    assert set(saved["robustness"]["perturbations"]) == {"darker", "brighter", "lower_contrast", "blur", "noise",
                                                         "rotate", "crop", "jpeg"}
    assert saved["baselines"]["classical"]["description"].startswith("32x32 grayscale pixels")
    assert saved["training"]["epochs"] == tiny_run.history["epoch"].tolist()
    assert saved["latency"] is None and saved["slices"] == {}
    # the served model (headstart.load) gives exactly the run's own test accuracy
    assert overall["accuracy"] == pytest.approx(tiny_run.test_metrics["test_acc"], abs=1e-6)


def test_evaluating_twice_gives_identical_files(tiny_run, tiny_metrics, tmp_path):
    again = evaluate_run(tiny_run.path, output=tmp_path, overrides=FAST, progress=False)
    assert again == tiny_metrics
    assert (tmp_path / "metrics.json").read_bytes() == (tiny_run.path / "metrics.json").read_bytes()
    assert (tmp_path / "report.html").read_bytes() == (tiny_run.path / "report.html").read_bytes()


class _Numbers(HTMLParser):
    """(key path, shown text) of every number the report tags with data-key."""

    def __init__(self):
        super().__init__()
        self.found, self._key = [], None

    def handle_starttag(self, tag, attrs):
        self._key = dict(attrs).get("data-key")

    def handle_data(self, data):
        if self._key is not None:
            self.found.append((json.loads(self._key), data))
            self._key = None


def _check_report_against_metrics(report: Path, metrics: dict) -> int:
    parser = _Numbers()
    parser.feed(report.read_text())
    for key, shown in parser.found:
        value = metrics
        for part in key:
            value = value[part]
        if shown == "n/a":
            assert value is None, key
            continue
        numbers = [float(x) for x in re.findall(r"[-+]?\d+\.?\d*", shown)]
        expected = value if isinstance(value, list) else [value]
        decimals = len(shown.split(",")[0].split(".")[1].rstrip("]")) if "." in shown else 0
        assert numbers == pytest.approx(expected, abs=0.5 * 10 ** -decimals + 1e-9), (key, shown, value)
    return len(parser.found)


def test_report_numbers_match_metrics_json(tiny_run, tiny_metrics):
    checked = _check_report_against_metrics(tiny_run.path / "report.html", tiny_metrics)
    assert checked > 80
    html = (tiny_run.path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 10  # plots and thumbnails are embedded
    for section in ("Per class", "Confusion matrix", "ROC and calibration", "Costs", "Slices", "Baselines",
                    "Robustness", "Failures", "Latency and size", "Training curves"):
        assert f"<h2>{section}" in html


def tuned_on_validation(make_model, x: dict, y: dict) -> tuple[float, float]:
    """(C, test accuracy): the C of lowest validation log loss, as the README says baselines are tuned."""
    from sklearn.metrics import log_loss

    fits = {c: make_model(c).fit(x["train"], y["train"]) for c in (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)}
    c = min(fits, key=lambda c: log_loss(y["val"], fits[c].predict_proba(x["val"]), labels=fits[c].classes_))
    return c, fits[c].score(x["test"], y["test"])


def test_baselines_match_an_independent_scikit_learn_computation(tiny_run, tiny_metrics):
    import torch
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tests.tiny import tiny_cnn

    split = tiny_run.split
    parts = {name: split[split["split"] == name] for name in ("train", "val", "test")}
    labels = {name: rows["label"] for name, rows in parts.items()}
    pixels = {name: np.stack([np.asarray(Image.open(p).convert("L").resize((32, 32), Image.BILINEAR), float).ravel()
                              / 255 for p in rows["origin"]]) for name, rows in parts.items()}
    backbone = tiny_cnn().eval()
    with torch.inference_mode():
        features = {name: backbone(**backbone.prepare(rows["origin"].tolist())).numpy() for name, rows in parts.items()}
    for name, x in (("classical", pixels), ("frozen_logreg", features)):
        c, accuracy = tuned_on_validation(
            lambda c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)), x, labels)
        assert tiny_metrics["baselines"][name]["C"] == c, name
        assert tiny_metrics["baselines"][name]["accuracy"] == pytest.approx(accuracy, abs=0.02), name
        gain = tiny_metrics["baselines"][name]["gain"]
        assert gain["accuracy"] == pytest.approx(tiny_metrics["overall"]["accuracy"] - tiny_metrics["baselines"][name]["accuracy"])
        assert gain["accuracy_ci"][0] <= gain["accuracy"] <= gain["accuracy_ci"][1]


def test_a_setting_given_as_a_keyword_replaces_the_run_s(binary_run, tmp_path):
    # the run's costs are false_negative: 5; per-class costs given from Python replace them (merged, the two kinds
    # of costs would be refused together)
    fast = {"bootstrap": 0, "latency": False, "robustness": False, "baselines": False}
    metrics = binary_run.evaluate(output=tmp_path / "a", progress=False, costs={"per_class": {"zero": 3}}, **fast)
    assert metrics["costs"]["given"].startswith("per class") and metrics["costs"]["matrix"] == [[0, 1], [3, 0]]
    same = evaluate_run(binary_run.path, output=tmp_path / "b", progress=False,
                        overrides={"costs": {"per_class": {"zero": 3}}, **fast})
    assert same["costs"] == metrics["costs"]


def test_a_run_trained_on_a_table_evaluates_a_folder_with_the_folder_s_own_columns(binary_run, digits_folder,
                                                                                     tmp_path):
    # the run's data.image_column names a table's column: a class folder has none, and is read as one
    for path in sorted(digits_folder.rglob("*.png"))[::4]:
        label = "zero" if path.parent.name == "digit0" else "other"
        (tmp_path / "cells" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / "cells" / label / path.name)
    metrics = evaluate_run(binary_run.path, data=str(tmp_path / "cells"), output=tmp_path / "out", progress=False,
                           overrides=dict(slice_by=[], bootstrap=0, latency=False, robustness=False, baselines=False))
    assert metrics["data"]["examples"] == len(list((tmp_path / "cells").rglob("*.png")))


def test_binary_run_costs_slices_and_latency(binary_run, capfd):
    capfd.readouterr()
    messages = []
    metrics = evaluate_run(binary_run.path, progress=messages.append)
    # a callable gets the steps; the bars are left to `progress=True`
    assert "predicting" in " ".join(messages) and "frozen" in " ".join(messages)
    err = capfd.readouterr().err
    assert "predicting:" not in err and "frozen features:" not in err
    assert metrics["data"]["positive_label"] == "zero"  # the rarer class
    costs = metrics["costs"]
    assert costs["given"] == "false positive / false negative"
    assert costs["chosen"]["chosen_on"] == "validation split" and 0 <= costs["chosen"]["threshold"] <= 1
    assert costs["calibrated_optimum"] == pytest.approx(1 / 6)
    pen = metrics["slices"]["pen"]
    assert set(pen["slices"]) == {"A", "B"} and pen["worst"] in {"A", "B"}
    assert sum(s["examples"] for s in pen["slices"].values()) == metrics["data"]["examples"]
    latency = metrics["latency"]
    assert 0 < latency["batch1_p50_ms"] <= latency["batch1_p95_ms"]
    assert latency["batch32_throughput_per_s"] > 0 and latency["model_size_mb"] > 0
    assert latency["batch32_batch_size"] == 8  # 32 images timed as served: in PyTorch's batches of 8
    assert latency["memory_peak_mb"] >= latency["memory_before_load_mb"] > 0
    assert latency["fresh_process"] is True
    _check_report_against_metrics(binary_run.path / "report.html", metrics)


def test_a_registered_backbone_is_timed_in_the_evaluating_process(tiny_config):
    from headstart.backbones import registry
    from tests.tiny import tiny_cnn

    registry.register("tiny-by-name", lambda data: tiny_cnn())  # known to this process only
    try:
        tiny_config.update(backbone="tiny-by-name", evaluate={"bootstrap": 50, "baselines": False,
                                                              "robustness": False})
        tiny_config["train"]["max_epochs"] = 1
        run = headstart.fit(tiny_config)  # the evaluation, latency included, ends the run
    finally:
        del registry._REGISTRY["tiny-by-name"]
    latency = run.evaluation["latency"]
    assert latency["fresh_process"] is False and latency["batch32_throughput_per_s"] > 0
    assert "in the evaluating process (a backbone registered there" in (run.path / "report.html").read_text()


def test_slices_too_small_to_rank_are_shown_unranked(binary_run):
    metrics = evaluate_run(binary_run.path, overrides=["evaluate.min_slice_size=100000", "evaluate.bootstrap=50",
                                                       "evaluate.latency=false"], progress=False)
    pen = metrics["slices"]["pen"]
    assert set(pen["slices"]) == {"A", "B"} and pen["worst"] is None and pen["gap"] is None
    assert "fewer than two slices have 100000 examples (evaluate.min_slice_size), so none is ranked" in (
        binary_run.path / "report.html").read_text()


def test_unknown_slice_column_lists_the_available_ones(binary_run, tiny_run):
    with pytest.raises(HeadstartError, match="no column 'nope'. Columns you can slice by: pen"):
        evaluate_run(binary_run.path, slice_by=["nope"], progress=False)
    with pytest.raises(HeadstartError, match="This data has no metadata columns"):
        evaluate_run(tiny_run.path, slice_by=["cell_type"], progress=False)
    with pytest.raises(HeadstartError, match="evaluate.bootstrap"):
        evaluate_run(tiny_run.path, overrides=["evaluate.bootstrap=-1"], progress=False)
    with pytest.raises(HeadstartError, match="the run has no data.group_column"):
        evaluate_run(binary_run.path, slice_by=["group"], progress=False)
    with pytest.raises(HeadstartError, match="already gives every label its own row"):
        evaluate_run(binary_run.path, slice_by=["label"], progress=False)
    for own in ("y", "exact", "origin"):  # sliced by class index, a KeyError, a self-contradicting message
        with pytest.raises(HeadstartError, match=f"--slice-by {own} .* headstart names its own columns"):
            evaluate_run(binary_run.path, slice_by=[own], progress=False)


def test_cli_evaluates_another_data_source(tiny_run, cells_table, digits_folder, tmp_path):
    table = pd.read_csv(cells_table)
    other = table.assign(label=table["path"].map(lambda p: Path(p).parent.name)).iloc[::7]
    other.to_csv(tmp_path / "new_scans.csv", index=False)
    relative = os.path.relpath(tmp_path / "new_scans.csv", ROOT)  # as typed in the folder the command runs in
    result = cli("evaluate", str(tiny_run.path), "--data", relative, "--slice-by", "pen",
                 "--set", "data.image_column=path", "--set", "evaluate.bootstrap=100", "--set", "evaluate.latency=false",
                 "--set", "evaluate.robustness=false", "--set", "evaluate.baselines=false")
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "worst slice pen=" in result.stdout
    folder = tiny_run.path / "evaluations" / "new_scans"
    assert f"Report: {folder / 'report.html'}" in result.stdout  # where it is, not where a second source would go
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["data"]["scope"] == "all examples" and metrics["data"]["examples"] == len(other)
    # the same image files as the run's own: those it trained or validated on are counted, and said to flatter
    split = tiny_run.split
    trained = {(digits_folder / o).read_bytes() for o in split.loc[split["split"] != "test", "origin"]}
    seen = [p for p in other["path"] if Path(p).read_bytes() in trained]  # the same file, or one of the same bytes
    assert 0 < len(seen) == metrics["data"]["seen_in_training"]
    assert "examples the run trained or validated on (optimistic)" in result.stdout
    assert "inputs the run trained or validated on, so the scores are optimistic" in (folder / "report.html").read_text()
    assert set(metrics["slices"]["pen"]["slices"]) == {"A", "B"}
    assert (folder / "report.html").is_file()


def test_the_run_s_own_images_are_counted_however_their_paths_are_spelled(tiny_run, digits_folder, tmp_path):
    (tmp_path / "some").mkdir()
    (tmp_path / "some" / "digit0").symlink_to(digits_folder / "digit0")  # as compress --data counts them
    shutil.copytree(digits_folder / "digit1", tmp_path / "some" / "digit1")  # copies, each under a new name
    for file in (tmp_path / "some" / "digit1").iterdir():
        file.rename(file.with_name(f"copy-{file.name}"))
    metrics = evaluate_run(tiny_run.path, data=str(tmp_path / "some"), output=tmp_path / "out", progress=False,
                           overrides=dict(bootstrap=0, latency=False, robustness=False, baselines=False))
    split = tiny_run.split
    trained = {(digits_folder / o).read_bytes() for o in split.loc[split["split"] != "test", "origin"]}
    given = [*(tmp_path / "some" / "digit0").iterdir(), *(tmp_path / "some" / "digit1").iterdir()]
    expected = sum(p.read_bytes() in trained for p in given)
    assert expected > ((split["label"] == "digit0") & (split["split"] != "test")).sum() > 0  # copies count too
    assert metrics["data"]["seen_in_training"] == expected


def test_unreadable_images_of_another_source_are_skipped_or_refused_as_fit_would(tiny_run, digits_folder, tmp_path):
    from headstart.compress.data import load_data

    scans = tmp_path / "scans"
    shutil.copytree(digits_folder, scans)
    (scans / "digit1" / "notes.png").write_text("not an image")
    quick = dict(bootstrap=0, latency=False, robustness=False, baselines=False)
    metrics = evaluate_run(tiny_run.path, data=str(scans), output=tmp_path / "out", progress=False, overrides=quick)
    assert metrics["data"]["skipped"] == 1 and metrics["data"]["examples"] == len(list(digits_folder.rglob("*.png")))
    data = load_data(tiny_run.model_dir, tiny_run.path, ["digit0", "digit1", "digit2"], "image", data=str(scans))
    assert len(data.test) == metrics["data"]["examples"]  # compress --data reads it alike
    with pytest.raises(HeadstartError, match=r"notes.png: not an image file that can be decoded"):
        evaluate_run(tiny_run.path, data=str(scans), output=tmp_path / "refused", progress=False, overrides=quick,
                     read={"bad_inputs": "refuse"})


def test_two_sources_of_one_name_keep_their_own_evaluations(tiny_run, cells_table, tmp_path, monkeypatch):
    table = pd.read_csv(cells_table)
    table = table.assign(label=table["path"].map(lambda p: Path(p).parent.name))
    for month, rows in (("october", table.iloc[::5]), ("november", table.iloc[1::5])):
        (tmp_path / month).mkdir()
        rows.to_csv(tmp_path / month / "monthly.csv", index=False)
    fast = dict(read={"image_column": "path"}, progress=False, bootstrap=0, latency=False, robustness=False,
                baselines=False)
    monkeypatch.chdir(tmp_path)  # a relative path names the same source as the absolute one
    october = tiny_run.evaluate("october/monthly.csv", **fast)
    november = tiny_run.evaluate(str(tmp_path / "november" / "monthly.csv"), **fast)
    again = tiny_run.evaluate(str(tmp_path / "october" / "monthly.csv"), **fast)
    folders = tiny_run.path / "evaluations"
    assert october["data"]["source"] == str(tmp_path / "october" / "monthly.csv") == again["data"]["source"]
    assert json.loads((folders / "monthly" / "metrics.json").read_text())["data"]["source"] == again["data"]["source"]
    assert json.loads((folders / "monthly-2" / "metrics.json").read_text()) == november
    assert not (folders / "monthly-3").exists()


def test_grouped_examples_are_bootstrapped_by_group(tiny_run, cells_table, tmp_path):
    table = pd.read_csv(cells_table)
    table = table.assign(label=table["path"].map(lambda p: Path(p).parent.name),
                         writer=[f"w{i % 12}" for i in range(len(table))])
    table.to_csv(tmp_path / "scans.csv", index=False)
    settings = dict(bootstrap=50, latency=False, robustness=False, baselines=False)
    plain = tiny_run.evaluate(str(tmp_path / "scans.csv"), read={"image_column": "path"}, **settings)
    grouped = tiny_run.evaluate(str(tmp_path / "scans.csv"), read={"image_column": "path", "group_column": "writer"},
                                **settings)
    assert plain["settings"]["bootstrap_unit"] == "example" and grouped["settings"]["bootstrap_unit"] == "group"
    assert grouped["overall"]["accuracy"] == plain["overall"]["accuracy"]
    assert grouped["overall"]["accuracy_ci"] != plain["overall"]["accuracy_ci"]
    report = (tiny_run.path / "evaluations" / "scans" / "report.html").read_text()
    assert "resamples of the groups (data.group_column)" in report
    assert grouped["data"]["groups"] == 12 and plain["data"]["groups"] is None
    assert "only 12 groups: the intervals are rough" in report  # a percentile bootstrap of 12 groups falls short
    table.loc[3, "writer"] = None  # one blank group: skipped and named, not a switch to resampling examples
    table.to_csv(tmp_path / "scans.csv", index=False)
    blank = tiny_run.evaluate(str(tmp_path / "scans.csv"), read={"image_column": "path", "group_column": "writer"},
                              **settings)
    assert blank["settings"]["bootstrap_unit"] == "group" and blank["data"]["skipped"] == 1


def test_python_api_reads_another_source_lacking_classes(tiny_run, cells_table, tmp_path):
    table = pd.read_csv(cells_table)
    zeros = table[table["label"] == "zero"].assign(label="digit0")
    blank = pd.DataFrame({"path": [""], "label": ["digit0"], "pen": ["A"]})  # skipped, as a blank text would be
    pd.concat([zeros, blank]).to_csv(tmp_path / "zeros.csv", index=False)
    metrics = tiny_run.evaluate(str(tmp_path / "zeros.csv"), slice_by="pen", read={"image_column": "path"},
                                bootstrap=0, latency=False, robustness=False, baselines=False)
    assert metrics["data"]["examples"] == len(zeros) and set(metrics["slices"]) == {"pen"}
    assert metrics["data"]["skipped"] == 1
    digit2 = metrics["overall"]["per_class"]["digit2"]
    assert digit2["support"] == 0 and digit2["recall"] is None
    assert metrics["overall"]["calibration"]["ece_by_chance"] is not None  # a simulation, not a bootstrap
    with pytest.raises(HeadstartError, match=r"settings \(read= in Python\) say how to read a --data source; give "
                                             r"--data \(data=\) too"):
        tiny_run.evaluate(read={"image_column": "path"})


def test_another_source_is_scored_where_the_runs_own_data_is_gone(binary_run, cells_table, tmp_path):
    # the run copied to a machine without its training table: new labelled data can still be evaluated
    run = Path(shutil.copytree(binary_run.path, tmp_path / "run"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["source"] = str(tmp_path / "gone" / "cells.csv")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(HeadstartError, match="neither a bundled dataset"):  # its own test split needs the data
        evaluate_run(run, progress=False)
    metrics = evaluate_run(run, data=str(cells_table), overrides={"bootstrap": 50, "latency": False},
                           progress=False)
    assert "gone/cells.csv' is neither a bundled dataset" in metrics["data"]["without_run_data"]
    assert metrics["baselines"] is None and "chosen" not in metrics["costs"]
    trained_on = pd.read_csv(run / "split.csv").query("split == 'train'")["label"].value_counts()
    assert metrics["data"]["positive_label"] == trained_on.idxmin()  # the rarer class, from split.csv's labels
    report = (run / "evaluations" / "cells" / "report.html").read_text()
    assert "could not be read, so the baselines and the threshold chosen on validation are left out" in report
    assert "whether these examples include some the run trained or validated on is not known" in report
    assert ("examples the run trained or validated on", "unknown", "") in summary_rows(metrics)
    assert "false negatives" in report and "No threshold is chosen" in report  # still a two-class cost table


def test_data_of_another_kind_is_named_before_its_labels(tiny_run, tmp_path):
    texts = tmp_path / "texts"
    for label in ("zero", "one"):  # labels the model does not know either
        (texts / label).mkdir(parents=True)
        (texts / label / "a.txt").write_text(f"a story about {label}")
    with pytest.raises(HeadstartError, match=r"The model reads images, but .*texts holds texts: give --data "
                                             "labelled images"):
        tiny_run.evaluate(str(texts), bootstrap=0, latency=False, robustness=False, baselines=False)


@pytest.mark.parametrize("point", ["making the report", "writing the second file"])
def test_an_interrupted_evaluation_leaves_the_previous_files(tiny_run, tiny_metrics, monkeypatch, point):
    before = {name: (tiny_run.path / name).read_bytes() for name in ("metrics.json", "report.html")}
    flushes = []
    flush = os.fsync

    def interrupted(*args):
        flushes.append(args)
        if point == "making the report" or len(flushes) == 2:  # the first file is written by then
            raise KeyboardInterrupt
        flush(*args)

    monkeypatch.setattr(*(("headstart.evaluate.report.report_html", interrupted) if point == "making the report"
                          else (os, "fsync", interrupted)))
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(tiny_run.path, overrides={"bootstrap": 50, "latency": False, "baselines": False}, progress=False)
    assert {name: (tiny_run.path / name).read_bytes() for name in before} == before
    assert not list(tiny_run.path.glob(".*.tmp"))


def test_damaged_model_files_are_named(tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run.path, tmp_path / "run"))
    config_path, weights = run / "model" / "config.json", run / "model" / "model.safetensors"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "labels": config["labels"] + ["digit9"]}))
    with pytest.raises(HeadstartError, match="does not match the architecture in .* labels or head changed by hand"):
        evaluate_run(run, progress=False)
    config_path.write_text(json.dumps({**config, "labels": config["labels"][::-1]}))
    with pytest.raises(HeadstartError, match=r"lists the labels \['digit2', 'digit1', 'digit0'\], but model.safetensors "
                                             r"was trained with them in the order \['digit0', 'digit1', 'digit2'\]"):
        evaluate_run(run, progress=False)
    config_path.write_text(json.dumps(config))
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(HeadstartError, match="model.safetensors is not a readable safetensors file"):
        evaluate_run(run, progress=False)


def test_an_image_of_the_run_damaged_since_training_is_named(tmp_path, tiny_config):
    import headstart

    source = Path(shutil.copytree(tiny_config["data"]["source"], tmp_path / "digits"))
    run = headstart.fit({**tiny_config, "data": {**tiny_config["data"], "source": str(source)},
                         "train": {**tiny_config["train"], "max_epochs": 1}})
    damaged = next((source / "digit1").iterdir())
    damaged.write_text("junk")
    with pytest.raises(HeadstartError, match=f"{damaged}: not an image file that can be decoded.* restore it, or "
                                             "evaluate on other"):
        evaluate_run(run.path, progress=False)


def test_outputs_that_cannot_be_written_are_refused_before_the_work(tiny_run, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(HeadstartError, match="afile is a file. Give a folder"):
        evaluate_run(tiny_run.path, output=tmp_path / "afile" / "sub", progress=False)
    fit = cli("fit", "configs/bbc.yaml", "--set", f"output={tmp_path / 'afile'}")
    assert fit.returncode == 2 and "Not a directory" in fit.stderr and "Traceback" not in fit.stderr


def test_a_registered_versions_run_record_points_to_its_run(tiny_run, tmp_path):
    from headstart.registry import Registry

    version = Registry(tmp_path / "reg").push(tiny_run.path, "digits")
    with pytest.raises(HeadstartError, match=f"registered version's record .* which was {tiny_run.path.resolve()}"):
        evaluate_run(version.path / "run", progress=False)


def test_model_size_leaves_out_compressed_variants(tmp_path):
    from headstart.evaluate.latency import folder_size

    (tmp_path / "variants" / "bf16").mkdir(parents=True)
    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "variants" / "bf16" / "model.safetensors").write_bytes(b"x" * 50)
    (tmp_path / ".variants-staging").mkdir()
    (tmp_path / ".variants-staging" / "model.onnx").write_bytes(b"x" * 50)
    (tmp_path / "backbone").mkdir()
    (tmp_path / "backbone" / "vocab.txt").write_bytes(b"x" * 10)
    assert folder_size(tmp_path) == 110


def test_cli_explains_a_missing_image_column_and_a_folder_that_is_not_a_run(tiny_run, cells_table, tmp_path):
    result = cli("evaluate", str(tiny_run.path), "--data", str(cells_table))
    assert result.returncode == 2 and "--set data.image_column=COLUMN" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    result = cli("evaluate", str(tmp_path))
    assert result.returncode == 2 and "is not a run folder" in result.stderr
    result = cli("evaluate", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "nothing does not exist" in " ".join(result.stderr.split())


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian package: chromium)")
def test_report_renders_in_a_browser(tiny_run, tiny_metrics, tmp_path):
    page = tmp_path / "page.html"
    # count, in the browser, the images that decoded: a broken embedded PNG has no natural width
    page.write_text((tiny_run.path / "report.html").read_text().replace(
        "</body>", "<script>addEventListener('load',()=>{document.title='images:'+[...document.images].filter("
                   "i=>i.naturalWidth>0).length+'/'+document.images.length})</script></body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    loaded, total = map(int, re.search(r"<title>images:(\d+)/(\d+)</title>", dom.stdout).groups())
    assert total >= 10 and loaded == total
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1280,3000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape == (3000, 1280) and image.std() > 10  # a drawn page, not a blank one


def test_a_table_edited_or_re_sorted_since_the_run_is_refused(tiny_config, digits_folder, tmp_path):
    paths = sorted(digits_folder.rglob("*.png"))
    table = tmp_path / "digits.csv"
    data = pd.DataFrame({"image": [str(p) for p in paths], "label": [p.parent.name for p in paths]})
    data.to_csv(table, index=False)
    tiny_config["data"].update(source=str(table), image_column="image")
    tiny_config["train"]["max_epochs"] = 1
    run = headstart.fit(tiny_config)
    settings = {"bootstrap": 0, "latency": False, "baselines": False, "robustness": False, "progress": False}
    data.sample(frac=1, random_state=0).to_csv(table, index=False)  # the same rows, re-sorted
    with pytest.raises(HeadstartError, match=r"examples of \S+split.csv no longer have the label or input they had"):
        run.evaluate(**settings)
    assert data.loc[0, "label"] == data.loc[1, "label"]
    data.assign(image=[data.loc[1, "image"], *data["image"][1:]]).to_csv(table, index=False)  # its label unchanged
    with pytest.raises(HeadstartError, match=r"1 examples of .* \(first: digits.csv row 2\)"):
        run.evaluate(**settings)
    data.to_csv(table, index=False)
    split = run.path / "split.csv"
    whole = split.read_text()
    split.write_text("".join(whole.splitlines(keepends=True)[:-3]))
    with pytest.raises(HeadstartError, match=r"but the run trained and tested with .*: split.csv was changed"):
        run.evaluate(**settings)
    split.write_text(whole)
    assert run.evaluate(**settings)["data"]["examples"] == run.results["examples"]["test"]


@pytest.mark.parametrize("name, damage, message", [
    ("metrics.csv", 'epoch,train_loss\n"0,1\n', r"metrics.csv cannot be read \(Error tokenizing data.*Put it back, or "
                                               "delete it to evaluate without the training curves"),
    ("metrics.csv", "epoch,train_loss\nx,1\n", r"metrics.csv cannot be read \(invalid literal for int"),
    ("results.json", '{"test":', r"results.json is not valid JSON .* Put back the results.json the run wrote"),
    ("results.json", "[1, 2]", "results.json holds a JSON list, not an object")])
def test_a_damaged_record_of_the_run_is_named(tiny_run, tmp_path, name, damage, message):
    run = Path(shutil.copytree(tiny_run.path, tmp_path / "run"))
    (run / name).write_text(damage)
    with pytest.raises(HeadstartError, match=message):
        evaluate_run(run, overrides={"bootstrap": 0, "latency": False, "baselines": False, "robustness": False},
                     progress=False)


@pytest.mark.parametrize("option", ["data", "output"])
def test_an_empty_data_or_output_is_refused(tiny_run, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an empty path would write
    shown = {"data": "--data", "output": "--out"}[option]
    with pytest.raises(HeadstartError, match=f"{shown} is empty: give "):
        evaluate_run(tiny_run.path, **{option: " "}, progress=False)


def test_out_never_writes_over_another_evaluation(tiny_run, digits_folder, tmp_path):
    quick = {"bootstrap": 0, "latency": False, "baselines": False, "robustness": False}
    out = tmp_path / "out"
    evaluate_run(tiny_run.path, output=out, overrides=quick, progress=False)
    (out / ".metrics.json.4242.1.tmp").write_text("{")  # as a kill -9 mid-write leaves
    evaluate_run(tiny_run.path, output=out, overrides=quick, progress=False)  # this run on this data again: replaced
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "report.html"]
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(HeadstartError, match=rf"--out {re.escape(str(out))} already holds the evaluation of run tiny "
                                             "on .*, which this evaluation would write over"):
        evaluate_run(tiny_run.path, data=str(digits_folder / "digit1"), output=out, overrides=quick, progress=False)
    assert (out / "metrics.json").read_bytes() == before
    other = Path(shutil.copytree(tiny_run.path, tmp_path / "other", ignore=shutil.ignore_patterns("metrics.json")))
    with pytest.raises(HeadstartError, match="is another run's folder"):
        evaluate_run(tiny_run.path, output=other, overrides=quick, progress=False)
    (out / "metrics.json").write_text(json.dumps({"schema": "headstart-compression"}))
    with pytest.raises(HeadstartError, match="already holds a metrics.json that is not an evaluation"):
        evaluate_run(tiny_run.path, output=out, overrides=quick, progress=False)


def test_an_image_s_digest_in_split_csv_does_not_depend_on_where_its_folder_is():
    from headstart.data.split import input_digest

    # the bundled images live in site-packages: a new environment moves them, and the run must still evaluate
    moved = ("/env-a/lib/python3.11/site-packages/elpv_dataset/data/images/cell0001.png",
             "/env-b/lib/python3.12/site-packages/elpv_dataset/data/images/cell0001.png")
    assert input_digest(moved[0], "image") == input_digest(moved[1], "image")
    assert input_digest(moved[0], "image") != input_digest(moved[0].replace("0001", "0002"), "image")
    assert input_digest(moved[0], "text") != input_digest(moved[1], "text")  # a text is its whole content


def test_run_evaluate_slice_by_replaces_the_run_s_slices(binary_run, tmp_path):
    quick = {"bootstrap": 0, "latency": False, "robustness": False, "baselines": False, "progress": False}
    assert list(binary_run.evaluate(output=tmp_path / "a", **quick)["slices"]) == ["pen"]  # evaluate.slice_by
    assert binary_run.evaluate(output=tmp_path / "b", slice_by=[], **quick)["slices"] == {}

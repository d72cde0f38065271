"""End to end on the real backbones and bundled data, on small subsets: fit, the run folder, load, predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import headstart
from headstart.config import DataConfig
from headstart.data.sources import read_source

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _subset(source: str, per_class: int) -> pd.DataFrame:
    frame = read_source(DataConfig(source=source)).frame
    return frame.groupby("label").sample(per_class, random_state=0)


@pytest.fixture(scope="module")
def bbc_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bbc")
    _subset("bbc", 24).rename(columns={"input": "text"})[["text", "label"]].to_csv(folder / "news.csv", index=False)
    return headstart.fit({
        "name": "bbc-small", "data": {"source": str(folder / "news.csv"), "max_length": 64},
        "backbone": "minilm", "strategy": {"unfreeze": [4]},
        "train": {"max_epochs": 5, "batch_size": 16, "lr": 3e-3, "precision": "bf16-mixed"},
        "evaluate": {"bootstrap": 100, "latency": False}, "output": str(folder / "runs")})


def test_bbc_run_folder_and_metrics(bbc_run):
    names = {p.name for p in bbc_run.path.iterdir()}
    assert {"config.yaml", "split.csv", "leakage.csv", "data_problems.csv", "metrics.csv", "checkpoints", "model",
            "results.json", "report.html", "metrics.json"} <= names  # fit evaluates the test split at the end
    assert bbc_run.evaluation["overall"]["accuracy"] == pytest.approx(bbc_run.test_metrics["test_acc"], abs=1e-6)
    history = bbc_run.history
    assert history["trainable_groups"].tolist() == [1, 1, 1, 1, 2]
    # the head-only stage records the frozen features once, then replays them; the last epoch's stage could never
    # replay, so it records nothing
    assert history["cache"].tolist() == ["record", "replay", "replay", "replay", "off"]
    assert history["padding"].dropna().between(0, 0.5).all()  # blank where replayed features have no tokens
    assert bbc_run.test_metrics["test_acc"] > 0.8  # 5 topics, 84 training texts
    config = json.loads((bbc_run.model_dir / "config.json").read_text())
    assert config["labels"] == ["business", "entertainment", "politics", "sports", "tech"]
    assert config["preprocessing"]["max_length"] == 64


def test_bbc_model_predicts_without_the_run(bbc_run, tmp_path):
    moved = tmp_path / "model"
    bbc_run.model_dir.rename(moved)  # the model folder is self-contained
    table = tmp_path / "articles.jsonl"
    pd.DataFrame({"body": ["The central bank raised interest rates again as inflation rose.",
                           "The goalkeeper saved a penalty in the final minute of the match."]}).to_json(
        table, orient="records", lines=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        result = subprocess.run([sys.executable, "-m", "headstart.cli", "predict", str(moved), str(table),
                                 "--text-column", "body", "--json"], env=env, capture_output=True, text=True,
                                timeout=600)
    finally:  # back for the tests that follow
        moved.rename(bbc_run.model_dir)
    assert result.returncode == 0, result.stderr
    labels = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    assert labels == ["business", "sports"]


@pytest.fixture(scope="module")
def elpv_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("elpv")
    subset = _subset("elpv", 30)
    pd.DataFrame({"path": subset["input"], "defect": subset["label"], "cell": subset["cell_type"]}).to_parquet(
        folder / "cells.parquet", index=False)
    return headstart.fit({
        "name": "elpv-small",
        "data": {"source": str(folder / "cells.parquet"), "image_column": "path", "label_column": "defect",
                 "metadata_columns": ["cell"], "image_size": 96},
        "backbone": "efficientnet_lite0", "strategy": {"unfreeze": [1]}, "evaluate": {"after_fit": False},
        "train": {"max_epochs": 2, "batch_size": 16, "precision": "bf16-mixed"}, "output": str(folder / "runs")})


def test_elpv_model_reproduces_its_test_metrics(elpv_run):
    model = headstart.load(elpv_run.model_dir)
    assert model.labels == ["defect", "ok"] and model.modality == "image"
    test = elpv_run.split.query("split == 'test'")
    paths = pd.read_parquet(Path(elpv_run.config.data.source))["path"]
    inputs = [paths.iloc[int(origin.rsplit(" ", 1)[1]) - 1] for origin in test["origin"]]
    predicted = model.probabilities(inputs).argmax(1)
    truth = torch.tensor([model.labels.index(label) for label in test["label"]])
    accuracy = float((predicted == truth).float().mean())
    # the restored best checkpoint, saved as safetensors and reloaded, gives the run's own test accuracy
    assert accuracy == pytest.approx(elpv_run.test_metrics["test_acc"], abs=1e-6)
    assert elpv_run.history["trainable_groups"].tolist() == [1, 2]

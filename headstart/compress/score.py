"""Scores of a variant against the full model: accuracy and macro-F1 (over the classes of the data), agreement of
the predicted classes, the drop in points of the headline metric (accuracy), size on disk, and latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from headstart.compress.data import Split

HEADLINE = "accuracy"


def onnx_probabilities(path: Path, batches: list) -> np.ndarray:
    """Class probabilities of an ONNX model on prepared batches (softmax in float64)."""
    from headstart.compress.export import run_logits, session

    sess = session(path)
    logits = np.concatenate([run_logits(sess, batch) for batch in batches]).astype(np.float64)
    logits -= logits.max(1, keepdims=True)
    proba = np.exp(logits)
    return proba / proba.sum(1, keepdims=True)


def scores(split: Split, proba: np.ndarray, reference: np.ndarray | None = None) -> dict:
    """accuracy, macro_f1 (over the classes of the split, the same for every variant), and (against the reference
    probabilities) agreement and accuracy_drop in points."""
    from sklearn.metrics import f1_score

    predicted = proba.argmax(1)
    out = {"accuracy": float((predicted == split.y).mean()),
           "macro_f1": float(f1_score(split.y, predicted, labels=np.unique(split.y), average="macro",
                                      zero_division=0))}
    if reference is not None:
        out["agreement"] = float((predicted == reference.argmax(1)).mean())
        # from counts: a drop of exactly the budget (1 of 100 examples: 1 point) must not read 1.0000000000000009
        lost = int((reference.argmax(1) == split.y).sum()) - int((predicted == split.y).sum())
        out["accuracy_drop"] = 100 * lost / len(split.y)
    return out


def size_mb(path: Path) -> float:
    return Path(path).stat().st_size / 2**20


def latency(folder: Path, inputs: list, loader: str, model_dir: Path) -> dict:
    """p50 / p95 at batch 1, throughput on 32 inputs as served (in the variant's own batches) and of the model alone
    on one prepared batch of 32, timed in a fresh process (headstart.evaluate.latency); `model_dir`: the model
    folder the variant was made from."""
    from headstart.evaluate.latency import measure

    timed = measure(folder, inputs, loader, model_dir)
    keys = ("batch1_p50_ms", "batch1_p95_ms", "batch32_throughput_per_s", "batch32_batch_size",
            "batch32_model_throughput_per_s", "load_seconds", "memory_peak_mb", "threads",
            "machine", "load_average")
    return {key: timed[key] for key in keys}

"""Baselines fit on the run's own training split and scored on the evaluated examples. Each is a logistic
regression whose regularisation strength C is chosen on the validation split (lowest log loss over C_GRID), as the
fine-tuned model's best epoch is: an untuned C = 1 overfits a few thousand examples of a 1280-wide feature vector
and flatters fine-tuning. Nothing is tuned on the evaluated examples.

- `frozen_logreg`: the pretrained backbone, frozen, as a feature extractor, with a logistic-regression head
  (StandardScaler + LogisticRegression), features computed at the run's precision (bf16 autocast for
  `train.precision: bf16-mixed`). What fine-tuning has to beat to be worth its cost.
- `classical`: no deep learning. Texts: TF-IDF (sublinear term frequency) + logistic regression. Images: 32x32
  grayscale pixels scaled to [0, 1] + StandardScaler + logistic regression.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from headstart.config import RunConfig
from headstart.evaluate.examples import EvalData, targets

PIXELS = 32
MAX_ITER = 5000
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
DESCRIPTIONS = {
    "frozen_logreg": "pretrained backbone, frozen, + logistic regression on its features",
    "classical_text": "TF-IDF + logistic regression",
    "classical_image": f"{PIXELS}x{PIXELS} grayscale pixels + logistic regression",
}


class Baseline(NamedTuple):
    proba: np.ndarray  # class probabilities of the evaluated examples
    converged: bool
    c: float  # the regularisation strength chosen on the validation split
    description: str


def _aligned(model, proba: np.ndarray, k: int) -> np.ndarray:
    """predict_proba columns (the classes seen in training) placed at their class indices."""
    out = np.zeros((len(proba), k))
    out[:, model.classes_.astype(int)] = proba
    return out


def _fit(model, x_train, y_train) -> bool:
    """Fit; True if the solver converged."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_train, y_train)
    return not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def fit_tuned(make_model, train: tuple, val: tuple, x_test, k: int, description: str) -> Baseline:
    """Fit make_model(C) on train = (x, y) for each C in C_GRID, keep the one of lowest log loss on val = (x, y)
    (C = 1 if there is no validation example), and give its class probabilities on x_test."""
    from sklearn.metrics import log_loss

    tuning, best = len(val[1]) > 0, None
    for c in C_GRID if tuning else (1.0,):
        model = make_model(c)
        converged = _fit(model, *train)
        loss = log_loss(val[1], _aligned(model, model.predict_proba(val[0]), k), labels=range(k)) if tuning else 0.0
        if best is None or loss < best[0]:
            best = (loss, model, converged, c)
    _, model, converged, c = best
    return Baseline(_aligned(model, model.predict_proba(x_test), k), converged, c, description)


def _fit_on_splits(make_model, represent, data: EvalData, description: str) -> Baseline:
    """fit_tuned on the run's train and val splits, scored on the evaluated examples; `represent` turns a list of
    inputs into what make_model's pipeline takes."""
    x = {name: represent(frame["input"].tolist()) for name, frame in (("train", data.train), ("val", data.val),
                                                                      ("test", data.test))}
    return fit_tuned(make_model, (x["train"], targets(data.train)), (x["val"], targets(data.val)), x["test"],
                     len(data.labels), description)


def _logreg(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER))


def frozen_features(backbone, inputs: list, batch_size: int, bf16: bool = False, progress: bool = False) -> np.ndarray:
    """Features of the backbone in eval mode (under bf16 autocast on CPU if asked: a bf16-mixed run's baseline)."""
    import torch

    from headstart.predict import in_batches

    backbone.eval()
    chunks = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for chunk in in_batches(inputs, batch_size, progress, desc="frozen features"):
            chunks.append(backbone(**backbone.prepare(chunk)).float())
    return torch.cat(chunks).numpy().astype(np.float64)


def frozen_logreg(config: RunConfig, data: EvalData, backbone, progress: bool = False) -> Baseline:
    """Logistic regression on the features of the run's pretrained `backbone`, frozen; `progress`: bars while they
    are computed."""
    batch = config.train.eval_batch(backbone.modality == "image")
    bf16 = config.train.precision == "bf16-mixed"  # the run's own precision
    return _fit_on_splits(_logreg, lambda inputs: frozen_features(backbone, inputs, batch, bf16, progress), data,
                          DESCRIPTIONS["frozen_logreg"])


def pixels(paths: list) -> np.ndarray:
    """Each image as PIXELS*PIXELS grayscale values in [0, 1] (bilinear, antialiased resize)."""
    from PIL import Image

    from headstart.data.images import open_rgb

    return np.stack([np.asarray(open_rgb(p).convert("L").resize((PIXELS, PIXELS), Image.BILINEAR),
                                dtype=np.float64).ravel() / 255 for p in paths])


def _tfidf_logreg(c: float):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(sublinear_tf=True), LogisticRegression(C=c, max_iter=MAX_ITER))


def classical(data: EvalData) -> Baseline:
    """The classical model for the modality."""
    make_model, represent = (_tfidf_logreg, list) if data.modality == "text" else (_logreg, pixels)
    return _fit_on_splits(make_model, represent, data, DESCRIPTIONS[f"classical_{data.modality}"])

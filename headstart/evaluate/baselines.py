"""Baselines fit on the run's own training split and scored on the evaluated examples, with fixed standard
settings (nothing is tuned on the evaluated examples):

- `frozen_logreg`: the pretrained backbone, frozen, as a feature extractor, with a logistic-regression head
  (StandardScaler + LogisticRegression), features computed at the run's precision (bf16 autocast for
  `train.precision: bf16-mixed`). What fine-tuning has to beat to be worth its cost.
- `classical`: no deep learning. Texts: TF-IDF (sublinear term frequency) + logistic regression. Images: 32x32
  grayscale pixels scaled to [0, 1] + StandardScaler + logistic regression.
"""

from __future__ import annotations

import warnings

import numpy as np

from headstart.config import RunConfig
from headstart.evaluate.examples import EvalData, targets

PIXELS = 32
MAX_ITER = 5000
DESCRIPTIONS = {
    "frozen_logreg": "pretrained backbone, frozen, + logistic regression on its features",
    "classical_text": "TF-IDF + logistic regression",
    "classical_image": f"{PIXELS}x{PIXELS} grayscale pixels + logistic regression",
}


def _aligned(model, proba: np.ndarray, k: int) -> np.ndarray:
    """predict_proba columns (the classes seen in training) placed at their class indices."""
    out = np.zeros((len(proba), k))
    out[:, model.classes_.astype(int)] = proba
    return out


def _fit_score(model, x_train, y_train, x_test, k: int) -> tuple[np.ndarray, bool]:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return _aligned(model, model.predict_proba(x_test), k), converged


def _logreg():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER))


def frozen_features(backbone, inputs: list, batch_size: int, bf16: bool = False) -> np.ndarray:
    """Features of the backbone in eval mode (under bf16 autocast on CPU if asked, as bench/accuracy.py does)."""
    import torch

    backbone.eval()
    chunks = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(inputs), batch_size):
            chunks.append(backbone(**backbone.prepare(inputs[start:start + batch_size])).float())
    return torch.cat(chunks).numpy().astype(np.float64)


def frozen_logreg(config: RunConfig, data: EvalData) -> tuple[np.ndarray, bool]:
    """Test probabilities of logistic regression on the pretrained, frozen backbone's features."""
    from headstart.backbones.registry import build

    backbone = build(config.backbone, config.data)
    batch, bf16 = config.train.eval_batch_size, config.train.precision == "bf16-mixed"  # the run's own precision
    x_train = frozen_features(backbone, data.train["input"].tolist(), batch, bf16)
    x_test = frozen_features(backbone, data.test["input"].tolist(), batch, bf16)
    return _fit_score(_logreg(), x_train, targets(data.train), x_test, len(data.labels))


def pixels(paths: list) -> np.ndarray:
    """Each image as PIXELS*PIXELS grayscale values in [0, 1] (bilinear, antialiased resize)."""
    from PIL import Image

    from headstart.data.images import open_rgb

    return np.stack([np.asarray(open_rgb(p).convert("L").resize((PIXELS, PIXELS), Image.BILINEAR),
                                dtype=np.float64).ravel() / 255 for p in paths])


def classical(data: EvalData) -> tuple[np.ndarray, bool, str]:
    """Test probabilities of the classical model for the modality, and its description."""
    k, y_train = len(data.labels), targets(data.train)
    if data.modality == "text":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        model = make_pipeline(TfidfVectorizer(sublinear_tf=True), LogisticRegression(max_iter=MAX_ITER))
        proba, converged = _fit_score(model, data.train["input"].tolist(), y_train, data.test["input"].tolist(), k)
        return proba, converged, DESCRIPTIONS["classical_text"]
    proba, converged = _fit_score(_logreg(), pixels(data.train["input"].tolist()), y_train,
                                  pixels(data.test["input"].tolist()), k)
    return proba, converged, DESCRIPTIONS["classical_image"]

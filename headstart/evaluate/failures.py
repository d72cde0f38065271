"""Where the model fails: the most confused class pairs, and the most confident mistakes with their file or row,
so that a person can check whether the label was wrong."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

TOP_PAIRS = 10
TOP_MISTAKES = 12
SNIPPET = 300


def confused_pairs(y: np.ndarray, proba: np.ndarray, labels: list[str], top: int = TOP_PAIRS) -> list[dict]:
    """(true, predicted) pairs of errors, most frequent first; share: of the true class's examples."""
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(y, proba.argmax(1), labels=np.arange(len(labels)))
    pairs = [(int(counts[t, p]), t, p) for t in range(len(labels)) for p in range(len(labels))
             if t != p and counts[t, p] > 0]
    pairs.sort(key=lambda item: (-item[0], item[1], item[2]))
    return [{"label": labels[t], "predicted": labels[p], "count": n, "share_of_label": n / int(counts[t].sum())}
            for n, t, p in pairs[:top]]


def confident_mistakes(frame: pd.DataFrame, y: np.ndarray, proba: np.ndarray, labels: list[str], modality: str,
                       top: int = TOP_MISTAKES) -> list[dict]:
    """Wrong predictions, most confident first (ties: file or row order)."""
    predicted = proba.argmax(1)
    wrong = np.flatnonzero(predicted != y)
    order = wrong[np.lexsort((wrong, -proba[wrong, predicted[wrong]]))][:top]
    out = []
    for i in order:
        item = {"origin": str(frame["origin"].iat[i]), "label": labels[y[i]], "predicted": labels[predicted[i]],
                "confidence": float(proba[i, predicted[i]]), "probability_of_label": float(proba[i, y[i]])}
        if modality == "image":
            item["file"] = str(frame["input"].iat[i])
        else:
            text = " ".join(str(frame["input"].iat[i]).split())
            item["snippet"] = text if len(text) <= SNIPPET else text[:SNIPPET - 3] + "..."
        out.append(item)
    return out


def thumbnail(path: str, side: int = 112) -> str | None:
    """A PNG thumbnail as base64 (small images are enlarged without smoothing); None if it cannot be read."""
    from PIL import Image

    from headstart.data.images import DECODE_ERRORS, open_rgb

    try:
        image = open_rgb(path)
    except (FileNotFoundError, *DECODE_ERRORS):
        return None
    scale = side / max(image.size)
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    image = image.resize(size, Image.NEAREST if scale > 1 else Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()

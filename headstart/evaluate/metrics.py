"""Classification metrics of predicted probabilities, computed by scikit-learn (resampled ones by torchmetrics).

`y` holds class indices 0..k-1 and `proba` an (n, k) array of class probabilities; predictions are the argmax,
as `Predictor.predict` makes them. F1 averages run over the classes that occur (truth or prediction), as
scikit-learn's do by default. A metric undefined on the data (ROC-AUC with a class absent) is None.
"""

from __future__ import annotations

import numpy as np

CALIBRATION_BINS = 10


def accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y, proba.argmax(1)))


def macro_f1(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, proba.argmax(1), average="macro", zero_division=0))


def weighted_f1(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, proba.argmax(1), average="weighted", zero_division=0))


def roc_auc(y: np.ndarray, proba: np.ndarray, positive: int | None = None) -> float | None:
    """Binary: AUC of the positive class's probability; more classes: one-vs-rest, macro-averaged."""
    from sklearn.metrics import roc_auc_score

    k = proba.shape[1]
    if len(np.unique(y)) < (2 if k == 2 else k):
        return None
    if k == 2:
        positive = 1 if positive is None else positive
        return float(roc_auc_score(y == positive, proba[:, positive]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=np.arange(k)))


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE of the top-1 confidence (L1, equal-width bins): the count-weighted gap between accuracy and mean
    confidence over the reliability diagram's bins, so the two always agree (a confidence of exactly 1, common with
    a saturated softmax, falls in the last bin, not in an eleventh as torchmetrics puts it)."""
    gaps = [b["count"] * abs(b["accuracy"] - b["confidence"]) for b in calibration_bins(y, proba, bins) if b["count"]]
    return float(sum(gaps) / len(y)) if len(y) else 0.0


def resampled(name: str, predicted, truth, k: int):
    """Accuracy, macro-F1 or weighted-F1 of many resamples at once: rows of (resamples, n) index tensors, by
    torchmetrics (`multidim_average="samplewise"`). Equal to scikit-learn's on each row (tests check it)."""
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    if name == "accuracy":
        return multiclass_accuracy(predicted, truth, k, average="micro", multidim_average="samplewise",
                                   validate_args=False)
    average = {"macro_f1": "macro", "weighted_f1": "weighted"}[name]
    return multiclass_f1_score(predicted, truth, k, average=average, multidim_average="samplewise",
                               validate_args=False)


def ece_by_chance(proba: np.ndarray, samples: int, seed: int, bins: int = CALIBRATION_BINS) -> float | None:
    """The 95th percentile of the ECE that a perfectly calibrated model with these probabilities reaches on this
    many examples by chance (labels drawn from the probabilities themselves). An ECE below it is within noise.

    A bootstrap interval would mislead here: ECE is biased upwards, more so on resamples, so the percentile
    interval often lies entirely above the estimate."""
    if samples == 0 or len(proba) == 0:
        return None
    rng = np.random.default_rng([seed, 11])
    cumulative = proba.cumsum(1)
    values = [expected_calibration_error((rng.random((len(proba), 1)) > cumulative).sum(1).clip(max=proba.shape[1] - 1),
                                         proba, bins) for _ in range(samples)]
    return float(np.percentile(values, 95))


# the headline numbers: reported with bootstrap confidence intervals (ECE: with `ece_by_chance`), compared
# across models
HEADLINE = {"accuracy": accuracy, "macro_f1": macro_f1, "weighted_f1": weighted_f1, "roc_auc": roc_auc,
            "ece": expected_calibration_error}
# the cheaper subset used for slices, baselines' gains and robustness
CORE = ("accuracy", "macro_f1")


def headline(y: np.ndarray, proba: np.ndarray, names=tuple(HEADLINE), positive: int | None = None) -> dict:
    out = {}
    for name in names:
        out[name] = HEADLINE[name](y, proba, positive) if name == "roc_auc" else HEADLINE[name](y, proba)
    return out


def calibration_bins(y: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Reliability diagram: per equal-width bin of top-1 confidence, its count, accuracy and mean confidence.
    A confidence of exactly 1 falls in the last bin."""
    confidence = proba.max(1)
    correct = proba.argmax(1) == y
    index = np.clip(np.searchsorted(np.linspace(0, 1, bins + 1), confidence, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        member = index == b
        n = int(member.sum())
        out.append({"lower": round(b / bins, 6), "upper": round((b + 1) / bins, 6), "count": n,
                    "accuracy": float(correct[member].mean()) if n else None,
                    "confidence": float(confidence[member].mean()) if n else None})
    return out


def per_class(y: np.ndarray, proba: np.ndarray, labels: list[str]) -> dict[str, dict]:
    """Precision, recall, F1, support and one-vs-rest ROC-AUC of each class; None where undefined (recall of a
    class absent from the data, precision of a class never predicted, F1 of a class that occurs in neither)."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    k = len(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, proba.argmax(1), labels=np.arange(k), zero_division=np.nan)

    def defined(value) -> float | None:
        return None if np.isnan(value) else float(value)

    out = {}
    for c, label in enumerate(labels):
        member = y == c
        auc = float(roc_auc_score(member, proba[:, c])) if 0 < member.sum() < len(y) else None
        out[label] = {"precision": defined(precision[c]), "recall": defined(recall[c]), "f1": defined(f1[c]),
                      "support": int(support[c]), "roc_auc": auc}
    return out


def confusion(y: np.ndarray, proba: np.ndarray, labels: list[str]) -> dict:
    """Counts (rows: true class, columns: predicted) and the row-normalised matrix (each row sums to 1; the row of
    a class with no examples is None, not zeros that would read as 0% recall)."""
    from sklearn.metrics import confusion_matrix

    k = len(labels)
    counts = confusion_matrix(y, proba.argmax(1), labels=np.arange(k))
    rows = counts.sum(1, keepdims=True)
    normalized = [(row / total).round(6).tolist() if total else None for row, total in zip(counts, rows[:, 0])]
    return {"labels": list(labels), "counts": counts.astype(int).tolist(), "normalized": normalized}


def roc_points(y: np.ndarray, proba: np.ndarray, labels: list[str], positive: int | None) -> dict[str, dict]:
    """ROC curve points for the plot: the positive class for binary tasks, each class one-vs-rest otherwise."""
    from sklearn.metrics import roc_curve

    classes = [1 if positive is None else positive] if len(labels) == 2 else range(len(labels))
    out = {}
    for c in classes:
        member = y == c
        if 0 < member.sum() < len(y):
            fpr, tpr, _ = roc_curve(member, proba[:, c])
            out[labels[c]] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return out


def scoring_rules(y: np.ndarray, proba: np.ndarray) -> dict:
    """Log loss and Brier score (scikit-learn's: for two classes, that of the positive class's probability)."""
    from sklearn.metrics import brier_score_loss, log_loss

    labels = np.arange(proba.shape[1])
    return {"log_loss": float(log_loss(y, proba, labels=labels)),
            "brier": float(brier_score_loss(y, proba, labels=labels))}


def full_report(y: np.ndarray, proba: np.ndarray, labels: list[str], positive: int | None) -> dict:
    """Every point estimate of one model on one set of examples."""
    return {
        **headline(y, proba, positive=positive),
        **scoring_rules(y, proba),
        "examples": int(len(y)),
        "per_class": per_class(y, proba, labels),
        "confusion_matrix": confusion(y, proba, labels),
        "calibration": {"bins": calibration_bins(y, proba), "n_bins": CALIBRATION_BINS},  # runner adds ece_by_chance
    }

"""Costs of errors and, for binary tasks, the decision threshold that minimises the expected cost.

The costs form a matrix C[true, predicted] with a zero diagonal: `evaluate.costs.per_class` gives the cost of
getting an example of each class wrong; `false_positive` / `false_negative` (binary tasks) the cost of each kind
of error; with no costs set, every error costs 1 (the expected cost is the error rate).

The threshold is chosen on the validation split and then applied to the evaluated examples: choosing it on the
test examples themselves would make the cost it reaches look better than it will be.
"""

from __future__ import annotations

import numpy as np

from headstart.config import CostConfig
from headstart.errors import HeadstartError


def positive_index(labels: list[str], train_y: np.ndarray, positive_label: str | None) -> int | None:
    """The positive class of a binary task: `evaluate.positive_label`, else the rarer class in training."""
    if len(labels) != 2:
        if positive_label is not None:
            raise HeadstartError(f"evaluate.positive_label is set, but the task has {len(labels)} classes; it only "
                                 "applies to binary tasks. Remove it.")
        return None
    if positive_label is not None:
        if positive_label not in labels:
            raise HeadstartError(f"evaluate.positive_label '{positive_label}' is not a label of the model: "
                                 f"{', '.join(labels)}.")
        return labels.index(positive_label)
    counts = np.bincount(train_y, minlength=2)
    return 0 if counts[0] < counts[1] else 1


def check_settings(settings, labels: list[str]) -> None:
    """Refuse an `evaluate.positive_label` or costs that do not fit `labels`: before a run trains, not after."""
    cost_matrix(settings.costs, labels, positive_index(labels, np.arange(len(labels)), settings.positive_label))


def cost_matrix(config: CostConfig, labels: list[str], positive: int | None) -> tuple[np.ndarray, str]:
    """(C[true, predicted], how the costs were given)."""
    k = len(labels)
    matrix = np.ones((k, k)) - np.eye(k)
    if config.per_class:
        unknown = sorted(set(config.per_class) - set(labels))
        if unknown:
            raise HeadstartError(f"evaluate.costs.per_class names {', '.join(unknown)}, which are not labels of the "
                                 f"model. Its labels: {', '.join(labels)}.")
        for c, label in enumerate(labels):
            matrix[c] *= config.per_class.get(label, 1.0)
        if not matrix.any():
            raise HeadstartError("evaluate.costs.per_class makes every error free, so no decision is better than "
                                 "another: give at least one class a cost above 0.")
        return matrix, "per class (cost of getting an example of the class wrong; unnamed classes cost 1)"
    if config.false_positive is not None or config.false_negative is not None:
        if positive is None:
            raise HeadstartError("evaluate.costs.false_positive / false_negative apply to binary tasks; this one has "
                                 f"{k} classes. Give evaluate.costs.per_class instead.")
        fp = 1.0 if config.false_positive is None else config.false_positive
        fn = 1.0 if config.false_negative is None else config.false_negative
        matrix[1 - positive, positive], matrix[positive, 1 - positive] = fp, fn
        return matrix, "false positive / false negative"
    return matrix, "not set: every error costs 1"


def example_costs(y: np.ndarray, predicted: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return matrix[y, predicted]


def _binary_predictions(scores: np.ndarray, threshold: float, positive: int) -> np.ndarray:
    return np.where(scores >= threshold, positive, 1 - positive)


def threshold_curve(y: np.ndarray, scores: np.ndarray, positive: int, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected cost per example when predicting positive for scores >= t, at candidate thresholds t: 0, the
    midpoints between consecutive distinct scores, and just above the largest score."""
    distinct = np.unique(scores)
    candidates = np.concatenate([[0.0], (distinct[:-1] + distinct[1:]) / 2, [np.nextafter(distinct[-1], 2.0)]])
    costs = np.array([example_costs(y, _binary_predictions(scores, t, positive), matrix).mean() for t in candidates])
    return candidates, costs


def choose_threshold(y: np.ndarray, scores: np.ndarray, positive: int, matrix: np.ndarray) -> float:
    """The threshold of least expected cost on (y, scores); ties go to the one nearest 0.5."""
    candidates, costs = threshold_curve(y, scores, positive, matrix)
    best = np.flatnonzero(costs <= costs.min() + 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def _at(y, predicted, matrix, positive, samples, seed, groups) -> dict:
    """Expected cost of `predicted`, and for binary tasks the positive class's errors, precision and recall (None
    where undefined: no positive predicted, or none in the data)."""
    from headstart.evaluate.bootstrap import interval, resamples

    cost = example_costs(y, predicted, matrix)
    boot = np.array([cost[i].mean() for i in resamples(len(y), samples, seed, groups)])
    out = {"expected_cost": float(cost.mean()), "expected_cost_ci": interval(boot) if samples else None}
    if positive is not None:
        truth, flagged = y == positive, predicted == positive
        out.update(false_positives=int((flagged & ~truth).sum()), false_negatives=int((~flagged & truth).sum()),
                   precision=float(truth[flagged].mean()) if flagged.any() else None,
                   recall=float(flagged[truth].mean()) if truth.any() else None)
    return out


def cost_report(config: CostConfig, labels: list[str], positive: int | None, y: np.ndarray, proba: np.ndarray,
                val_y: np.ndarray, val_proba: np.ndarray, samples: int, seed: int,
                groups: np.ndarray | None = None) -> dict:
    """Expected cost at the default decision (argmax) and, for binary tasks, at the threshold chosen on the
    validation split; the threshold that would be optimal for perfectly calibrated probabilities too. `groups`:
    the bootstrap resamples whole groups."""
    matrix, given = cost_matrix(config, labels, positive)
    report = {"given": given, "matrix": matrix.tolist(), "positive_label": None if positive is None else labels[positive],
              "default": {"threshold": 0.5 if positive is not None else None,
                          **_at(y, proba.argmax(1), matrix, positive, samples, seed, groups)}}
    if positive is None:
        return report
    fp, fn = matrix[1 - positive, positive], matrix[positive, 1 - positive]
    if len(val_y):  # none when the run's own data could not be read
        chosen = choose_threshold(val_y, val_proba[:, positive], positive, matrix)
        report["chosen"] = {"threshold": chosen, "chosen_on": "validation split",
                            **_at(y, _binary_predictions(proba[:, positive], chosen, positive), matrix, positive,
                                  samples, seed, groups)}
    report["calibrated_optimum"] = float(fp / (fp + fn)) if fp + fn > 0 else 0.5
    grid = np.round(np.linspace(0, 1, 101), 2)
    curve = {"threshold": grid.tolist()}
    for name, (ys, ps) in {"test": (y, proba), "validation": (val_y, val_proba)}.items():
        curve[name] = [float(example_costs(ys, _binary_predictions(ps[:, positive], t, positive), matrix).mean())
                       if len(ys) else None for t in grid]
    report["curve"] = curve
    return report

"""Bootstrap confidence intervals: resample the evaluated examples with replacement (seeded), recompute each
metric on every resample, and take the 2.5th and 97.5th percentiles.

Models scored on the same examples are resampled with the same indices, so the interval of a difference between
two models (a gain) is that of a paired bootstrap. With groups (`data.group_column`: one patient, one plant),
whole groups are resampled: examples of a group are not independent, and resampling them one by one would give
intervals that are too narrow.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

CONFIDENCE = 0.95
Metric = Callable[[np.ndarray, np.ndarray], "float | None"]


CHUNK = 100  # resamples drawn (and scored by torchmetrics) at once


def resamples(n: int, samples: int, seed, groups: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """`samples` index arrays drawn with replacement: of n examples, or of whole groups when `groups` (a group per
    example) is given; the same seed gives the same sequence."""
    for chunk in resample_chunks(n, samples, seed, groups):
        yield from chunk


def resample_chunks(n: int, samples: int, seed, groups: np.ndarray | None = None) -> Iterator:
    """The same resamples as `resamples`, CHUNK at a time: (up to CHUNK, n) arrays, or lists of index arrays of
    varying length when whole groups are drawn."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        _, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1 if n else 0)]
    for start in range(0, samples, CHUNK):
        size = min(CHUNK, samples - start)
        if groups is None:
            yield rng.integers(0, n, (size, n))
        else:
            yield [np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
                   for _ in range(size)]


def bootstrap(y: np.ndarray, probas: dict[str, np.ndarray], metrics: dict[str, Metric], samples: int,
              seed, groups: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{model: {metric: values over the resamples}}; an undefined metric on a resample is NaN. `groups`: resample
    whole groups (see the module docstring).

    Accuracy and F1 are scored for a chunk of resamples of equal length at once (torchmetrics); other metrics
    (ROC-AUC, calibration error, any custom function), and every metric of resampled groups, resample by resample
    (scikit-learn)."""
    import torch
    from sklearn import config_context

    from headstart.evaluate.metrics import HEADLINE, resampled

    values = {model: {name: np.full(samples, np.nan) for name in metrics} for model in probas}
    fast = [name for name, metric in metrics.items() if name in ("accuracy", "macro_f1", "weighted_f1")
            and metric is HEADLINE[name] and groups is None]
    done = 0
    with config_context(assume_finite=True):  # the inputs were checked once; skip the check per resample
        for chunk in resample_chunks(len(y), samples, seed, groups):
            rows = slice(done, done + len(chunk))
            truth = torch.from_numpy(y[chunk]) if fast else None
            for model, proba in probas.items():
                predicted = torch.from_numpy(proba.argmax(1)[chunk]) if fast else None
                for name in fast:
                    values[model][name][rows] = resampled(name, predicted, truth, proba.shape[1]).double().numpy()
                for name, metric in metrics.items():
                    if name in fast:
                        continue
                    for i, index in enumerate(chunk):
                        value = metric(y[index], proba[index])
                        if value is not None:
                            values[model][name][done + i] = value
            done += len(chunk)
    return values


def interval(values: np.ndarray, confidence: float = CONFIDENCE) -> list[float] | None:
    """The percentile interval of bootstrap values; None when the metric was undefined on most resamples."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if len(finite) == 0 or len(finite) < 0.5 * len(values):
        return None
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [round(float(low), 6), round(float(high), 6)]  # resampled scores are float32: 6 decimals are exact


def with_intervals(point: dict, values: dict[str, np.ndarray], names) -> dict:
    """`point` with `<metric>_ci` added for each of `names` (None without bootstrap values or a point value)."""
    out = dict(point)
    for name in names:
        out[f"{name}_ci"] = interval(values[name]) if name in values and point.get(name) is not None else None
    return out


def metric_functions(names, positive: int | None = None) -> dict[str, Metric]:
    from headstart.evaluate.metrics import HEADLINE

    return {name: (lambda y, p, _f=HEADLINE[name]: _f(y, p, positive)) if name == "roc_auc" else HEADLINE[name]
            for name in names}

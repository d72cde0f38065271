"""Metrics per slice: the examples sharing a value of a metadata column (numbers with many distinct values are cut
into quartiles). Every slice is reported, however small, with its confidence intervals; when at least two slices have
`min_size` examples, the worst of them (lowest accuracy) is named, with its gap to the best one and a permutation
test of whether the slices differ at all."""

from __future__ import annotations

import numpy as np
import pandas as pd

from headstart.evaluate.bootstrap import bootstrap, interval, metric_functions, with_intervals
from headstart.evaluate.metrics import CORE, headline

MAX_DISTINCT_NUMBERS = 8
MISSING = "(missing)"


def slice_values(column: pd.Series) -> pd.Series:
    """The slice each example falls in, as text: categorical, its categories in order (numbers ascending, a
    quartile named by the smallest and largest values in it), "(missing)" last."""
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        names = column.map(lambda v: MISSING if pd.isna(v) else str(v))  # None, NaN, and pandas' NA
        order = sorted(set(names) - {MISSING})
    else:
        keys = column
        if column.nunique() > MAX_DISTINCT_NUMBERS:
            # quartiles, each up to and including its upper edge; where many examples share one value, edges
            # coincide and fewer slices remain, but that value still closes a slice of its own (50 zeros and 1 to
            # 11: "0" and "1 to 11", not one slice "0 to 11")
            edges = np.unique(column.quantile([0.25, 0.5, 0.75]).to_numpy(dtype=float))
            values = column.astype(float).to_numpy()
            keys = pd.Series(np.searchsorted(edges, values, side="left"), index=column.index).where(column.notna())
        named = _span_names(column.groupby(keys).agg(["min", "max"]))
        names, order = keys.map(named).fillna(MISSING), list(dict.fromkeys(named.values()))
    return pd.Series(pd.Categorical(names, categories=order + [MISSING]), index=column.index)


def _span_names(spans: pd.DataFrame) -> dict:
    """{key: "low" or "low to high"}: whole numbers in full (site 10001), others to 4 significant digits, or as many
    more as keep the names of distinct spans apart."""
    for digits in (*range(4, 17), None):
        named = {key: _number(low, digits) if low == high else f"{_number(low, digits)} to {_number(high, digits)}"
                 for key, (low, high) in spans.iterrows()}
        if len(set(named.values())) == len(named):
            break
    return named


def _number(value, digits: int | None) -> str:
    """Integers in full; other numbers to `digits` significant digits, or (None) the shortest exact form."""
    if isinstance(value, (int, np.integer)) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value)) if digits is None else f"{value:.{digits}g}"


def _slice(y: np.ndarray, proba: np.ndarray, labels: list[str], samples: int, seed, groups) -> tuple[dict, dict]:
    point = {"examples": int(len(y)), **headline(y, proba, CORE),
             "class_counts": {label: int((y == c).sum()) for c, label in enumerate(labels)}}
    # a slice of one group has no interval: resampling its one group redraws the slice unchanged
    resampled = samples and (groups is None or len(pd.unique(groups)) > 1)
    values = bootstrap(y, {"model": proba}, metric_functions(CORE), samples, seed, groups)["model"] if resampled else {}
    return with_intervals(point, values, CORE), values


def differ_by_chance(correct: np.ndarray, slice_index: np.ndarray, gap: float, samples: int, seed,
                     groups: np.ndarray | None = None) -> float | None:
    """Permutation p-value of an accuracy gap between the best and the worst of these slices: how often examples
    shuffled among the slices (as many in each) give a gap at least as large. Picking the two extremes after the fact
    is part of the test, as it is not of an interval of best minus worst. With `groups`, whole groups are shuffled
    (the examples of one are not independent); None when a group spans several slices, as no such shuffle exists."""
    if groups is None:
        unit_slice, unit_correct, unit_size = slice_index, correct, np.ones(len(correct))
    else:
        codes, _ = pd.factorize(groups)
        pairs = np.unique(np.stack([codes, slice_index]), axis=1)  # (group, slice) pairs that occur
        if pairs.shape[1] != codes.max() + 1:
            return None
        unit_slice = pairs[1][np.argsort(pairs[0])]
        unit_correct, unit_size = np.bincount(codes, weights=correct), np.bincount(codes).astype(float)
    rng = np.random.default_rng(seed)
    n = slice_index.max() + 1
    hits = 0
    for _ in range(samples):
        shuffled = rng.permutation(unit_slice)
        accuracy = (np.bincount(shuffled, weights=unit_correct, minlength=n)
                    / np.bincount(shuffled, weights=unit_size, minlength=n))
        hits += accuracy.max() - accuracy.min() >= gap - 1e-12
    return float((hits + 1) / (samples + 1))


def slice_report(frame: pd.DataFrame, y: np.ndarray, proba: np.ndarray, labels: list[str], columns: list[str],
                 min_size: int, samples: int, seed: int, groups: np.ndarray | None = None) -> dict:
    """{column: {"slices": {value: metrics}, "worst": value, "best": value, "gap": {...}}}; worst, best and gap
    are None when fewer than two slices have `min_size` examples. `groups`: the bootstrap resamples whole groups, and
    the permutation test shuffles them."""
    overall = headline(y, proba, CORE)
    report = {}
    for number, column in enumerate(columns):
        named = slice_values(frame[column])
        values = named.to_numpy()
        slices, boots = {}, {}
        for i, value in enumerate(v for v in named.cat.categories if (values == v).any()):
            member = values == value
            point, boot = _slice(y[member], proba[member], labels, samples, [seed, number, i],
                                 None if groups is None else groups[member])
            point["accuracy_vs_overall"] = point["accuracy"] - overall["accuracy"]
            point["small"] = point["examples"] < min_size
            slices[value], boots[value] = point, boot
        candidates = [v for v in slices if not slices[v]["small"]]
        if len(candidates) < 2:
            report[column] = {"slices": slices, "worst": None, "best": None, "gap": None}
            continue
        worst = min(candidates, key=lambda v: (slices[v]["accuracy"], slices[v]["macro_f1"]))
        best = max(candidates, key=lambda v: (slices[v]["accuracy"], slices[v]["macro_f1"]))
        gap = {"best": best, "worst": worst}
        for name in CORE:
            gap[name] = slices[best][name] - slices[worst][name]
            # slices are disjoint and resampled independently: the difference of their resamples bootstraps the gap
            gap[f"{name}_ci"] = (interval(boots[best][name] - boots[worst][name])
                                 if boots[best] and boots[worst] and best != worst else None)
        ranked = np.isin(values, candidates)
        gap["accuracy_p"] = differ_by_chance(
            (proba.argmax(1) == y)[ranked], pd.Categorical(values[ranked], categories=candidates).codes,
            gap["accuracy"], samples, [seed, number, 1_000_003],
            None if groups is None else groups[ranked]) if samples else None
        report[column] = {"slices": slices, "worst": worst, "best": best, "gap": gap}
    return report

"""How much each perturbation costs: the model's metrics on perturbed copies of the evaluated examples against the
same examples untouched, with paired bootstrap intervals of the drop, and the share of predictions that change."""

from __future__ import annotations

import numpy as np

from headstart.evaluate import perturb
from headstart.evaluate.bootstrap import bootstrap, interval, metric_functions
from headstart.evaluate.metrics import CORE, headline
from headstart.predict import in_batches


def subset(n: int, limit: int, seed: int) -> np.ndarray:
    """All indices, or `limit` of them drawn at random (seeded), in order."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def perturbed_probabilities(predictor, name: str, modality: str, inputs: list, seed: int,
                            batch_size: int) -> np.ndarray:
    chunks = []
    for i, chunk in enumerate(in_batches(inputs, batch_size)):
        batch = perturb.apply(name, modality, chunk, seed, offset=i * batch_size)
        chunks.append(predictor.probabilities(batch, batch_size).double().numpy())
    proba = np.concatenate(chunks)
    return proba / proba.sum(1, keepdims=True)


def robustness_report(predictor, modality: str, inputs: list, y: np.ndarray, clean: np.ndarray, limit: int,
                      samples: int, seed: int, batch_size: int, progress=None,
                      groups: np.ndarray | None = None) -> dict:
    total = len(inputs)
    index = subset(total, limit, seed)
    inputs, y, clean = [inputs[i] for i in index], y[index], clean[index]
    groups = None if groups is None else groups[index]
    probas = {"clean": clean}
    for name in perturb.perturbations(modality):
        if progress:
            progress(f"robustness: {name}")
        probas[name] = perturbed_probabilities(predictor, name, modality, inputs, seed, batch_size)
    boot = bootstrap(y, probas, metric_functions(CORE), samples, [seed, 7], groups) if samples else {}
    base = headline(y, clean, CORE)
    table = {}
    for name, (_, description) in perturb.perturbations(modality).items():
        point = headline(y, probas[name], CORE)
        row = {"description": description, **point,
               "changed": float((probas[name].argmax(1) != clean.argmax(1)).mean())}
        for metric in CORE:
            row[f"{metric}_drop"] = base[metric] - point[metric]
            row[f"{metric}_drop_ci"] = interval(boot["clean"][metric] - boot[name][metric]) if boot else None
        table[name] = row
    return {"examples": int(len(index)), "of": int(total),
            "clean": base, "perturbations": table}

"""Sensitivity analysis: the accuracy cost of quantizing each layer group alone, and the search `auto` runs with
it: keep the most sensitive groups in float, one at a time, until the int8 model fits the accuracy budget.

Both are measured on the validation split, so the test split stays an unbiased judge of the chosen variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from headstart.compress.data import Split
from headstart.compress.groups import nodes_of
from headstart.compress.score import onnx_probabilities, scores

# (target path, node names kept in float) -> the quantized ONNX model
Quantize = Callable[[Path, list[str]], Path]


@dataclass
class Probe:
    """Quantizes with some layer groups kept in float and scores the result on prepared validation batches."""

    quantize: Quantize
    node_groups: dict[str, str]  # node name -> layer group
    all_nodes: list[str]  # every node of the graph, those of no layer group too
    batches: list
    split: Split
    reference: np.ndarray  # the float model's validation probabilities
    workdir: Path

    def score(self, exclude: list[str], name: str) -> dict:
        path = self.quantize(self.workdir / f"{name}.onnx", exclude)
        try:
            return scores(self.split, onnx_probabilities(path, self.batches), self.reference)
        finally:
            path.unlink(missing_ok=True)

    def with_float(self, groups: list[str]) -> dict:
        return self.score(nodes_of(self.node_groups, groups), "probe-" + "-".join(groups or ["none"]))

    def alone(self, group: str) -> dict:
        return self.score([n for n in self.all_nodes if self.node_groups.get(n) != group], f"alone-{group}")


def analyse(probe: Probe, groups: list[str], say: Callable[[str], None]) -> list[dict]:
    """Per layer group, quantized alone: accuracy, accuracy_drop (points), agreement; most costly first."""
    from rich.progress import track

    rows = []
    for group in track(groups, description="sensitivity: one layer group at a time", transient=True):
        rows.append({"group": group, **probe.alone(group)})
    say("sensitivity: " + ", ".join(f"{r['group']} {r['accuracy_drop']:+.1f}" for r in rows))
    return sorted(rows, key=lambda r: (-r["accuracy_drop"], r["agreement"]))


def fit_budget(probe: Probe, ranked: list[dict], budget: float, full: dict, max_float: int,
               say: Callable[[str], None]) -> tuple[list[str], dict, list[dict]]:
    """Keep the most sensitive groups in float until the validation accuracy drop is within `budget` points, at
    most `max_float` of them. Returns (groups kept in float, the last scores, the steps tried)."""
    kept, current, steps = [], full, []
    for row in ranked:
        if current["accuracy_drop"] <= budget or len(kept) >= max_float:
            break
        kept.append(row["group"])
        current = probe.with_float(kept)
        steps.append({"float_groups": list(kept), **current})
        say(f"auto: {', '.join(kept)} in float: validation accuracy drop {current['accuracy_drop']:+.2f} points")
    return kept, current, steps

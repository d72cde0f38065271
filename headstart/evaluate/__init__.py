"""Honest evaluation of a run's best model: metrics with bootstrap intervals, costs, slices, baselines,
robustness, failures, latency and training curves, written as metrics.json and report.html.

    from headstart.evaluate import evaluate_run
    metrics = evaluate_run("runs/elpv-defects", slice_by=["cell_type"])
"""

from __future__ import annotations

from headstart.evaluate.runner import evaluate_run, output_dir
from headstart.evaluate.summary import summary_rows

__all__ = ["evaluate_run", "output_dir", "summary_rows"]

"""Test accuracy of the default runs on the full bundled datasets, against logistic regression on frozen features.

    python bench/accuracy.py [bbc] [elpv]      # writes bench/results/accuracy.json and prints a Markdown table

Both numbers come from the same run and the same split: the fine-tuned model's test accuracy, and the run's own
evaluation of its frozen-feature baseline (logistic regression on the pretrained backbone's features of the
training split, C chosen on the validation split; see headstart/evaluate/baselines.py).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

import headstart

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"bbc": ROOT / "configs" / "bbc.yaml", "elpv": ROOT / "configs" / "elpv.yaml"}


def main(names: list[str]) -> None:
    results = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, "
               f"{torch.get_num_threads()} threads, torch {torch.__version__}", "runs": {}}
    for name in names:
        started = time.perf_counter()
        run = headstart.fit(CONFIGS[name], overrides=[f"name=bench-{name}", "output=bench/results/runs"],
                            overwrite=True)
        seconds = time.perf_counter() - started
        evaluation = run.evaluation  # the configs evaluate after fitting
        frozen = evaluation["baselines"]["frozen_logreg"]
        results["runs"][name] = {"test_acc": run.test_metrics["test_acc"], "test_f1": run.test_metrics["test_f1"],
                                 "served_acc": evaluation["overall"]["accuracy"],
                                 "frozen_logreg_acc": frozen["accuracy"], "frozen_logreg_C": frozen["C"],
                                 "fit_seconds": round(seconds, 1),
                                 "epochs": run.results["epochs_trained"], "best_epoch": run.results["best_epoch"],
                                 "unfreeze_events": run.results["unfreeze_events"]}
    out = ROOT / "bench" / "results" / "accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{results['date']}, {results['machine']}\n")
    print("| dataset | fine-tuned test acc (served) | frozen features + logistic regression | gain of the served model "
          "(points) | fit time |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results["runs"].items():
        gain = 100 * (r["served_acc"] - r["frozen_logreg_acc"])
        print(f"| {name} | {r['test_acc']:.4f} ({r['served_acc']:.4f}) | {r['frozen_logreg_acc']:.4f} "
              f"(C = {r['frozen_logreg_C']:g}) | {gain:+.1f} | {r['fit_seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main(sys.argv[1:] or list(CONFIGS))

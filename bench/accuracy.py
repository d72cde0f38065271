"""Test accuracy of the default runs on the full bundled datasets, against logistic regression on frozen features.

    python bench/accuracy.py [bbc] [elpv]      # writes bench/results/accuracy.json and prints a Markdown table

All numbers come from the same run and the same split: the fine-tuned model's test accuracy, and the run's own
evaluation of its baselines (logistic regression on the pretrained backbone's frozen features of the training
split, and a classical model: TF-IDF or 32x32 pixels; C chosen on the validation split; see
headstart/evaluate/baselines.py). Times: the fit alone, then the evaluation report that follows it.
"""

from __future__ import annotations

import argparse
import json
import platform
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
        run = headstart.fit(CONFIGS[name], overwrite=True, overrides=[
            f"name=bench-{name}", f"output={ROOT / 'bench' / 'results' / 'runs'}", "evaluate.after_fit=false"])
        fitted = time.perf_counter()
        evaluation = run.evaluate(progress=False)
        evaluated = time.perf_counter()
        frozen, classical = evaluation["baselines"]["frozen_logreg"], evaluation["baselines"]["classical"]
        results["runs"][name] = {"test_acc": run.test_metrics["test_acc"], "test_f1": run.test_metrics["test_f1"],
                                 "served_acc": evaluation["overall"]["accuracy"],
                                 "frozen_logreg_acc": frozen["accuracy"], "frozen_logreg_C": frozen["C"],
                                 "classical": classical["description"], "classical_acc": classical["accuracy"],
                                 "classical_C": classical["C"], "fit_seconds": round(fitted - started, 1),
                                 "evaluate_seconds": round(evaluated - fitted, 1),
                                 "epochs": run.results["epochs_trained"], "best_epoch": run.results["best_epoch"],
                                 "unfreeze_events": run.results["unfreeze_events"]}
    out = ROOT / "bench" / "results" / "accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{results['date']}, {results['machine']}\n")
    print("| dataset | fine-tuned test acc (served) | frozen features + logistic regression | classical model | gain "
          "of the served model over frozen features (points) | fit time | evaluation time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results["runs"].items():
        gain = 100 * (r["served_acc"] - r["frozen_logreg_acc"])
        print(f"| {name} | {r['test_acc']:.4f} ({r['served_acc']:.4f}) | {r['frozen_logreg_acc']:.4f} "
              f"(C = {r['frozen_logreg_C']:g}) | {r['classical_acc']:.4f} ({r['classical']}, C = {r['classical_C']:g}) "
              f"| {gain:+.1f} | {r['fit_seconds'] / 60:.1f} min | {r['evaluate_seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", help=f"which default runs to fit: {', '.join(CONFIGS)} (default: all)")
    datasets = parser.parse_args().datasets or list(CONFIGS)
    if set(datasets) - set(CONFIGS):
        parser.error(f"unknown dataset {sorted(set(datasets) - set(CONFIGS))[0]!r}: choose from {', '.join(CONFIGS)}")
    main(datasets)

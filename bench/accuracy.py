"""Test accuracy of the default runs on the full bundled datasets, against logistic regression on frozen features.

    python bench/accuracy.py [bbc] [elpv]      # writes bench/results/accuracy.json and prints a Markdown table

Both numbers come from the same run and the same split: the fine-tuned model's test accuracy, and a scikit-learn
logistic regression trained on the pretrained (frozen) backbone's features of the training split.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import headstart
from headstart.backbones.registry import build
from headstart.data.sources import read_source

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"bbc": ROOT / "configs" / "bbc.yaml", "elpv": ROOT / "configs" / "elpv.yaml"}


@torch.inference_mode()
def frozen_features(backbone, inputs: list, batch_size: int = 64) -> np.ndarray:
    backbone.eval()
    chunks = []
    for start in range(0, len(inputs), batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            chunks.append(backbone(**backbone.prepare(inputs[start:start + batch_size])).float())
    return torch.cat(chunks).numpy()


def frozen_baseline(run: headstart.Run) -> float:
    """Accuracy on the run's test split of logistic regression on the pretrained backbone's features."""
    config = run.config
    inputs = dict(zip(read_source(config.data).frame["origin"], read_source(config.data).frame["input"]))
    split = run.split
    backbone = build(config.backbone, config.data)
    parts = {}
    for name in ("train", "test"):
        rows = split[split["split"] == name]
        parts[name] = (frozen_features(backbone, [inputs[o] for o in rows["origin"]]), rows["label"].to_numpy())
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    model.fit(*parts["train"])
    return float(model.score(*parts["test"]))


def main(names: list[str]) -> None:
    results = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, "
               f"{torch.get_num_threads()} threads, torch {torch.__version__}", "runs": {}}
    for name in names:
        started = time.perf_counter()
        run = headstart.fit(CONFIGS[name], overrides=[f"name=bench-{name}", "output=bench/results/runs"],
                            overwrite=True)
        seconds = time.perf_counter() - started
        results["runs"][name] = {"test_acc": run.test_metrics["test_acc"], "test_f1": run.test_metrics["test_f1"],
                                 "frozen_logreg_acc": frozen_baseline(run), "fit_seconds": round(seconds, 1),
                                 "epochs": run.results["epochs_trained"], "best_epoch": run.results["best_epoch"],
                                 "unfreeze_events": run.results["unfreeze_events"]}
    out = ROOT / "bench" / "results" / "accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{results['date']}, {results['machine']}\n")
    print("| dataset | fine-tuned test acc | frozen features + logistic regression | gain (points) | fit time |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results["runs"].items():
        gain = 100 * (r["test_acc"] - r["frozen_logreg_acc"])
        print(f"| {name} | {r['test_acc']:.4f} | {r['frozen_logreg_acc']:.4f} | {gain:+.1f} | {r['fit_seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main(sys.argv[1:] or list(CONFIGS))

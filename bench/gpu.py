"""headstart's CUDA paths on a machine with an NVIDIA GPU: fits in each precision, DDP, a killed run resumed,
a GPU-trained model predicting on the CPU. Writes bench/results/gpu.json and prints a Markdown table.

    python bench/gpu.py

Image runs fine-tune EfficientNet-Lite0 on scikit-learn's 1,797 digits (8x8, written as 32 px PNGs, read at 64 px)
for 3 epochs, one group unfrozen per epoch; text runs fine-tune MiniLM on BBC News at 128 tokens for 2 epochs (head
alone, then the top group) and one epoch of the whole encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

import headstart

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
RUNS = OUT / "runs"


def digits_folder() -> Path:
    """scikit-learn's digits as a folder of class folders."""
    from sklearn.datasets import load_digits

    root, digits = OUT / "digits", load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = Image.fromarray((image * 16).clip(0, 255).astype(np.uint8))
        pixels.resize((32, 32)).save(root / str(label) / f"{i}.png")
    return root


def fit(name: str, config: dict, *overrides: str) -> dict:
    """One run in this process: wall time, test metrics, peak GPU memory, median step time."""
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    run = headstart.fit(config, [f"name={name}", f"output={RUNS}", *overrides], overwrite=True)
    return {"seconds": time.perf_counter() - started, "test_acc": run.test_metrics["test_acc"],
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
            "step_s": float(run.history["step_seconds"].median())}


def cli(*args: str, env: dict | None = None, output: int = subprocess.PIPE) -> subprocess.Popen:
    """`headstart ARGS` in a new process; piped output is read with communicate()."""
    return subprocess.Popen([sys.executable, "-m", "headstart.cli", *args], text=True, stdout=output, stderr=output,
                            env=env)


def resume(config: dict) -> dict:
    """A run killed with SIGKILL after its second epoch, resumed, against the same run unbroken (fp32)."""
    path = OUT / "gpu-resume.yaml"
    path.write_text(yaml.safe_dump({**config, "output": str(RUNS), "train": {**config["train"], "max_epochs": 4}}))
    unbroken = fit("gpu-resume-unbroken", config, "train.max_epochs=4")
    shutil.rmtree(RUNS / "gpu-resume-killed", ignore_errors=True)  # a second bench run starts it afresh
    killed = cli("fit", str(path), "--set", "name=gpu-resume-killed", output=subprocess.DEVNULL)
    metrics = RUNS / "gpu-resume-killed" / "metrics.csv"
    while killed.poll() is None and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.1)
    was_killed = killed.poll() is None
    if was_killed:
        os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    epochs = len(metrics.read_text().splitlines()) - 1
    resumed = cli("fit", "--resume", str(RUNS / "gpu-resume-killed"))
    resumed.communicate()
    got = json.loads((RUNS / "gpu-resume-killed" / "results.json").read_text())["test"]["test_acc"]
    return {"killed": was_killed, "after_epochs": epochs, "resumed_test_acc": got,
            "unbroken_test_acc": unbroken["test_acc"], "same": got == unbroken["test_acc"]}


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py checks the CUDA paths: run it on a machine with an NVIDIA GPU.")
    OUT.mkdir(parents=True, exist_ok=True)
    image = {"name": "x", "data": {"source": str(digits_folder()), "image_size": 64}, "backbone": "efficientnet_lite0",
             "strategy": {"name": "gradual", "unfreeze": [1, 2]},
             "train": {"max_epochs": 3, "batch_size": 64, "accelerator": "gpu", "precision": "32"},
             "evaluate": {"after_fit": False}}
    text = {"name": "x", "data": {"source": "bbc", "max_length": 128}, "backbone": "minilm",
            "strategy": {"name": "gradual", "unfreeze": [1]}, "train": {"max_epochs": 2, "accelerator": "gpu"},
            "evaluate": {"after_fit": False}}
    runs = {}
    for precision in ("32", "bf16-mixed", "16-mixed"):
        runs[f"image {precision}"] = fit(f"gpu-image-{precision}", image, f"train.precision={precision}")
        runs[f"text {precision}"] = fit(f"gpu-text-{precision}", text, f"train.precision={precision}")
    runs["image bf16-mixed, strategy ddp"] = fit("gpu-image-ddp", image, "train.precision=bf16-mixed",
                                                 "train.strategy=ddp")
    runs["text bf16-mixed, whole encoder"] = fit("gpu-text-full", text, "train.precision=bf16-mixed",
                                                 "strategy.name=full", "train.max_epochs=1")
    three = next((OUT / "digits" / "3").iterdir())
    predicted = cli("predict", str(RUNS / "gpu-image-bf16-mixed" / "model"), str(three), "--json",
                    env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    results = {"date": str(date.today()), "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "runs": runs, "resume": resume(image),
               "predict_on_cpu": json.loads(predicted.communicate()[0])["label"]}
    (OUT / "gpu.json").write_text(json.dumps(results, indent=2))
    print(f"\n{results['date']}, {results['gpu']}, torch {results['torch']}\n")
    print("| run | wall time | median step | peak GPU memory | test accuracy |\n| --- | --- | --- | --- | --- |")
    for name, r in runs.items():
        print(f"| {name} | {r['seconds']:.1f} s | {r['step_s'] * 1000:.1f} ms | {r['peak_gpu_mb']:.0f} MB | "
              f"{r['test_acc']:.4f} |")
    print(f"\nresume: {results['resume']}\npredicted on the CPU, a '3': {results['predict_on_cpu']}")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()

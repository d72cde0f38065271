"""DDP with 2 processes against 1 on this machine's CPU (gloo), side by side in one run, as ratios.

    python bench/ddp.py [bbc|elpv] [--epochs 4]

Both runs fit the bundled config with the same settings and seed, `train.cache: off` (a DDP run does not cache, so
neither does the single process here) and no evaluation report, each in a fresh `headstart fit` process; wall time
includes start-up. Lightning gives each of the 2 processes half of the CPU threads. Writes bench/results/ddp.json
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
SETTINGS = {"bbc": ["data.max_length=128", "strategy.unfreeze=[2,3]"], "elpv": ["strategy.unfreeze=[2,3]"]}


def fit(dataset: str, devices: int, epochs: int) -> dict:
    """Wall time and test metrics of one `headstart fit` process tree."""
    name = f"ddp-{dataset}-{devices}"
    overrides = [f"name={name}", f"output={OUT / 'runs'}", f"train.max_epochs={epochs}", "train.cache=off",
                 "evaluate.after_fit=false", "train.accelerator=cpu", f"train.devices={devices}",
                 f"train.strategy={'ddp' if devices > 1 else 'auto'}", *SETTINGS[dataset]]
    command = [sys.executable, "-m", "headstart.cli", "fit", str(ROOT / "configs" / f"{dataset}.yaml"), "--overwrite"]
    for override in overrides:
        command += ["--set", override]
    env = {key: value for key, value in os.environ.items() if key not in ("LOCAL_RANK", "RANK", "NODE_RANK")}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    results = json.loads((OUT / "runs" / name / "results.json").read_text())
    return {"seconds": round(seconds, 1), **results["test"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", default="bbc", choices=sorted(SETTINGS))
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    runs = {devices: fit(args.dataset, devices, args.epochs) for devices in (1, 2)}
    result = {"date": str(date.today()), "cpus": os.cpu_count(), "dataset": args.dataset, "epochs": args.epochs,
              "runs": runs, "speedup": runs[1]["seconds"] / runs[2]["seconds"]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ddp.json").write_text(json.dumps(result, indent=2))
    print(f"\n{result['date']}, {result['cpus']} CPUs, {args.dataset}, {args.epochs} epochs\n")
    print("| processes | wall time | test acc | test macro-F1 |\n| --- | --- | --- | --- |")
    for devices, r in runs.items():
        print(f"| {devices} | {r['seconds'] / 60:.1f} min | {r['test_acc']:.4f} | {r['test_f1']:.4f} |")
    print(f"\n2 processes against 1: {result['speedup']:.2f}x the speed, "
          f"{100 * (runs[2]['test_acc'] - runs[1]['test_acc']):+.1f} points of test accuracy")


if __name__ == "__main__":
    main()

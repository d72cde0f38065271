"""Per-example cost of a backbone's forward pass (no gradients) by batch size, fp32 and bf16 autocast, on this
machine's CPU: the figures behind `train.eval_batch_size`'s default. Writes bench/results/eval_batch.json and prints
a Markdown table.

    python bench/eval_batch.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

import torch

from headstart.backbones.registry import build
from headstart.config import DataConfig

OUT = Path(__file__).resolve().parents[1] / "bench" / "results"
BATCHES = (1, 4, 8, 16, 32, 64)
TEXT = "The central bank raised interest rates again as inflation stayed above its target for the year. " * 6
# (row name, backbone, data settings, one example)
CASES = [(f"EfficientNet-Lite0, {size} px", "efficientnet_lite0", {"image_size": size},
          torch.randint(0, 256, (size, size, 3), dtype=torch.uint8).numpy()) for size in (300, 224)]
CASES.append(("MiniLM, 104 tokens", "minilm", {"max_length": 256}, TEXT))


def ms_per_example(backbone, example, batch: int, bf16: bool, seconds: float) -> float:
    """Milliseconds per example, averaged over at least `seconds` of repeated forwards after one warm-up."""
    inputs = backbone.prepare([example] * batch)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        backbone(**inputs)
        runs, start = 0, time.perf_counter()
        while runs < 2 or time.perf_counter() - start < seconds:
            backbone(**inputs)
            runs += 1
    return (time.perf_counter() - start) / runs / batch * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="time per figure")
    args = parser.parse_args()
    rows = []
    print("| input | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("| --- |" + " --- |" * len(BATCHES))
    for name, backbone_name, settings, example in CASES:
        backbone = build(backbone_name, DataConfig(source="unused", **settings)).eval()
        for precision in ("fp32", "bf16"):
            times = {b: ms_per_example(backbone, example, b, precision == "bf16", args.seconds) for b in BATCHES}
            rows.append({"input": name, "precision": precision, "ms_per_example": times})
            print(f"| {name}, {precision} | " + " | ".join(f"{t:.1f}" for t in times.values()) + " |", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    machine = {"date": str(date.today()), "threads": torch.get_num_threads(), "cores": os.cpu_count()}
    (OUT / "eval_batch.json").write_text(json.dumps({**machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

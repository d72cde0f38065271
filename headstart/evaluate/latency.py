"""Latency, throughput, size and memory of the model as it is served: a fresh process loads the model folder with
`headstart.load` and times `Predictor.probabilities` (eval mode, inference mode, preprocessing included) on real
evaluated inputs: one input at a time (p50 / p95), 32 inputs in the predictor's own batches as served
(throughput), and the model alone on one prepared batch of 32 (decoding and resizing images or tokenizing texts left
out); its peak resident memory is the serving cost.

    python -m headstart.evaluate.latency MODEL_DIR INPUTS.json [LOADER]   # prints one JSON object

LOADER (`package.module:function`, default `headstart.predict:load`) opens MODEL_DIR as something with a
`batch_size`, `probabilities(inputs)` (running `batch_size` inputs per forward pass) and a `model` called on a prepared
batch (`model(**model.backbone.prepare(inputs))`), as `headstart.predict.Predictor` has; compressed variants are
timed the same way with their own loader.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from headstart.errors import HeadstartError

WARMUP = 3
RUNS = 50
MIN_RUNS = 10
BATCH = 32
BATCH_RUNS = 5
BUDGET_S = 20.0
LOADER = "headstart.predict:load"


def _rss_mb() -> float:
    """Resident memory now (Linux), else the peak so far."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return _peak_mb()


def _peak_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def _time_batch(call) -> list[float]:
    """Seconds of each of up to BATCH_RUNS calls (at least 2, then within BUDGET_S), after one warm-up call."""
    call()
    seconds, started = [], time.perf_counter()
    for i in range(BATCH_RUNS):
        t = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - t)
        if i + 1 >= 2 and time.perf_counter() - started > BUDGET_S:
            break
    return seconds


def serve_and_time(model_dir: str, inputs: list, loader: str = LOADER) -> dict:
    """Runs in the fresh process: load, warm up, time one input, 32 inputs as served, and the model alone at 32."""
    import importlib

    import torch

    module, _, name = loader.partition(":")
    load = getattr(importlib.import_module(module), name)
    before = _rss_mb()
    started = time.perf_counter()
    predictor = load(model_dir)
    load_seconds = time.perf_counter() - started
    after_load = _rss_mb()
    for i in range(WARMUP):
        predictor.probabilities([inputs[i % len(inputs)]], 1)
    single, started = [], time.perf_counter()
    for i in range(RUNS):
        t = time.perf_counter()
        predictor.probabilities([inputs[i % len(inputs)]], 1)
        single.append(time.perf_counter() - t)
        if i + 1 >= MIN_RUNS and time.perf_counter() - started > BUDGET_S:
            break
    batch = [inputs[i % len(inputs)] for i in range(BATCH)]
    batched = _time_batch(lambda: predictor.probabilities(batch))
    prepared = predictor.model.backbone.prepare(batch)
    with torch.inference_mode():
        model_only = _time_batch(lambda: predictor.model(**prepared))
    return {
        "batch1_p50_ms": 1000 * _percentile(single, 50), "batch1_p95_ms": 1000 * _percentile(single, 95),
        "batch1_runs": len(single), "batch32_seconds_median": _percentile(batched, 50),
        "batch32_throughput_per_s": BATCH / _percentile(batched, 50), "batch32_runs": len(batched),
        "batch32_batch_size": predictor.batch_size,
        "batch32_model_throughput_per_s": BATCH / _percentile(model_only, 50),
        "load_seconds": load_seconds, "memory_before_load_mb": before, "memory_after_load_mb": after_load,
        "memory_peak_mb": _peak_mb(), "threads": torch.get_num_threads(), "device": "cpu",
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}", "torch": torch.__version__,
    }


def folder_size(folder: Path) -> int:
    """Bytes of the files of a model folder, without its compressed variants (variants/, and the hidden folders of
    a compress call in progress)."""
    folder = Path(folder)
    tops = [p for p in folder.iterdir() if p.name != "variants" and not p.name.startswith(".")]
    return sum(p.stat().st_size for top in tops for p in [top, *top.rglob("*")] if p.is_file())


def measure(model_dir: Path, inputs: list, loader: str = LOADER, model_folder: Path | None = None) -> dict:
    """Time the model in a fresh Python process (same interpreter and import path); add its size on disk. A model
    whose backbone was registered in this process (`register`) cannot be rebuilt in another, so it is timed here
    (`fresh_process` false). `model_folder`: the model folder whose config.json names the backbone, when
    `model_dir` is a compressed variant's folder."""
    from headstart.model.folder import read_model_config

    model_dir = Path(model_dir)
    inputs = [str(i) for i in inputs[:BATCH]]
    if read_model_config(Path(model_folder or model_dir))["backbone"]["type"] == "registered":
        timings = {**serve_and_time(str(model_dir), inputs, loader), "fresh_process": False}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "inputs.json"
            path.write_text(json.dumps(inputs))
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            result = subprocess.run([sys.executable, "-m", "headstart.evaluate.latency", str(model_dir), str(path),
                                     loader], capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            raise HeadstartError(f"Timing the model in {model_dir} failed:\n{result.stderr[-2000:]}")
        timings = {**json.loads(result.stdout.strip().splitlines()[-1]), "fresh_process": True}
    weights = model_dir / "model.safetensors"
    return {**timings, "model_size_mb": folder_size(model_dir) / 2**20,
            "weights_size_mb": weights.stat().st_size / 2**20 if weights.exists() else None}


if __name__ == "__main__":
    model, inputs_file = sys.argv[1:3]
    print(json.dumps(serve_and_time(model, json.loads(Path(inputs_file).read_text()), *sys.argv[3:4])))

"""Per-input cost of predictions by batch size, decoding included: a model folder's PyTorch predictor and each of
its compressed variants, on inputs as `headstart predict` reads them. The figures behind `Predictor.batch_size`.
Writes bench/results/predict_batch.json and prints a Markdown table.

    python bench/predict_batch.py runs/elpv-defects/model [INPUT ...] [--batches 1 4 8 32]

Inputs: the test split of the model's run (its parent folder; the default), or files, folders and tables. The
variants are those `headstart compress` (or bench/compress.py) wrote into the model folder; without them only the
PyTorch predictor is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

import torch

from headstart.compress.variants import list_variants, load_any_variant
from headstart.evaluate.examples import run_parts
from headstart.inputs import gather_inputs
from headstart.predict import load
from headstart.run import Run

OUT = Path(__file__).resolve().parents[1] / "bench" / "results"


def ms_per_input(predictor, inputs: list, batch: int) -> float:
    """Milliseconds per input for one pass over `inputs`, after a warm-up batch."""
    predictor.probabilities(inputs[:batch], batch)
    start = time.perf_counter()
    predictor.probabilities(inputs, batch)
    return (time.perf_counter() - start) / len(inputs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a model folder (runs/<name>/model)")
    parser.add_argument("inputs", nargs="*", help="image files or folders, texts, .txt files or tables (default: the "
                                                  "test split of the model's run)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 32])
    parser.add_argument("--text-column", help="column of texts in a table input (default: text)")
    args = parser.parse_args()
    full = load(args.model)
    if args.inputs:
        inputs, _ = gather_inputs(args.inputs, full.modality, args.text_column)
    else:
        run = Run(args.model.resolve().parent)
        inputs = list(run_parts(run.path, run.config.data, full.labels, [])[1]["test"]["input"])
    predictors = [("PyTorch fp32", full)]
    predictors += [(v["name"], load_any_variant(v["folder"])) for v in list_variants(args.model)]
    rows = []
    print(f"{len(inputs)} inputs; milliseconds per input, decoding included")
    print("| predictor | default batch | " + " | ".join(f"batch {b}" for b in args.batches) + " |")
    print("| --- | --- |" + " --- |" * len(args.batches))
    for name, predictor in predictors:
        times = {b: ms_per_input(predictor, inputs, b) for b in args.batches}
        rows.append({"predictor": name, "default_batch": predictor.batch_size, "ms_per_input": times})
        print(f"| {name} | {predictor.batch_size} | " + " | ".join(f"{t:.1f}" for t in times.values()) + " |",
              flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    machine = {"date": str(date.today()), "threads": torch.get_num_threads(), "cores": os.cpu_count()}
    (OUT / "predict_batch.json").write_text(json.dumps({**machine, "inputs": len(inputs), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

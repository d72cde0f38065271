"""Compression benchmark: `headstart compress` (method auto, budget 1 point) on finished runs, with the targets of
BENCHMARKS.md checked. Writes bench/results/compress.json and prints a markdown table, ratios against fp32 eager
PyTorch.

    python bench/compress.py runs/bbc-topics runs/elpv-defects
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "compress.json"
BUDGET = 1.0


def targets(metrics: dict, modality: str) -> list[tuple[str, bool]]:
    """The issue's targets for the int8 variant of a text (MiniLM) or image (EfficientNet-Lite0) run."""
    rows = metrics["variants"]
    name = next(n for n in rows if n.startswith("int8-"))
    int8, onnx32 = rows[name], rows["fp32-onnx"]
    t = int8["latency"]
    checks = [(f"{name}: accuracy drop <= {BUDGET:g} point", int8["accuracy_drop"] <= BUDGET),
              (f"{name}: >= 3.5x smaller than fp32", int8["size_ratio"] >= 3.5)]
    if modality == "text":
        checks += [(f"{name}: >= 2x faster than fp32 eager at batch 1", t["speedup_batch1"] >= 2),
                   (f"{name}: >= 2x faster than fp32 eager on 32 inputs", t["speedup_batch32"] >= 2)]
    else:
        # the model's own speed (a prepared batch); decoding and resizing the images are the same for every variant
        vs_onnx = t["batch32_model_throughput_per_s"] / onnx32["latency"]["batch32_model_throughput_per_s"]
        checks += [(f"{name}: >= 10x faster than fp32 eager at batch 32, model alone "
                    f"({t['speedup_model_batch32']:.2f}x)", t["speedup_model_batch32"] >= 10),
                   (f"{name}: >= 1.8x faster than fp32 ONNX Runtime at batch 32, model alone ({vs_onnx:.2f}x)",
                    vs_onnx >= 1.8)]
    return checks


def markdown(run: str, metrics: dict) -> str:
    lines = [f"### {run}: {metrics['data']['examples']} test examples",
             "", "| variant | accuracy | drop (points) | macro-F1 | agreement | MB | x smaller | batch 1 p50 ms | "
                 "batch 1 p95 ms | 32 inputs /s | model alone, batch 32 /s | x faster b1 | x faster 32 | "
                 "model alone, x faster b32 | verdict |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, r in metrics["variants"].items():
        t = r["latency"]
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['accuracy_drop']:+.2f} | {r['macro_f1']:.4f} | "
                     f"{r['agreement']:.4f} | {r['size_mb']:.1f} | {r['size_ratio']:.2f} | {t['batch1_p50_ms']:.1f} | "
                     f"{t['batch1_p95_ms']:.1f} | {t['batch32_throughput_per_s']:.1f} | "
                     f"{t['batch32_model_throughput_per_s']:.1f} | {t['speedup_batch1']:.2f} | "
                     f"{t['speedup_batch32']:.2f} | {t['speedup_model_batch32']:.2f} | "
                     f"{'accepted' if r['accepted'] else 'rejected'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="finished run folders (runs/<name>)")
    parser.add_argument("--method", default="auto")
    args = parser.parse_args()

    from headstart.compress import compress
    from headstart.model.folder import read_model_config

    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    report = []
    for run in args.runs:
        metrics = compress(run, method=args.method, budget=BUDGET)
        modality = read_model_config(Path(run) / "model")["modality"]
        checks = targets(metrics, modality) if args.method != "bf16" else []
        results[Path(run).name] = {"metrics": metrics, "targets": {text: ok for text, ok in checks}}
        report.append(markdown(Path(run).name, metrics) + "\n\n" +
                      "\n".join(f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    # this run's machine: results.json may hold runs measured earlier, elsewhere
    machine = next(iter(metrics["variants"].values()))["latency"]["machine"]
    print(f"Compression benchmark ({machine}); written to {RESULTS.relative_to(ROOT)}\n")
    print("\n\n".join(report))


if __name__ == "__main__":
    main()

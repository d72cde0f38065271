"""Speed, side by side in one run, as ratios (results in bench/results/speed.json, or speed-<parts>.json with
--only; a Markdown table on stdout):

1. head-only stage: epoch time replaying cached features vs recomputing the frozen backbone (full BBC and ELPV);
2. a training step with everything trainable: bf16-mixed vs fp32;
3. headstart's training step vs a bare PyTorch loop on the same model, batches and precision;
4. the engine for frozen groups: an ELPV epoch with the whole backbone frozen and nothing replayed, computed by
   eager PyTorch vs ONNX Runtime (`train.cache_engine`);
5. the whole default run (`configs/<dataset>.yaml` unchanged), frozen-prefix caching on vs off: wall time and test
   accuracy. Not in the default set (about an hour per dataset); `--datasets` picks the datasets.

    python bench/speed.py [--only head_only|steps|engines|whole ...] [--datasets bbc elpv] [--set KEY=VALUE ...]

--set changes the configs for every run of the benchmark, e.g. --set data.image_size=224.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import pandas as pd
import torch

import headstart
from headstart.backbones.registry import build
from headstart.config import DataConfig, load_config
from headstart.data.sources import read_source
from headstart.model.classifier import Classifier
from headstart.train.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
CONFIGS = {"bbc": ROOT / "configs" / "bbc.yaml", "elpv": ROOT / "configs" / "elpv.yaml"}


SETTINGS: list[str] = []  # --set: applied to every config of the benchmark


def _fit(name: str, dataset: str, *overrides: str) -> headstart.Run:
    return headstart.fit(CONFIGS[dataset], [*SETTINGS, f"name={name}", f"output={OUT / 'runs'}",
                                            "evaluate.after_fit=false", *overrides], overwrite=True)


def head_only(dataset: str) -> dict:
    """Mean epoch seconds of the head-only stage after its recording epochs, cached vs recomputed."""
    views = 2 if dataset == "elpv" else 1  # ELPV augments: 2 views are recorded, then replayed
    cached = _fit(f"speed-{dataset}-cached", dataset, "strategy.name=feature_extraction",
                  f"train.max_epochs={views + 2}", f"train.cache_views={views}").history
    recomputed = _fit(f"speed-{dataset}-recomputed", dataset, "strategy.name=feature_extraction",
                      "train.max_epochs=2", "train.cache=off").history
    replay = cached[cached["cache"] == "replay"]["seconds"].mean()
    return {"recomputed_epoch_s": recomputed["seconds"].mean(), "first_epochs_s": cached["seconds"][:views].mean(),
            "replayed_epoch_s": replay, "speedup": recomputed["seconds"].mean() / replay}


def _subset(dataset: str, size: int) -> str:
    frame = read_source(DataConfig(source=dataset)).frame.sample(size, random_state=0)
    path = OUT / f"{dataset}-{size}.csv"
    column = "text" if dataset == "bbc" else "image"
    pd.DataFrame({column: frame["input"], "label": frame["label"]}).to_csv(path, index=False)
    return str(path)


def step_seconds(dataset: str, precision: str, source: str) -> float:
    """Median training-step seconds of headstart with everything trainable, on a 352-example subset (an unweighted
    loss, as the bare loop's)."""
    extra = ["data.image_column=image"] if dataset == "elpv" else []
    history = _fit(f"speed-{dataset}-{precision}", dataset, f"data.source={source}", *extra, "strategy.name=full",
                   "train.max_epochs=1", "train.cache=off", f"train.precision={precision}", "data.augment=none",
                   "data.leakage=report", "data.balance=none").history
    return float(history["step_seconds"].iloc[0])


def bare_step_seconds(dataset: str, precision: str, source: str, steps: int = 10) -> float:
    """The same model, optimizer, batch size and precision in a plain PyTorch loop, on the device headstart uses."""
    config = load_config(CONFIGS[dataset], [*SETTINGS, f"data.source={source}"])
    table = pd.read_csv(source)
    inputs = table["text" if dataset == "bbc" else "image"].tolist()
    labels = sorted(table["label"].unique())
    targets = torch.tensor([labels.index(label) for label in table["label"]])
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where headstart's accelerator `auto` trains
    model = Classifier(build(config.backbone, config.data), labels, config.head.hidden, config.head.dropout,
                       config.strategy.freeze_batchnorm).to(device)
    model.set_trainable(len(model.groups))
    model.train()
    optimizer = build_optimizer(model, config.train, config.strategy)
    size = config.train.batch_size
    batches = [({k: v.to(device) for k, v in model.backbone.prepare(inputs[i:i + size]).items()},
                targets[i:i + size].to(device)) for i in range(0, steps * size, size)]
    times = []
    for batch, target in batches:
        started = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = torch.nn.functional.cross_entropy(model(**batch), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def frozen_engines() -> dict:
    """Seconds of one ELPV epoch (default config) with the whole backbone frozen, in float32 and bf16-mixed: a
    one-epoch stage never replays, so every batch runs the frozen groups, in eager PyTorch or (exported at the
    epoch's start) in ONNX Runtime."""
    out = {}
    for precision in ("32", "bf16-mixed"):
        seconds = {}
        for engine in ("torch", "onnxruntime"):
            history = _fit(f"speed-elpv-{engine}", "elpv", "strategy.name=feature_extraction", "train.max_epochs=1",
                           f"train.cache_engine={engine}", f"train.precision={precision}").history
            seconds[engine] = float(history["seconds"].iloc[0])
        out[precision] = {**seconds, "speedup": seconds["torch"] / seconds["onnxruntime"]}
    return out


def whole_run(dataset: str) -> dict:
    """Wall time and test accuracy of the default run with frozen-prefix caching on and off."""
    out = {}
    for cache in ("auto", "off"):
        start = time.perf_counter()
        run = _fit(f"speed-{dataset}-whole-{cache}", dataset, f"train.cache={cache}")
        out[cache] = {"seconds": time.perf_counter() - start, "test_acc": run.test_metrics["test_acc"],
                      "epochs": len(run.history)}
    return {**out, "speedup": out["off"]["seconds"] / out["auto"]["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["head_only", "steps", "engines", "whole"],
                        default=["head_only", "steps", "engines"])
    parser.add_argument("--datasets", nargs="+", choices=["bbc", "elpv"], default=["bbc", "elpv"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run, as headstart fit --set (repeatable)")
    args = parser.parse_args()
    SETTINGS.extend(args.set)
    parts = args.only
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    results = {"date": str(date.today()), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
               f"torch {torch.__version__}{gpu}", "settings": SETTINGS, "head_only": {}, "steps": {}, "whole": {}}
    for dataset in args.datasets:
        if "whole" in parts:
            results["whole"][dataset] = whole_run(dataset)
        if "head_only" in parts:
            results["head_only"][dataset] = head_only(dataset)
        if "steps" in parts:
            source = _subset(dataset, 352)
            steps = {precision: step_seconds(dataset, precision, source) for precision in ("32", "bf16-mixed")}
            steps["bare_bf16-mixed"] = bare_step_seconds(dataset, "bf16-mixed", source)
            results["steps"][dataset] = steps
    if "engines" in parts:
        results["engines"] = frozen_engines()
    name = "speed" if set(parts) == {"head_only", "steps", "engines"} else "-".join(["speed", *sorted(set(parts))])
    (OUT / f"{name}.json").write_text(json.dumps(results, indent=2))
    print(f"\n{results['date']}, {results['machine']}\n")
    if results["head_only"]:
        print("| dataset | head-only epoch, recomputed | replayed from cache | speedup |")
        print("| --- | --- | --- | --- |")
    for dataset, r in results["head_only"].items():
        print(f"| {dataset} | {r['recomputed_epoch_s']:.1f} s | {r['replayed_epoch_s']:.2f} s | {r['speedup']:.0f}x |")
    if results["steps"]:
        print("\n| dataset | fp32 step | bf16-mixed step | bf16 speedup | bare PyTorch bf16 step | headstart overhead |")
        print("| --- | --- | --- | --- | --- | --- |")
    for dataset, s in results["steps"].items():
        overhead = 100 * (s["bf16-mixed"] / s["bare_bf16-mixed"] - 1)
        print(f"| {dataset} | {s['32']:.3f} s | {s['bf16-mixed']:.3f} s | {s['32'] / s['bf16-mixed']:.2f}x | "
              f"{s['bare_bf16-mixed']:.3f} s | {overhead:+.1f}% |")
    if results["whole"]:
        print("\n| dataset | default run, cache off | cache on | speedup | test accuracy off / on |")
        print("| --- | --- | --- | --- | --- |")
    for dataset, w in results["whole"].items():
        print(f"| {dataset} | {w['off']['seconds'] / 60:.1f} min | {w['auto']['seconds'] / 60:.1f} min | "
              f"{w['speedup']:.2f}x | {w['off']['test_acc']:.4f} / {w['auto']['test_acc']:.4f} |")
    if "engines" in results:
        print("\n| ELPV epoch, backbone frozen, not replayed | eager PyTorch | ONNX Runtime (export included) | speedup |")
        print("| --- | --- | --- | --- |")
        size = load_config(CONFIGS["elpv"], SETTINGS).data.image_size
        for precision, e in results["engines"].items():
            print(f"| {precision}, {size} px | {e['torch']:.1f} s | {e['onnxruntime']:.1f} s | {e['speedup']:.2f}x |")


if __name__ == "__main__":
    main()

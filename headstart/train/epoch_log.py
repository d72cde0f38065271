"""Per-epoch metrics in the run folder (metrics.csv): losses, validation metrics, learning rate, trainable groups."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from headstart.files import replacing

FIELDS = ["epoch", "train_loss", "val_loss", "val_acc", "val_f1", "lr_head", "trainable_groups", "unfrozen",
          "cache", "padding", "step_seconds", "seconds"]


class EpochLog(Callback):
    def __init__(self, path: Path, unfreezing: Callback):
        self.path = Path(path)
        self.unfreezing = unfreezing
        self._started = 0.0
        self._lr = 0.0
        self._step_started = 0.0
        self._steps: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # drop rows of epochs that a resumed run is about to train again (the epoch is restored by now)
        if not trainer.is_global_zero:
            return
        rows = self.read(self.path) if self.path.exists() else []
        with replacing(self.path, newline="") as handle:  # a failure keeps the rows written so far
            writer = csv.DictWriter(handle, FIELDS)
            writer.writeheader()
            writer.writerows(row for row in rows if int(row["epoch"]) < trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()
        self._steps = []
        # the rate this epoch trains at: by its end, validation may have cut it for the next one
        self._lr = trainer.optimizers[0].param_groups[-1]["lr"]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_index) -> None:
        _wait_for_device(pl_module.device)
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_index) -> None:
        _wait_for_device(pl_module.device)
        self._steps.append(time.perf_counter() - self._step_started)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {
            "epoch": trainer.current_epoch,
            **{k: round(metrics[k], 6) for k in FIELDS[1:5] if k in metrics},
            "lr_head": self._lr,
            "trainable_groups": pl_module.model.trainable_groups,
            "unfrozen": " ".join(e["group"] for e in self.unfreezing.events if e["epoch"] == trainer.current_epoch),
            "cache": pl_module.cache.mode,
            "padding": "" if pl_module.padding_share is None else round(pl_module.padding_share, 4),
            # median time of a training step (forward, backward, optimizer), without data loading and validation
            "step_seconds": round(sorted(self._steps)[len(self._steps) // 2], 5) if self._steps else "",
            "seconds": round(time.perf_counter() - self._started, 2),
        }
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, FIELDS).writerow(row)

    @staticmethod
    def read(path: Path) -> list[dict]:
        with Path(path).open(newline="") as handle:
            return list(csv.DictReader(handle))


def _wait_for_device(device: torch.device) -> None:
    """A GPU runs a step after Python has queued it: time the step itself, not its queueing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)

"""The LightningModule: training, validation and test steps of a Classifier."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

from headstart.config import RunConfig
from headstart.data.augment import augment_batch
from headstart.model.classifier import Classifier
from headstart.train.optim import build_optimizer

MODES = {"val_loss": "min", "val_acc": "max", "val_f1": "max"}


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, prefix: str) -> dict[str, float]:
    predicted = logits.argmax(1).numpy()
    truth = targets.numpy()
    return {
        f"{prefix}_loss": float(F.cross_entropy(logits, targets)),
        f"{prefix}_acc": float(accuracy_score(truth, predicted)),
        f"{prefix}_f1": float(f1_score(truth, predicted, average="macro", labels=np.arange(logits.shape[1]),
                                       zero_division=0)),
    }


class FineTuner(L.LightningModule):
    def __init__(self, model: Classifier, config: RunConfig, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.config = config
        self.augment = model.backbone.modality == "image" and config.data.augment == "default"
        self.register_buffer("class_weights", class_weights, persistent=False)
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_epoch_start(self) -> None:
        # Shuffling follows the epoch number alone, so a resumed run replays it. Lightning's own set_epoch counts
        # finished epochs, which lags by one after resuming from an end-of-epoch checkpoint.
        sampler = getattr(self.trainer.train_dataloader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.current_epoch)

    def on_train_batch_start(self, batch, batch_index: int) -> None:
        # Dropout and augmentation draw from the global generator. Seed it at the first batch, after the data
        # loader has drawn its own seed (which a resumed run does at another moment), so every epoch replays exactly.
        if batch_index == 0:
            torch.manual_seed(self.config.train.seed * 100_003 + self.current_epoch)

    def training_step(self, batch, batch_index):
        inputs, targets = batch
        if self.augment:
            inputs = {**inputs, "pixels": augment_batch(inputs["pixels"].float() / 255)}
        loss = F.cross_entropy(self.model(**inputs), targets, weight=self.class_weights)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(targets))
        return loss

    def _collect(self, batch) -> None:
        inputs, targets = batch
        self._outputs.append((self.model(**inputs).float().cpu(), targets.cpu()))

    def validation_step(self, batch, batch_index):
        self._collect(batch)

    def test_step(self, batch, batch_index):
        self._collect(batch)

    def _log_epoch(self, prefix: str) -> None:
        logits = torch.cat([o[0] for o in self._outputs])
        targets = torch.cat([o[1] for o in self._outputs])
        self._outputs.clear()
        self.log_dict(classification_metrics(logits, targets, prefix), prog_bar=prefix == "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        train = self.config.train
        optimizer = build_optimizer(self.model, train, self.config.strategy)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=MODES[train.monitor], factor=train.reduce_lr_factor, patience=train.reduce_lr_patience)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": train.monitor}}

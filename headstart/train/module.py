"""The LightningModule: training, validation and test steps of a Classifier, on raw inputs or cached states."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from headstart.cache.prefix import PrefixCache
from headstart.config import RunConfig
from headstart.data.augment import augment_batch
from headstart.evaluate.metrics import accuracy, macro_f1
from headstart.model.classifier import Classifier
from headstart.train.loaders import epoch_seed
from headstart.train.optim import build_optimizer

MODES = {"val_loss": "min", "val_acc": "max", "val_f1": "max"}
CONFIG_KEY = "headstart_config"  # the run config a checkpoint was trained with


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, prefix: str) -> dict[str, float]:
    """Loss, accuracy and macro-F1 as `headstart evaluate` computes them (F1 over the classes that occur)."""
    scores, truth = logits.numpy(), targets.numpy()  # the argmax of logits is that of probabilities
    return {f"{prefix}_loss": float(F.cross_entropy(logits, targets)), f"{prefix}_acc": accuracy(truth, scores),
            f"{prefix}_f1": macro_f1(truth, scores)}


class FineTuner(L.LightningModule):
    def __init__(self, model: Classifier, config: RunConfig, cache: PrefixCache, data,
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.config = config
        self.cache = cache
        self.data = data  # EpochData: the loaders of each epoch
        self.augment = cache.augment
        self.vertical_flip = config.data.augment == "symmetric"
        self.register_buffer("class_weights", class_weights, persistent=False)
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._tokens = [0, 0]  # training tokens this epoch: [padding, all]
        self.scheduler = None
        self._scheduler_state = None

    def train_dataloader(self):
        return self.data.train(self.trainer, self)

    def val_dataloader(self):
        return self.data.evaluation("val", self.trainer)

    def test_dataloader(self):
        return self.data.evaluation("test", self.trainer)

    def on_train_epoch_start(self) -> None:
        self._tokens = [0, 0]

    @property
    def padding_share(self) -> float | None:
        """Share of this epoch's training tokens that were padding (texts only)."""
        return float(self._tokens[0]) / self._tokens[1] if self._tokens[1] else None

    def on_train_batch_start(self, batch, batch_index: int) -> None:
        # Dropout draws from the global generator. Seed it at the first batch, after the data loader has drawn its
        # own seed (which a resumed run does at another moment), so every epoch replays exactly.
        if batch_index == 0:
            torch.manual_seed(epoch_seed(self.config.train.seed, self.current_epoch))

    def _logits(self, batch, split: str) -> torch.Tensor:
        """Logits of a batch: from cached states, or from raw inputs (recording the frozen prefix's output when
        this stage caches it)."""
        start = self.cache.boundary
        if "state" in batch:
            return self.model.forward_from(batch["state"], start)
        inputs = batch["inputs"]
        if split == "train" and self.augment:
            seeds = [self.cache.augment_seed(i) for i in batch["index"].tolist()]
            pixels = augment_batch(inputs["pixels"].float() / 255, seeds, vertical_flip=self.vertical_flip)
            inputs = {**inputs, "pixels": pixels}
        if not start or split == "test":
            return self.model(**inputs)
        state = self.cache.prefix(inputs)
        if self.cache.stores:
            self.cache.record(split, self.model.backbone.split_state(state), batch["index"].tolist())
        return self.model.forward_from(state, start)

    def training_step(self, batch, batch_index):
        targets = batch["targets"]
        mask = batch.get("state", batch.get("inputs", {})).get("attention_mask")
        if mask is not None:
            self._tokens[0] += (mask == 0).sum()  # a tensor, read at the epoch's end: on a GPU, no wait each step
            self._tokens[1] += mask.numel()
        loss = F.cross_entropy(self._logits(batch, "train"), targets, weight=self.class_weights)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(targets),
                 sync_dist=self.trainer.world_size > 1)
        return loss

    def validation_step(self, batch, batch_index):
        self._outputs.append((self._logits(batch, "val").float().cpu(), batch["targets"].cpu()))

    def test_step(self, batch, batch_index):
        self._outputs.append((self._logits(batch, "test").float().cpu(), batch["targets"].cpu()))

    def _log_epoch(self, prefix: str) -> dict[str, float]:
        logits = torch.cat([o[0] for o in self._outputs])
        targets = torch.cat([o[1] for o in self._outputs])
        self._outputs.clear()
        if self.trainer.world_size > 1:  # every process scores the whole split, so all agree on the monitor
            # Lightning's sampler gave process r the examples r, r + N, r + 2N, ... and repeated the first few to even
            # out the shards: restore the split's order and drop the repeats
            n = len(self.data.targets[prefix])
            logits = self.all_gather(logits).transpose(0, 1).flatten(0, 1)[:n].cpu()
            targets = self.all_gather(targets).transpose(0, 1).flatten(0, 1)[:n].cpu()
        metrics = classification_metrics(logits, targets, prefix)
        self.log_dict(metrics, prog_bar=prefix == "val")
        return metrics

    def on_validation_epoch_end(self) -> None:
        metrics = self._log_epoch("val")
        if not self.trainer.sanity_checking:
            self.scheduler.step(metrics[self.config.train.monitor])

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        # The plateau scheduler is stepped here, right after validation, and saved with each checkpoint: Lightning
        # would step it after writing the end-of-epoch checkpoint, so a resumed run would miss one step.
        train = self.config.train
        optimizer = build_optimizer(self.model, train, self.config.strategy)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=MODES[train.monitor], factor=train.reduce_lr_factor, patience=train.reduce_lr_patience,
            eps=0.0)  # torch skips cuts under 1e-8 by default: the lowest groups' rates would stop following
        if self._scheduler_state is not None:
            self.scheduler.load_state_dict(self._scheduler_state)
        return optimizer

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["plateau_scheduler"] = self.scheduler.state_dict()
        checkpoint[CONFIG_KEY] = self.config.model_dump(mode="json")  # what --resume holds config.yaml to

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._scheduler_state = checkpoint.get("plateau_scheduler")

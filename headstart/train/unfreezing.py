"""Gradual unfreezing: train the head first, then unfreeze one layer group at a time from the top, at given
epochs or when the validation metric stops improving. `feature_extraction` never unfreezes; `full` starts with
everything trainable."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from headstart.config import StrategyConfig
from headstart.train.module import MODES


class GradualUnfreezing(Callback):
    def __init__(self, strategy: StrategyConfig, monitor: str, n_groups: int):
        self.strategy = strategy
        self.monitor = monitor
        self.n_groups = n_groups
        self.trainable = n_groups if strategy.name == "full" else 1
        self.events: list[dict[str, Any]] = []  # {"epoch": e, "group": name}
        self.best = math.inf if MODES[monitor] == "min" else -math.inf
        self.wait = 0

    @property
    def state_key(self) -> str:
        return "GradualUnfreezing"

    def _unfreeze_one(self, pl_module: L.LightningModule, epoch: int) -> None:
        """Count one more trainable group from `epoch` on; `on_train_epoch_start` applies it."""
        self.trainable += 1
        group = pl_module.model.groups[self.n_groups - self.trainable].name
        self.events.append({"epoch": epoch, "group": group})
        self.wait = 0
        # a model with a new trainable group starts a new plateau (early stopping restarts its own count)
        pl_module.scheduler.num_bad_epochs = 0

    def apply(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Unfreeze what the milestones ask for at this epoch and set the model's trainable groups (idempotent).
        It also puts frozen groups back in eval mode after validation."""
        if self.strategy.name == "gradual" and self.strategy.unfreeze != "plateau":
            due = 1 + sum(1 for epoch in self.strategy.unfreeze if epoch <= trainer.current_epoch)
            while self.trainable < min(due, self.n_groups):
                self._unfreeze_one(pl_module, trainer.current_epoch)
        pl_module.model.set_trainable(self.trainable)

    on_train_epoch_start = apply

    @property
    def stage_start(self) -> int:
        """The epoch from which the current trainable groups apply."""
        return self.events[-1]["epoch"] if self.events else 0

    def stage_end(self, epoch: int, max_epochs: int) -> int:
        """The epoch at which the groups trainable in `epoch` stop applying, as far as is known in advance: the next
        unfreezing milestone, or the end of the run (unfreezing on plateau can come any time)."""
        if self.strategy.name == "gradual" and self.strategy.unfreeze != "plateau" and self.trainable < self.n_groups:
            return min([e for e in self.strategy.unfreeze if e > epoch] + [max_epochs])
        return max_epochs

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        # a new best by less than unfreeze_min_improvement (relative) still counts as a plateau
        margin = self.strategy.unfreeze_min_improvement * abs(self.best) if math.isfinite(self.best) else 0.0
        improved = score < self.best - margin if MODES[self.monitor] == "min" else score > self.best + margin
        self.best, self.wait = (score, 0) if improved else (self.best, self.wait + 1)
        if (self.strategy.name == "gradual" and self.strategy.unfreeze == "plateau"
                and self.wait >= self.strategy.unfreeze_patience and self.trainable < self.n_groups
                and trainer.current_epoch + 1 < trainer.max_epochs):  # unfrozen after the last epoch, it never trains
            self._unfreeze_one(pl_module, trainer.current_epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"trainable": self.trainable, "events": self.events, "best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainable, self.events, self.best, self.wait = (state["trainable"], state["events"], state["best"],
                                                             state["wait"])

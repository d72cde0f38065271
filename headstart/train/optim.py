"""One optimizer parameter group per layer group, from the start, each with its own learning rate.

The head trains at `lr`; the top backbone group at `lr * backbone_lr_ratio`; each group below at the rate of the
group above divided by `discriminative_factor` (2.6, as in ULMFiT). Frozen groups stay in the optimizer with
`requires_grad=False`, so the optimizer skips them and a resumed run restores an optimizer of the same shape.
"""

from __future__ import annotations

import torch

from headstart.config import StrategyConfig, TrainConfig
from headstart.model.classifier import Classifier


def group_learning_rates(n_groups: int, train: TrainConfig, strategy: StrategyConfig) -> list[float]:
    """Learning rates of the layer groups, input to output (the last one is the head)."""
    top = train.lr * strategy.backbone_lr_ratio
    backbone = [top / strategy.discriminative_factor ** depth for depth in range(n_groups - 1)]
    return list(reversed(backbone)) + [train.lr]


def build_optimizer(model: Classifier, train: TrainConfig, strategy: StrategyConfig) -> torch.optim.AdamW:
    rates = group_learning_rates(len(model.groups), train, strategy)
    groups = [{"params": group.params, "lr": rate, "name": group.name} for group, rate in zip(model.groups, rates)]
    return torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay)

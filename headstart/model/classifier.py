"""Backbone + head, with layer groups that can be frozen from the bottom up."""

from __future__ import annotations

import torch
from torch import nn

from headstart.backbones.base import Backbone, LayerGroup, State, layer_groups
from headstart.model.head import build_head


class Classifier(nn.Module):
    """A backbone with a new head. Layer groups run input to output; the head is the last group.

    Freezing is `requires_grad=False` plus eval mode: a frozen group's modules stay in eval mode whatever
    `.train()` is called with, so dropout is off and BatchNorm running statistics do not move. With
    `freeze_batchnorm`, every BatchNorm of the backbone stays in eval mode, trainable or not: it normalises with the
    pretrained statistics while its scale and shift train.
    """

    def __init__(self, backbone: Backbone, labels: list[str], hidden: list[int], dropout: float,
                 freeze_batchnorm: bool = False):
        super().__init__()
        self.freeze_batchnorm = freeze_batchnorm
        self.backbone = backbone
        self.labels = list(labels)
        self.head = build_head(backbone.feature_size, hidden, len(labels), dropout)
        self.groups: list[LayerGroup] = layer_groups(backbone) + [
            LayerGroup("head", list(self.head.parameters()), [self.head])]
        self.trainable_groups = len(self.groups)

    def set_trainable(self, count: int) -> None:
        """Make the top `count` groups (the head counts as one) trainable and freeze the rest."""
        self.trainable_groups = max(1, min(count, len(self.groups)))
        for index, group in enumerate(self.groups):
            for param in group.params:
                param.requires_grad_(self.is_trainable(index))
        self.train(self.training)

    def is_trainable(self, index: int) -> bool:
        return index >= len(self.groups) - self.trainable_groups

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if mode:
            for index, group in enumerate(self.groups):
                if not self.is_trainable(index):
                    for module in group.modules:
                        module.eval()
            if self.freeze_batchnorm:
                for module in self.backbone.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(**batch))

    def forward_from(self, state: State, start: int) -> torch.Tensor:
        """Logits from the state after the first `start` backbone groups (a cached frozen prefix)."""
        return self.head(self.backbone.forward_from(state, start))

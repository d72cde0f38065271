"""Datasets and loaders: raw inputs are turned into batches by the backbone's own `prepare`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from headstart.backbones.base import Backbone


class ExampleDataset(Dataset):
    def __init__(self, inputs: list, targets: list[int]):
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int):
        return self.inputs[index], self.targets[index]


class Collate:
    """Batches of (raw input, target) -> (prepared batch, target tensor)."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone

    def __call__(self, items):
        inputs, targets = zip(*items)
        return self.backbone.prepare(list(inputs)), torch.tensor(targets)


class EpochSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch), so a resumed run sees the same order as an unbroken one.
    With `weights`, draws with replacement in proportion to them (oversampling)."""

    def __init__(self, size: int, seed: int, weights: torch.Tensor | None = None):
        self.size, self.seed, self.weights, self.epoch = size, seed, weights, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            return iter(torch.randperm(self.size, generator=generator).tolist())
        return iter(torch.multinomial(self.weights, self.size, replacement=True, generator=generator).tolist())


def class_weights(targets: list[int], n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, averaging 1 over the examples ('balanced' in scikit-learn's sense)."""
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    return torch.tensor(len(targets) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def make_loader(frame: pd.DataFrame, labels: list[str], backbone: Backbone, batch_size: int, *, train: bool,
                seed: int = 0, oversample: bool = False, num_workers: int = 0) -> DataLoader:
    """A loader over the rows of `frame`; shuffled per epoch (and oversampled if asked) when `train`."""
    index = {label: i for i, label in enumerate(labels)}
    targets = [index[label] for label in frame["label"]]
    dataset = ExampleDataset(frame["input"].tolist(), targets)
    sampler = None
    if train:
        weights = class_weights(targets, len(labels))[targets] if oversample else None
        sampler = EpochSampler(len(dataset), seed, weights)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=Collate(backbone),
                      num_workers=num_workers, persistent_workers=num_workers > 0)

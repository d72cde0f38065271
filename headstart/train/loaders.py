"""Datasets and loaders. Raw inputs become batches through the backbone's own `prepare`; cached states of the
frozen prefix become batches through `collate_states`. Batches are dicts: inputs or state, targets, index."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from headstart.backbones.base import Backbone
from headstart.cache.prefix import PrefixCache
from headstart.cache.store import collate_states


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's draws (example order, batch order, dropout) from the run's seed."""
    return seed * 100_003 + epoch


class ExampleDataset(Dataset):
    def __init__(self, inputs: list, targets: list[int]):
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int):
        return self.inputs[index], self.targets[index], index


class Collate:
    """Items of (raw input, target, index) -> {"inputs": prepared batch, "targets", "index"}."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone

    def __call__(self, items):
        inputs, targets, indices = zip(*items)
        return {"inputs": self.backbone.prepare(list(inputs)), "targets": torch.tensor(targets),
                "index": torch.tensor(indices)}


class CachedDataset(Dataset):
    """The stored prefix states of one split, for the views chosen this epoch."""

    def __init__(self, cache: PrefixCache, split: str, targets: list[int]):
        self.cache, self.split, self.targets = cache, split, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.cache.state(self.split, index), self.targets[index], index


def collate_cached(items):
    states, targets, indices = zip(*items)
    return {"state": collate_states(list(states)), "targets": torch.tensor(targets), "index": torch.tensor(indices)}


class EpochSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch), so a resumed run sees the same order as an unbroken one.
    With `weights`, draws with replacement in proportion to them (oversampling). A loader is built per epoch."""

    def __init__(self, size: int, seed: int, epoch: int, weights: torch.Tensor | None = None):
        self.size, self.seed, self.epoch, self.weights = size, seed, epoch, weights

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self.weights is None:
            return iter(torch.randperm(self.size, generator=generator).tolist())
        return iter(torch.multinomial(self.weights, self.size, replacement=True, generator=generator).tolist())


class LengthBuckets(Sampler[list[int]]):
    """Batches of texts of similar length, so little of each batch is padding: the epoch's order is cut into
    windows of `window` batches, each window sorted by length, and the batches shuffled (seeded by the epoch)."""

    def __init__(self, order: EpochSampler, lengths: list[int], batch_size: int, window: int = 50):
        self.order, self.lengths, self.batch_size, self.window = order, lengths, batch_size, window

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self):
        indices, span = list(self.order), self.batch_size * self.window
        batches = []
        for start in range(0, len(indices), span):
            chunk = sorted(indices[start:start + span], key=self.lengths.__getitem__)
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        generator = torch.Generator().manual_seed(epoch_seed(self.order.seed, self.order.epoch) + 1)
        return iter([batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()])


def class_weights(targets: list[int], n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, averaging 1 over the examples ('balanced' in scikit-learn's sense)."""
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    return torch.tensor(len(targets) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def make_loader(dataset: Dataset, collate, batch_size: int, sampler: Sampler | None = None,
                num_workers: int = 0) -> DataLoader:
    """A loader over `dataset`; `sampler` may also be a batch sampler such as LengthBuckets."""
    if isinstance(sampler, LengthBuckets):
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers)

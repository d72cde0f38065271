"""Each epoch's loaders: raw inputs, or the frozen prefix's stored states once a stage has recorded them."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from headstart.backbones.base import Backbone
from headstart.cache.prefix import PrefixCache
from headstart.config import RunConfig
from headstart.data.prepare import PreparedData
from headstart.train.loaders import (CachedDataset, Collate, EpochSampler, ExampleDataset, LengthBuckets,
                                     class_weights, collate_cached, make_loader)
from headstart.train.unfreezing import GradualUnfreezing


class EpochData:
    def __init__(self, data: PreparedData, backbone: Backbone, config: RunConfig, cache: PrefixCache,
                 unfreezing: GradualUnfreezing):
        self.config, self.cache, self.unfreezing = config, cache, unfreezing
        self.collate, self.modality = Collate(backbone), backbone.modality
        self.targets, self.raw = {}, {}
        for split in ("train", "val", "test"):
            frame = data.part(split)
            self.targets[split] = [data.labels.index(label) for label in frame["label"]]
            self.raw[split] = ExampleDataset(frame["input"].tolist(), self.targets[split])
        cache.plan(self.collate([self.raw["train"][i] for i in range(min(4, len(self.raw["train"])))])["inputs"])
        self.lengths = [len(text) for text in data.part("train")["input"]] if data.modality == "text" else None
        self.weights = None
        if config.data.balance == "oversample":
            self.weights = class_weights(self.targets["train"], len(data.labels))[self.targets["train"]]

    def train(self, trainer: L.Trainer, module: L.LightningModule) -> DataLoader:
        """Called by Lightning before each training epoch: settles the stage, then picks raw or cached data."""
        self.unfreezing.apply(trainer, module)
        epoch = trainer.current_epoch
        unfreezing = self.unfreezing
        self.cache.start_epoch(epoch, unfreezing.stage_start, unfreezing.stage_end(epoch, trainer.max_epochs))
        train = self.config.train
        # batch_size is the global batch: each of N processes takes 1/N of it, so a DDP run makes the same steps
        batch_size = train.batch_size // trainer.world_size  # fit refuses a size that does not divide
        sampler = EpochSampler(len(self.targets["train"]), train.seed, epoch, self.weights)
        if self.lengths and self.config.data.bucket_by_length and trainer.world_size == 1:
            # (with several processes Lightning shards a plain sampler; batches of similar length are per process)
            sampler = LengthBuckets(sampler, self.lengths, batch_size)
        if self.cache.replaying("train"):
            return make_loader(CachedDataset(self.cache, "train", self.targets["train"]), collate_cached,
                               batch_size, sampler)
        return make_loader(self.raw["train"], self.collate, batch_size, sampler, train.num_workers)

    def evaluation(self, split: str, trainer: L.Trainer) -> DataLoader:
        train = self.config.train
        if split == "val" and self.cache.replaying("val"):  # stored states: the backbone's frozen part does not run
            return make_loader(CachedDataset(self.cache, "val", self.targets["val"]), collate_cached,
                               train.eval_batch(images_on_cpu=False))
        on_cpu = trainer.strategy.root_device.type != "cuda"
        return make_loader(self.raw[split], self.collate, train.eval_batch(self.modality == "image" and on_cpu),
                           num_workers=train.num_workers)

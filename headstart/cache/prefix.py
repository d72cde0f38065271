"""Per epoch: is the frozen prefix computed (and recorded), replayed from the store, or not cached at all?

The boundary is the number of frozen backbone groups. In the first epoch of a stage the prefix runs (see
`engine`) and its output is recorded; from the next epoch on, training and validation replay the stored states and
only the trainable suffix runs. A stage is not cached when its prefix is a small share of a training step's
arithmetic (the cost model). A stage known to end before it could replay (the next milestone or the last epoch is
near) records nothing; it still streams every batch through the faster engine when there is one.
With augmentation, `views` augmented views of each training example are recorded over the first epochs of a stage,
then each epoch draws one of them per example. A view's augmentation is seeded by
(seed, boundary, view, example), so a resumed run recomputes exactly the views it lost.
"""

from __future__ import annotations

from pathlib import Path

import torch

from headstart.backbones.base import State
from headstart.cache.engine import PREFIX_FILE, OnnxPrefix, TorchPrefix, prefix_engine
from headstart.cache.store import StateStore
from headstart.config import TrainConfig
from headstart.data.augment import example_seed
from headstart.model.classifier import Classifier

# a stage whose frozen prefix costs less than this share of a training step is not worth the memory: not cached
MIN_PREFIX_SHARE = 0.05
BACKWARD_FACTOR = 2  # a backward pass costs about twice the forward
# below this many operations per epoch the frozen groups run in seconds in PyTorch; exporting them (5-10 s) would
# cost more than ONNX Runtime saves
ONNX_MIN_EPOCH_FLOPS = 5e11


def prefix_flops(model: Classifier, batch: dict[str, torch.Tensor]) -> tuple[dict[int, int], int]:
    """({boundary k: floating-point operations of the frozen groups 0..k-1} for every boundary that can be cached,
    operations of the whole forward pass), counted on `batch` (the same on every run and machine)."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone, was_training = model.backbone, model.training
    model.eval()
    until = {}  # operations counted so far, after each boundary's groups: one forward pass in all
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if backbone.staged:
            state = backbone.begin(**batch)
            for index in range(backbone.n_groups):
                state = backbone.run_group(index, state)
                until[index + 1] = counter.get_total_flops()
        else:
            state = backbone.forward_until(batch, backbone.n_groups)
            until[backbone.n_groups] = counter.get_total_flops()
        model.forward_from(state, backbone.n_groups)
        whole = counter.get_total_flops()
    model.train(was_training)
    return until, whole


def prefix_shares(until: dict[int, int], whole: int) -> dict[int, float]:
    """{boundary k: the share of a training step's arithmetic that the frozen groups 0..k-1 take}."""
    return {stop: frozen / max(frozen + (1 + BACKWARD_FACTOR) * (whole - frozen), 1) for stop, frozen in until.items()}


class PrefixCache:
    def __init__(self, model: Classifier, train: TrainConfig, augment: bool, sizes: dict[str, int], spill_dir: Path,
                 oversampled: bool = False):
        self.model = model
        self.enabled = train.cache == "auto"
        # an oversampled epoch leaves about a third of the examples out: no later epoch would find all its states
        self.storable = not oversampled
        self.engine_setting = train.cache_engine
        self.full_precision = train.precision == "32"
        self.augment = augment
        self.views = train.cache_views if augment else 1
        self.seed = train.seed
        self.sizes = sizes
        self.budget = int(train.cache_memory_gb * 2**30)
        self.spill_dir = Path(spill_dir)
        self.dtype = torch.bfloat16 if train.precision == "bf16-mixed" else None
        self.boundary = 0
        self.epoch = 0
        self.shares: dict[int, float] = {}  # by boundary, from `plan`
        self.example_flops: dict[int, float] = {}  # the frozen groups' operations per example, by boundary
        self.stores: dict[str, StateStore] = {}
        self.engine: TorchPrefix | OnnxPrefix | None = None
        self.epoch_views: dict[str, list[int]] = {}
        self.mode = "off"  # this epoch's training data: "off" (no cache), "record", "replay" or "stream"

    def plan(self, batch: dict[str, torch.Tensor]) -> None:
        """Count, on one batch of training inputs, what each boundary's frozen prefix costs (see `prefix_flops`)."""
        if self.enabled:
            until, whole = prefix_flops(self.model, batch)
            self.shares = prefix_shares(until, whole)
            size = next(iter(batch.values())).shape[0]
            self.example_flops = {stop: flops / size for stop, flops in until.items()}

    def engine_choice(self, boundary: int) -> str:
        """`torch`, `onnxruntime`, or `auto` (ONNX Runtime, PyTorch if the groups do not export) for a boundary."""
        if self.engine_setting != "auto":
            return self.engine_setting
        on_cpu = next(self.model.parameters()).device.type == "cpu"
        epoch_flops = self.example_flops.get(boundary, 0.0) * sum(self.sizes.values())
        fast = self.model.backbone.frozen_engine == "onnxruntime" and epoch_flops >= ONNX_MIN_EPOCH_FLOPS
        # ONNX Runtime computes in float32: it beats fp32 PyTorch, but bf16 autocast ran as fast here
        return "auto" if on_cpu and fast and self.full_precision else "torch"

    def start_epoch(self, epoch: int, stage_start: int, stage_end: int) -> None:
        """Choose the boundary and each example's view for `epoch` (the model's trainable groups are set); the stage
        runs from epoch `stage_start` to `stage_end` (exclusive) as far as is known."""
        frozen = len(self.model.groups) - self.model.trainable_groups
        worth = self.enabled and self.shares.get(frozen, 0.0) >= MIN_PREFIX_SHARE
        # a stage too short to replay its recorded views would only pay for recording them; a faster engine for
        # the frozen groups still pays every epoch
        stores = worth and self.storable and stage_end - stage_start > self.views
        streams = worth and not stores and self.engine_choice(frozen) != "torch"
        boundary = frozen if stores or streams else 0
        if boundary != self.boundary or stores != bool(self.stores):
            self.close()
            self.boundary = boundary
            # the memory budget is shared as the states are: views of each training example, one of each validation one
            need = {"train": self.views * self.sizes["train"], "val": self.sizes["val"]}
            share = {split: self.budget * need[split] // max(1, sum(need.values())) for split in need}
            self.stores = {split: StateStore(share[split], self.spill_dir / split, self.dtype)
                           for split in self.sizes} if stores else {}
        self.epoch = epoch
        into_stage = epoch - stage_start
        if into_stage < self.views:
            train_views = [into_stage] * self.sizes["train"]
        else:
            generator = torch.Generator().manual_seed(example_seed(self.seed, epoch))
            train_views = torch.randint(self.views, (self.sizes["train"],), generator=generator).tolist()
        self.epoch_views = {"train": train_views, "val": [0] * self.sizes["val"]}
        self.mode = ("replay" if self.replaying("train") else "record" if self.stores
                     else "stream" if self.boundary else "off")

    def prefix(self, inputs: dict[str, torch.Tensor]) -> State:
        """The frozen groups' output on a prepared batch, from this stage's engine (exported on its first batch of
        at least 2 examples)."""
        if self.engine is None:  # `close` drops the engine whenever the boundary moves
            choice = self.engine_choice(self.boundary)
            if choice == "torch" or next(iter(inputs.values())).shape[0] < 2:
                return TorchPrefix(self.model.backbone, self.boundary)(inputs)
            self.engine = prefix_engine(choice, self.model.backbone, self.boundary, inputs, self.spill_dir)
        return self.engine(inputs)

    def replaying(self, split: str) -> bool:
        """True when every state `split` needs this epoch is stored."""
        store = self.stores.get(split)
        return store is not None and all((v, i) in store for i, v in enumerate(self.epoch_views[split]))

    def augment_seed(self, index: int) -> int:
        if self.stores:
            return example_seed(self.seed, 1, self.boundary, self.epoch_views["train"][index], index)
        return example_seed(self.seed, 0, self.epoch, index)

    def record(self, split: str, states: list[State], indices: list[int]) -> None:
        views = self.epoch_views[split]
        for state, index in zip(states, indices):
            self.stores[split].put((views[index], index), state)

    def state(self, split: str, index: int) -> State:
        return self.stores[split].get((self.epoch_views[split][index], index))

    def close(self) -> None:
        """Free the stored states and the stage's engine, with their files."""
        for store in self.stores.values():
            store.close()
        self.stores = {}
        self.engine = None
        for path in self.spill_dir.glob(f"{PREFIX_FILE}*"):
            path.unlink(missing_ok=True)
        if self.spill_dir.is_dir() and not any(self.spill_dir.iterdir()):
            self.spill_dir.rmdir()  # the stores and the exporter create it again when they need it

"""What computes the frozen prefix (layer groups 0..k-1) while a stage caches it or streams through it: eager
PyTorch, or the same groups exported to ONNX and run by ONNX Runtime (measured here about 4x faster than float32
eager PyTorch on EfficientNet-Lite0). Frozen groups are in eval mode and do not change within a stage, so one export
per stage serves every batch of it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from headstart.backbones.base import Backbone, State
from headstart.errors import HeadstartError

log = logging.getLogger("headstart")
PREFIX_FILE = "prefix-"  # the stage's exported groups: prefix-<boundary>.onnx in the cache folder
TOLERANCE = 1e-3  # relative to the state's largest value: float rounding, not a different computation


class TorchPrefix:
    """The frozen groups in eager PyTorch, without autograd."""

    def __init__(self, backbone: Backbone, stop: int):
        self.backbone, self.stop = backbone, stop

    def __call__(self, batch: dict[str, torch.Tensor]) -> State:
        with torch.no_grad():
            return self.backbone.forward_until(batch, self.stop)


class _Groups(nn.Module):
    """Groups 0..stop-1 from the state `begin` gives (so float and uint8 pixels share one graph), as a tuple of
    the outputs named `outputs`."""

    def __init__(self, backbone: Backbone, stop: int, inputs: list[str], outputs: list[str]):
        super().__init__()
        self.backbone, self.stop, self.inputs, self.outputs = backbone, stop, inputs, outputs

    def state(self, tensors) -> State:
        state = dict(zip(self.inputs, tensors))
        if not self.backbone.staged:
            return {"features": self.backbone(**state)}
        for index in range(self.stop):
            state = self.backbone.run_group(index, state)
        return {"features": self.backbone.finish(state)} if self.stop == self.backbone.n_groups else state

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = self.state(tensors)
        return tuple(state[name] for name in self.outputs)


class OnnxPrefix:
    """The frozen groups exported to ONNX (traced on `sample`, a prepared batch of at least 2 examples) and run by
    ONNX Runtime. State tensors that the groups pass through unchanged (a text's attention mask) are not in the
    graph: they are taken from the input."""

    def __init__(self, backbone: Backbone, stop: int, sample: dict[str, torch.Tensor], path: Path):
        from headstart.compress.export import export_module, float32, session

        self.backbone = backbone
        what = f"layer groups 0 to {stop - 1} of {type(backbone).__name__}"
        begun = self._begin(sample)
        inputs = list(begun)
        with torch.no_grad(), float32():  # the reference for the check below: as ONNX Runtime computes
            state = _Groups(backbone, stop, inputs, []).state(tuple(begun.values()))
        sources = {id(tensor): name for name, tensor in begun.items()}
        self.passed = {name: sources[id(tensor)] for name, tensor in state.items() if id(tensor) in sources}
        self.outputs = [name for name in state if name not in self.passed]
        self.graph_outputs = [f"out.{name}" for name in self.outputs]  # may not reuse input names ("x" in, "x" out)
        # ONNX Runtime returns contiguous arrays; PyTorch kept images channels-last, and the layout matters beyond
        # speed: dropout draws its mask in memory order
        self.channels_last = {name for name in self.outputs if state[name].dim() == 4 and not
                              state[name].is_contiguous() and state[name].is_contiguous(memory_format=torch.channels_last)}
        export_module(_Groups(backbone, stop, inputs, self.outputs), begun, self.graph_outputs, backbone.modality,
                      Path(path), what)
        try:  # ONNX Runtime may still refuse the graph, or compute something else: check it on the sample
            self.session = session(path, torch.get_num_threads())
            got = self(sample)
            worst = max(float((got[name].float() - state[name].float()).abs().max()) for name in self.outputs)
        except Exception as exc:
            raise HeadstartError(f"ONNX Runtime cannot run {what} ({type(exc).__name__}: {exc}). Set "
                                 "train.cache_engine: torch.") from exc
        scale = max(1.0, *(float(state[name].float().abs().max()) for name in self.outputs))
        if not worst <= TOLERANCE * scale:
            raise HeadstartError(f"ONNX Runtime computes {what} differently from PyTorch (largest difference "
                                 f"{worst:.3g} on the first batch). Set train.cache_engine: torch.")

    def _begin(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The graph's inputs: the state `begin` gives (staged), or the batch itself, always in float32 (so uint8
        and augmented float pixels share one graph)."""
        if self.backbone.staged:
            begun = self.backbone.begin(**batch)
        else:  # an unstaged image backbone takes uint8 or float pixels: the graph takes float in [0, 1]
            begun = {name: tensor.float() / 255 if tensor.dtype == torch.uint8 and self.backbone.modality == "image"
                     else tensor for name, tensor in batch.items()}
        return {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in begun.items()}

    def __call__(self, batch: dict[str, torch.Tensor]) -> State:
        with torch.no_grad():
            begun = self._begin(batch)
        feeds = {i.name: begun[i.name].cpu().contiguous().numpy() for i in self.session.get_inputs()}
        outputs = self.session.run(self.graph_outputs, feeds)
        device = next(iter(begun.values())).device
        state = {name: torch.from_numpy(value).to(device) for name, value in zip(self.outputs, outputs)}
        for name in self.channels_last:
            state[name] = state[name].contiguous(memory_format=torch.channels_last)
        return {**state, **{name: begun[source] for name, source in self.passed.items()}}


def prefix_engine(choice: str, backbone: Backbone, stop: int, sample: dict[str, torch.Tensor], folder: Path):
    """The engine for groups 0..stop-1: `torch`, `onnxruntime`, or for `auto` ONNX Runtime falling back to torch
    (with a warning) when the groups do not export."""
    if choice == "torch":
        return TorchPrefix(backbone, stop)
    try:
        return OnnxPrefix(backbone, stop, sample, Path(folder) / f"{PREFIX_FILE}{stop}.onnx")
    except HeadstartError as error:
        if choice == "onnxruntime":
            raise
        log.warning("Computing the frozen layer groups with PyTorch: %s", error)
        return TorchPrefix(backbone, stop)

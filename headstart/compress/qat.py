"""Quantization-aware training: a few epochs of fine-tuning, from the fine-tuned weights, with the int8 rounding
of the deployed model simulated in the forward pass, so the weights learn to live with it. The float weights are
then exported and quantized as usual; ONNX Runtime rounds them as training did.

Simulated (fake) quantization, with straight-through gradients, matches the exported schemes: weights of Linear
and Conv layers int8 symmetric per output channel, embedding tables int8 per row, and the inputs of Linear and
Conv layers uint8 per tensor over the batch's range.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from headstart.compress.data import Split
from headstart.model.classifier import Classifier


class FakeQuantWeight(nn.Module):
    """Symmetric int8 rounding per output channel (per row of an embedding table): along the weight's first axis."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = (weight.detach().abs().amax(dim=list(range(1, weight.dim()))) / 127).clamp(min=1e-12)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale.float(), zero, 0, -127, 127)


def fake_quant_input(_module: nn.Module, args: tuple) -> tuple:
    """uint8 asymmetric rounding of a layer's input over the batch's range (the range always includes 0)."""
    x = args[0]
    low, high = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
    scale = float((high - low).clamp(min=1e-8) / 255)
    zero = int(torch.clamp(torch.round(-low / scale), 0, 255))
    return (torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255), *args[1:])


def add_fake_quantization(model: Classifier) -> list:
    """Fake-quantize the weights (and the inputs) of the model's Linear, Conv and Embedding layers, in place.
    Returns the input hooks, to remove after training."""
    hooks = []
    for module in list(model.modules()):
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)):
            continue
        parametrize.register_parametrization(module, "weight", FakeQuantWeight())
        if not isinstance(module, nn.Embedding):  # embedding lookups take token ids
            hooks.append(module.register_forward_pre_hook(fake_quant_input))
    return hooks


def remove_fake_quantization(model: Classifier, hooks: list) -> None:
    """Back to plain float layers holding the trained (not rounded) weights."""
    for hook in hooks:
        hook.remove()
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)


def quantization_aware_training(model: Classifier, train: Split, epochs: int = 2,
                                batch_size: int = 32, lr: float = 2e-5, seed: int = 0,
                                say: Callable[[str], None] = lambda message: None) -> Classifier:
    """A fine-tuned copy of `model`, trained `epochs` epochs on `train` with fake quantization (BatchNorm
    statistics and dropout frozen: the model runs in eval mode, as it will be deployed)."""
    from rich.progress import Progress

    model = copy.deepcopy(model).eval()
    for param in model.parameters():
        param.requires_grad_(True)
    hooks = add_fake_quantization(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    steps = (len(train) + batch_size - 1) // batch_size
    try:
        with torch.inference_mode(False), Progress(transient=True) as progress:
            task = progress.add_task("quantization-aware training", total=epochs * steps)
            for epoch in range(epochs):
                order, total = rng.permutation(len(train)), 0.0
                for start in range(0, len(train), batch_size):
                    rows = order[start:start + batch_size]
                    batch = model.backbone.prepare([train.inputs[i] for i in rows])
                    loss = nn.functional.cross_entropy(model(**batch), torch.from_numpy(train.y[rows]))
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(rows)
                    progress.advance(task)
                say(f"quantization-aware training: epoch {epoch + 1}/{epochs}, loss {total / len(train):.4f}")
    finally:
        remove_fake_quantization(model, hooks)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()

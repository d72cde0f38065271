"""The new classifier head: 1 to 3 dense layers with dropout and Xavier/Glorot initialisation."""

from __future__ import annotations

from torch import nn


def build_head(in_features: int, hidden: list[int], n_outputs: int, dropout: float) -> nn.Sequential:
    """Dropout -> [Linear -> GELU -> Dropout] per hidden size -> Linear to the outputs."""
    layers: list[nn.Module] = [nn.Dropout(dropout)]
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.GELU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, n_outputs))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)

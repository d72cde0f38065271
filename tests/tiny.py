"""A tiny CNN backbone with BatchNorm, plugged in as `backbone: module:tests.tiny:tiny_cnn`, for fast tests.
It is staged (group by group), like the built-in backbones, so its frozen prefix can be cached."""

from __future__ import annotations

import torch
from torch import nn

from headstart.backbones.efficientnet import EfficientNetLite
from headstart.backbones.image import ImageBackbone


class TinyCNN(ImageBackbone):
    def __init__(self, image_size: int = 16):
        super().__init__(image_size, (0.5,) * 3, (0.25,) * 3)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Dropout(0.1))
        self.top = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.feature_size = 16

    def group_prefixes(self):
        return [("stem", ["stem"]), ("block", ["block"]), ("top", ["top"])]

    def run_group(self, index: int, state):
        return {"x": (self.stem, self.block, self.top)[index](state["x"])}

    def finish(self, state) -> torch.Tensor:
        return state["x"].mean(dim=(2, 3))


def tiny_cnn() -> TinyCNN:
    torch.manual_seed(1234)  # "pretrained" weights: the same every time the factory is called
    return TinyCNN()


class TinyUnstagedCNN(ImageBackbone):
    """The same kind of network written as README's "Your own backbone" shows: `features(x)`, no staged forward."""

    def __init__(self, image_size: int = 16):
        super().__init__(image_size, (0.5,) * 3, (0.25,) * 3)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.feature_size = 16

    def group_prefixes(self):
        return [("stem", ["stem"]), ("body", ["body"])]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(x)).mean(dim=(2, 3))


def tiny_unstaged_cnn() -> TinyUnstagedCNN:
    torch.manual_seed(4321)
    return TinyUnstagedCNN()


class BranchingCNN(TinyUnstagedCNN):
    """Runs in PyTorch, but branches on a tensor's value, which torch.export (and so ONNX export) cannot trace."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(self.stem(x))
        if y.mean() > 10:
            y = y * 0.5
        return y.mean(dim=(2, 3))


def branching_cnn() -> BranchingCNN:
    torch.manual_seed(4321)
    return BranchingCNN()


class MaxPooledLite0(EfficientNetLite):
    """A user's variant of a built-in backbone: EfficientNet-Lite0 (untrained, 32 px) with max pooling."""

    def finish(self, state) -> torch.Tensor:
        return state["x"].amax(dim=(2, 3))


def max_pooled_lite0() -> MaxPooledLite0:
    torch.manual_seed(0)
    return MaxPooledLite0(0, 32, pretrained=False)

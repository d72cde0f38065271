"""Shared preprocessing for image backbones: decode, resize, scale to [0, 1], normalise inside the model."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from headstart.backbones.base import Backbone, State
from headstart.data.images import DECODE_ERRORS, ImageInput, shown_path, to_tensor, why_unreadable
from headstart.errors import HeadstartError


class UnreadableInput(HeadstartError):
    """An in-memory input (bytes, an image, an array) that cannot be decoded, at `position` in its batch: its
    message names it as "An input"; `detail` is the rest, for a caller that knows its number."""

    def __init__(self, position: int, detail: str):
        super().__init__(f"An input {detail}")
        self.position, self.detail = position, detail


class ImageBackbone(Backbone):
    """Base for image backbones. Batches hold `pixels`: uint8 (B, 3, S, S), or float in [0, 1] once augmented.

    Normalisation happens in the model (`begin`), so an exported model takes the same pixels as `prepare` gives.
    Subclasses implement `features(x)` on normalised float input, or the staged `run_group` and `finish` on
    the state {"x": normalised images}.
    """

    modality = "image"
    frozen_engine = "onnxruntime"

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def prepare(self, inputs: list[ImageInput]) -> dict[str, torch.Tensor]:
        return {"pixels": torch.stack([self._pixels(image, i) for i, image in enumerate(inputs)])}

    def _pixels(self, image: ImageInput, position: int) -> torch.Tensor:
        try:
            return to_tensor(image, self.image_size)
        except DECODE_ERRORS as exc:
            formats = "Give PNG, JPEG, BMP, TIFF, WebP or GIF files"
            if not isinstance(image, (str, Path)):
                raise UnreadableInput(position, f"({type(image).__name__}) is {why_unreadable(exc)}. {formats}, or "
                                                "their contents.") from None
            fix = (f"Check the path: a relative one is read from the current folder, {Path.cwd()}"
                   if isinstance(exc, FileNotFoundError) else formats)
            raise HeadstartError(f"{shown_path(image)}: {why_unreadable(exc)}. {fix}.") from None

    def begin(self, pixels: torch.Tensor) -> State:
        x = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels
        return {"x": ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.staged:
            return super().forward(pixels=pixels)
        return self.features(self.begin(pixels)["x"])

    def forward_from(self, state: State, start: int) -> torch.Tensor:
        # a state replayed from the cache is stacked in the default layout, but the groups ran on channels-last
        # tensors; the layout decides more than speed (dropout draws its mask in memory order), so cached and
        # uncached runs, and resumed ones, train alike only in the same layout
        state = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in state.items()}
        return super().forward_from(state, start)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise self._missing("features")

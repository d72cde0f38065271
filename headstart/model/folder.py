"""The self-contained model folder: config.json + model.safetensors (+ backbone assets such as a tokenizer).

It opens without the run that made it; loading reads only JSON and safetensors, never pickles. A `module:` backbone
is the one exception: its module is imported (its code runs), as when the model was trained.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from headstart.backbones.registry import rebuild
from headstart.errors import HeadstartError, first_five
from headstart.files import fsync_path, read_json_object, share_like_umask, sync_tree
from headstart.model.classifier import Classifier

FORMAT = "headstart-model"
VERSION = 1


def save_model(model: Classifier, folder: Path, head: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write the model folder atomically: a half-written folder never replaces a good one, and the old one is
    removed only once the new one is in its place (a kill in between leaves a hidden `.model-*` copy, which the
    run's next fit removes)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        _write(model, staging, head, extra)
        sync_tree(staging)  # on disk before it is named: a run marked finished never holds an empty weights file
    except SafetensorError as exc:  # a full disk, for one
        shutil.rmtree(staging, ignore_errors=True)
        raise HeadstartError(f"Could not write the model folder {folder}: {exc}.") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = folder.with_name(f"{staging.name}-old")
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    fsync_path(folder.parent)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _write(model: Classifier, staging: Path, head: dict[str, Any], extra: dict[str, Any] | None) -> None:
    config = {
        "format": FORMAT,
        "version": VERSION,
        "task": "classification",
        "modality": model.backbone.modality,
        "labels": model.labels,
        "backbone": model.backbone.spec(),
        "head": head,
        "layer_groups": [group.name for group in model.groups],
        **(extra or {}),
    }
    (staging / "config.json").write_text(json.dumps(config, indent=2))
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(staging / "model.safetensors"), metadata=weights_metadata(model))
    model.backbone.save_assets(staging)
    share_like_umask(staging)


def preprocessing(backbone) -> dict:
    """What the model folder's config.json says about preprocessing (a custom backbone may define less)."""
    if backbone.modality == "text":
        return {"tokenizer": "backbone/", "max_length": getattr(backbone, "max_length", None), "padding": "longest"}
    mean, std = getattr(backbone, "mean", None), getattr(backbone, "std", None)
    return {"image_size": getattr(backbone, "image_size", None), "resize": "bilinear", "scale": "1/255",
            "mean": None if mean is None else mean.flatten().tolist(),
            "std": None if std is None else std.flatten().tolist()}


def weights_metadata(model: Classifier) -> dict[str, str]:
    """The safetensors header of a model's weights: the labels in the order of the head's outputs, so that a
    config.json whose labels were reordered by hand is caught on loading rather than swapping predictions."""
    return {"format": FORMAT, "labels": json.dumps(model.labels)}


def read_model_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file() and (Path(folder) / "variant.json").is_file():
        raise HeadstartError(f"{folder} is a compressed variant, not a model folder: predict with it in Python "
                             "(headstart.compress.load_variant), or push its model to the registry and serve it with "
                             f"`headstart serve --runtime {Path(folder).name}`; `headstart predict` takes the model "
                             f"folder, {Path(folder).parent.parent}.")
    if not path.is_file():
        raise HeadstartError(f"{folder} is not a headstart model folder: it has no config.json. Give the folder "
                             "written by `headstart fit` (runs/<name>/model).")
    config = read_json_object(path, "The model folder is damaged.")
    if config.get("format") != FORMAT:
        raise HeadstartError(f'{path} is not a headstart model config: it has no "format": "{FORMAT}".')
    return config


def _unreadable(weights: Path, exc: Exception) -> HeadstartError:
    return HeadstartError(f"{weights} is not a readable safetensors file ({exc}): the model folder is damaged. "
                          "Write it again from its run, or restore the file.")


def trained_labels(weights: Path) -> list | None:
    """The labels a safetensors header records, in the order of the model's outputs (None: saved without them)."""
    try:
        with safe_open(str(weights), "pt") as handle:
            return json.loads((handle.metadata() or {}).get("labels", "null"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(weights, exc) from None


def check_label_order(folder: Path, labels: list, trained: list | None, weights: Path) -> None:
    """Refuse a config.json listing the trained labels in another order, which would silently swap predictions
    (renamed labels are the user's to give)."""
    if isinstance(trained, list) and trained != labels and sorted(map(str, trained)) == sorted(map(str, labels)):
        raise HeadstartError(f"{folder / 'config.json'} lists the labels {labels}, but {weights.name} was trained "
                             f"with them in the order {trained} (the order of the model's outputs): config.json was "
                             "reordered by hand. Restore that order.")


def _check_preprocessing(folder: Path, recorded: dict | None, rebuilt: dict) -> None:
    """Refuse a backbone that now prepares inputs otherwise than when the model was trained (a `module:` factory
    changed since): its predictions would be silently wrong."""
    changed = [key for key in rebuilt if recorded and key in recorded and recorded[key] != rebuilt[key]]
    if changed:
        details = "; ".join(f"{key}: trained with {recorded[key]!r}, now {rebuilt[key]!r}" for key in changed)
        raise HeadstartError(f"The backbone of {folder} now prepares its inputs otherwise than when the model was "
                             f"trained ({details}): its code, or config.json, changed since. Restore them, or train "
                             "the model again.")


def _mismatch_fix(spec: dict, names: str) -> str:
    """What to do about weights that do not fit the network config.json describes (`names`: the tensors)."""
    if "backbone." in names and spec.get("type") in ("module", "registered"):
        return (f"The backbone factory ({spec.get('factory') or spec.get('name')}) now builds another network than "
                "the one trained: restore the factory as it was.")
    return "Were its labels or head changed by hand? Restore the config.json written with the weights."


def load_model(folder: Path, weights: Path | None = None) -> Classifier:
    """Rebuild the classifier from a model folder, in eval mode; `weights`: another safetensors file of the same
    architecture (a compressed variant's) instead of the folder's model.safetensors."""
    folder = Path(folder)
    config = read_model_config(folder)
    absent = [key for key in ("backbone", "labels", "head") if key not in config]
    if absent:
        raise HeadstartError(f"{folder / 'config.json'} has no {', '.join(absent)}: the model folder is damaged. "
                             "Write it again from its run (`headstart fit`), or restore config.json.")
    labels = config["labels"]
    if not (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(label, str) for label in labels)
            and len(set(labels)) == len(labels)):
        raise HeadstartError(f'{folder / "config.json"}: "labels" must list two or more different labels (text), in '
                             f"the order of the model's outputs; it holds {labels!r}. Restore the config.json "
                             "written with the weights.")
    try:
        backbone = rebuild(config["backbone"], folder)
        model = Classifier(backbone, labels, config["head"]["hidden"], config["head"]["dropout"])
    # edited or damaged by hand (RuntimeError: a layer of negative size)
    except (KeyError, TypeError, ValueError, AttributeError, OSError, RuntimeError) as exc:
        why = f"no field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise HeadstartError(f"{folder / 'config.json'} describes no model headstart can build ({why}): the model "
                             "folder is damaged. Write it again from its run (`headstart fit`), or restore "
                             "config.json.") from None
    _check_preprocessing(folder, config.get("preprocessing"), preprocessing(backbone))
    weights = Path(weights) if weights is not None else folder / "model.safetensors"
    if not weights.is_file():
        raise HeadstartError(f"{folder} has no model.safetensors: the model folder is incomplete.")
    try:
        with safe_open(str(weights), "pt") as handle:  # one read: the header's label order, then the tensors
            trained = json.loads((handle.metadata() or {}).get("labels", "null"))  # null: no order to check
            state = {key: handle.get_tensor(key) for key in handle.keys()}
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (SafetensorError, OSError, ValueError) as exc:  # ValueError: a header that is not JSON
        raise _unreadable(weights, exc) from None
    except RuntimeError as exc:  # tensors of other shapes: config.json (labels, head) edited after training
        shapes = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise HeadstartError(f"{weights} does not match the architecture in {folder / 'config.json'} ({shapes}). "
                             f"{_mismatch_fix(config['backbone'], shapes)}") from None
    check_label_order(folder, labels, trained, weights)
    if missing or unexpected:
        names = f"missing: {missing[:3]}, unexpected: {unexpected[:3]}"
        raise HeadstartError(f"{weights} does not match the architecture in {folder / 'config.json'} ({names}). "
                             f"{_mismatch_fix(config['backbone'], names)}")
    broken = non_finite(state)
    if broken:
        raise HeadstartError(f"{weights} holds NaN or infinite values ({first_five(broken)}): the training that "
                             "wrote it diverged, and its predictions would mean nothing. Train the model again "
                             "(with a lower train.lr).")
    return model.eval()


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of `state` that hold a NaN or an infinity."""
    return [name for name, tensor in state.items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]

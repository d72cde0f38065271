"""Compressed variants of a model folder, and a predictor that serves them.

    <model>/variants/<name>/variant.json     what it is: method, precision, runtime, accepted, metrics
    <model>/variants/<name>/model.onnx       ONNX Runtime variants (fp32-onnx, int8-*)
    <model>/variants/<name>/model.safetensors  PyTorch variants (bf16)

A variant reads its inputs with the preprocessing of the model folder two levels up (its config.json and
tokenizer assets), so it takes the same inputs as `headstart.predict.Predictor`. Loading reads JSON, ONNX and
safetensors only, never pickles. A variant over the accuracy budget is marked rejected and opens only when forced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from headstart.errors import HeadstartError
from headstart.files import read_json_object
from headstart.predict import Predictor

FORMAT = "headstart-variant"
VERSION = 1
MANIFEST = "variant.json"
REQUIRED = ("name", "runtime", "accepted", "verdict")  # what loading and serving read


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, **manifest}, indent=2))
    return path


def damaged(path: Path, why: str) -> HeadstartError:
    """The error for a variant file that cannot be read."""
    return HeadstartError(f"{path} is damaged ({why}). {_compress_again(path)}")


def _compress_again(path: Path) -> str:
    """What to run to write a damaged variant file anew."""
    return (f"Run `headstart compress` again (on the run that made {Path(path).parents[2]}, or on that model "
            "folder) to write the variants anew.")


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise HeadstartError(f"{folder} is not a compressed variant: it has no {MANIFEST}. Variants live in "
                             "<model>/variants/<name>/, written by `headstart compress`.")
    manifest = read_json_object(path, _compress_again(path))
    if manifest.get("format") != FORMAT:
        raise HeadstartError(f"{path} is not a headstart variant manifest (format is {manifest.get('format')!r}).")
    missing = [key for key in REQUIRED if key not in manifest]
    if missing:
        raise damaged(path, f"it has no {', '.join(missing)}")
    return manifest


def list_variants(model_dir: Path, accepted_only: bool = False) -> list[dict[str, Any]]:
    """The manifests of a model folder's (or a run folder's model's) variants, each with its `folder`; only
    accepted ones if asked."""
    model_dir = Path(model_dir)
    if (model_dir / "model" / "config.json").is_file():  # a run folder, as headstart.load takes
        model_dir = model_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise HeadstartError(f"{model_dir} is not a headstart model folder (no config.json): give runs/<name>/model "
                             "or the run folder.")
    root = model_dir / "variants"
    found = []
    for folder in sorted(p for p in root.glob("*") if (p / MANIFEST).is_file()) if root.is_dir() else []:
        manifest = {**read_manifest(folder), "folder": str(folder)}
        if manifest["accepted"] or not accepted_only:
            found.append(manifest)
    return found


def preprocessing_backbone(model_dir: Path, config: dict):
    """The backbone of a model folder for its `prepare` only: built on the meta device, so no weights are held."""
    from headstart.backbones.registry import rebuild

    with torch.device("meta"):
        return rebuild(config["backbone"], model_dir)


class OnnxModel:
    """An ONNX Runtime session called like the classifier: prepared batch in, logits out."""

    def __init__(self, path: Path, backbone):
        from headstart.compress.export import session

        self.backbone = backbone
        try:
            self.session = session(path)
        except Exception as exc:  # ONNX Runtime's errors (InvalidProtobuf, NoSuchFile, Fail) are plain Exceptions
            raise damaged(path, f"ONNX Runtime cannot open it: {str(exc).splitlines()[0]}") from None

    def __call__(self, **batch: torch.Tensor) -> torch.Tensor:
        from headstart.compress.export import run_logits

        return torch.from_numpy(run_logits(self.session, batch))


class Bf16Model:
    """The classifier with bfloat16 weights, run under bfloat16 autocast."""

    def __init__(self, model):
        self.model = model
        self.backbone = model.backbone

    def __call__(self, **batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(**batch).float()


class VariantPredictor(Predictor):
    """A compressed variant with `Predictor`'s interface: `probabilities(inputs)` and `predict(inputs)`."""

    def __init__(self, folder: Path, force: bool = False):
        from headstart.model.folder import check_label_order, load_model, read_model_config, trained_labels

        self.folder = Path(folder).resolve()  # its model folder is two levels up, whatever the path given
        self.manifest = read_manifest(self.folder)
        if not self.manifest["accepted"] and not force:
            raise HeadstartError(f"The variant {self.folder.name} was rejected: {self.manifest['verdict']} Serve an "
                                 "accepted variant, or open it with force=True.")
        self.model_dir = self.folder.parent.parent
        config = read_model_config(self.model_dir)
        self.labels = config["labels"]
        self.modality = config["modality"]
        runtime = self.manifest["runtime"]
        if runtime == "onnxruntime":  # the ONNX file has no labels: check config.json against the full weights
            weights = self.model_dir / "model.safetensors"
            check_label_order(self.model_dir, self.labels, trained_labels(weights), weights)
            self.model = OnnxModel(self.folder / "model.onnx", preprocessing_backbone(self.model_dir, config))
        elif runtime == "torch":
            weights = self.folder / "model.safetensors"
            try:
                with safe_open(str(weights), "pt"):  # reads and checks the header only
                    pass
            except (OSError, SafetensorError) as exc:
                raise damaged(weights, f"not a readable safetensors file: {exc}") from None
            self.model = Bf16Model(load_model(self.model_dir, weights=weights))
        else:
            raise HeadstartError(f"{self.folder / MANIFEST} names a runtime this headstart does not know: {runtime}.")

    @property
    def batch_size(self) -> int:
        """32 inputs per ONNX Runtime call: unlike PyTorch, it runs images no faster in smaller batches (int8: 1.3x
        slower in batches of 8, BENCHMARKS.md)."""
        return 32 if isinstance(self.model, OnnxModel) else super().batch_size


def load_variant(folder: str | Path, force: bool = False) -> VariantPredictor:
    """Open a variant folder (<model>/variants/<name>) for predictions; a rejected one only with force=True."""
    return VariantPredictor(Path(folder), force=force)


def load_any_variant(folder: str | Path) -> VariantPredictor:
    """Open a variant whether accepted or not (for measuring it)."""
    return VariantPredictor(Path(folder), force=True)

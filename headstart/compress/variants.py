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

from headstart.errors import HeadstartError
from headstart.predict import Predictor

FORMAT = "headstart-variant"
VERSION = 1
MANIFEST = "variant.json"


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, **manifest}, indent=2))
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise HeadstartError(f"{folder} is not a compressed variant: it has no {MANIFEST}. Variants live in "
                             "<model>/variants/<name>/, written by `headstart compress`.")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise HeadstartError(f"{path} is not a headstart variant manifest (format is {manifest.get('format')!r}).")
    return manifest


def list_variants(model_dir: Path, accepted_only: bool = False) -> list[dict[str, Any]]:
    """The manifests of a model folder's variants (each with its `folder`); only accepted ones if asked."""
    root = Path(model_dir) / "variants"
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

    def __init__(self, path: Path, backbone, threads: int | None = None):
        from headstart.compress.export import session

        self.backbone = backbone
        self.session = session(path, threads)

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

    def __init__(self, folder: Path, force: bool = False, threads: int | None = None):
        from headstart.model.folder import load_model, read_model_config

        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if not self.manifest["accepted"] and not force:
            raise HeadstartError(f"The variant {self.folder.name} was rejected: {self.manifest['verdict']} Serve an "
                                 "accepted variant, or open it with force=True.")
        self.model_dir = self.folder.parent.parent
        config = read_model_config(self.model_dir)
        self.labels = config["labels"]
        self.modality = config["modality"]
        runtime = self.manifest["runtime"]
        if runtime == "onnxruntime":
            self.model = OnnxModel(self.folder / "model.onnx", preprocessing_backbone(self.model_dir, config), threads)
        elif runtime == "torch":
            self.model = Bf16Model(load_model(self.model_dir, weights=self.folder / "model.safetensors"))
        else:
            raise HeadstartError(f"{self.folder / MANIFEST} names a runtime this headstart does not know: {runtime}.")


def load_variant(folder: str | Path, force: bool = False) -> VariantPredictor:
    """Open a variant folder (<model>/variants/<name>) for predictions; a rejected one only with force=True."""
    return VariantPredictor(Path(folder), force=force)


def load_any_variant(folder: str | Path) -> VariantPredictor:
    """Open a variant whether accepted or not (for measuring it)."""
    return VariantPredictor(Path(folder), force=True)

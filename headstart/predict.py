"""Predictions from a saved model folder, for Python (`headstart.load`) and the CLI (`headstart predict`)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd
import torch

from headstart.data.images import DECODE_ERRORS
from headstart.data.sources import IMAGE_SUFFIXES, read_table, read_text_file, row_origins
from headstart.errors import HeadstartError
from headstart.model.folder import load_model


class Predictor:
    """A loaded model: `predict(inputs)` gives a label and class probabilities for each input."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.model = load_model(self.folder)
        self.labels = self.model.labels
        self.modality = self.model.backbone.modality

    @torch.inference_mode()
    def probabilities(self, inputs: list, batch_size: int = 32) -> torch.Tensor:
        """(len(inputs), n_classes) class probabilities."""
        out = []
        for start in range(0, len(inputs), batch_size):
            batch = self.model.backbone.prepare(inputs[start:start + batch_size])
            out.append(self.model(**batch).float().softmax(-1))
        return torch.cat(out) if out else torch.empty(0, len(self.labels))

    def predict(self, inputs: list, batch_size: int = 32) -> list[dict]:
        """[{"label": ..., "confidence": p, "probabilities": {label: p, ...}}, ...] in input order."""
        results = []
        for row in self.probabilities(inputs, batch_size).tolist():
            best = max(range(len(row)), key=row.__getitem__)
            results.append({"label": self.labels[best], "confidence": row[best],
                            "probabilities": dict(zip(self.labels, row))})
        return results


def load(folder: str | Path) -> Predictor:
    """Open a model folder written by `headstart fit` (runs/<name>/model) for predictions."""
    return Predictor(Path(folder))


def _table_texts(path: Path, column: str) -> tuple[list[str], list[str]]:
    table = read_table(path)
    if column not in table.columns:
        raise HeadstartError(f"{path} has no column '{column}' (its columns: {', '.join(map(str, table.columns))}). "
                             "Name the text column with --text-column.")
    texts = ["" if pd.isna(t) else str(t) for t in table[column]]
    return texts, row_origins(path, len(texts))


def gather_inputs(items: Iterable[str], modality: str, text_column: str = "text") -> tuple[list, list[str]]:
    """CLI arguments -> (inputs, names): image files or folders of them for image models; texts, .txt files, or
    CSV / JSONL tables with a text column for text models."""
    inputs, names = [], []
    for item in items:
        path = Path(item)
        if modality == "image":
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
            if not path.exists():
                raise HeadstartError(f"{item}: no such image file or folder.")
            inputs += [str(p) for p in files]
            names += [str(p) for p in files]
        elif path.suffix.lower() in {".csv", ".jsonl"} and path.is_file():
            texts, rows = _table_texts(path, text_column)
            inputs += texts
            names += rows
        elif path.suffix.lower() == ".txt" and path.is_file():
            inputs.append(read_text_file(path))
            names.append(str(path))
        else:
            inputs.append(item)
            names.append(item if len(item) <= 40 else item[:37] + "...")
    bad = [name for text, name in zip(inputs, names) if modality == "text" and not text.strip()]
    if bad:
        raise HeadstartError(f"Empty text in {', '.join(bad[:5])}: give some text to classify.")
    return inputs, names


def check_images(paths: list[str]) -> None:
    """Raise a clear error for the first image file that cannot be decoded."""
    from headstart.data.images import open_rgb

    for path in paths:
        try:
            open_rgb(path)
        except FileNotFoundError:
            raise HeadstartError(f"{path}: no such image file.") from None
        except DECODE_ERRORS as exc:
            raise HeadstartError(f"{path} is not a readable image ({exc}). Give PNG, JPEG, BMP, TIFF or WebP files.") from None

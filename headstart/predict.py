"""Predictions from a saved model folder, for Python (`headstart.load`) and the CLI (`headstart predict`, whose
arguments inputs.py reads)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
import torch
from PIL import Image

from headstart.config import CPU_IMAGE_BATCH
from headstart.data.images import DECODE_ERRORS, check_input
from headstart.data.validate import visible
from headstart.errors import HeadstartError, short
from headstart.inputs import not_utf8
from headstart.model.folder import load_model


def in_batches(inputs: list, size: int, progress: bool = False, desc: str = "predicting") -> Iterator[list]:
    """`inputs` in slices of `size`, with a progress bar on stderr when asked for more than one slice."""
    from tqdm.auto import tqdm

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise HeadstartError(f"batch_size must be a whole number of 1 or more, not {size!r}: give the inputs per "
                             "forward pass.")

    with tqdm(total=len(inputs), desc=desc, unit="input", leave=False,
              disable=not progress or len(inputs) <= size) as bar:
        for start in range(0, len(inputs), size):
            yield inputs[start:start + size]
            bar.update(min(size, len(inputs) - start))


class Predictor:
    """A loaded model: `predict(inputs)` gives a label and class probabilities for each input."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.model = load_model(self.folder)
        self.labels = self.model.labels
        self.modality = self.model.backbone.modality

    @property
    def batch_size(self) -> int:
        """Inputs per forward pass unless a caller names another: `CPU_IMAGE_BATCH` images (models are served on a
        CPU) or 32 texts."""
        return CPU_IMAGE_BATCH if self.modality == "image" else 32

    @torch.inference_mode()
    def probabilities(self, inputs: list, batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
        """(len(inputs), n_classes) class probabilities, `batch_size` inputs per forward pass; `progress`: a bar."""
        inputs = self._as_list(inputs)
        if self.modality == "text":
            _check_texts(inputs)
        else:
            _check_in_memory_images(inputs)
        from headstart.backbones.image import UnreadableInput

        out, start = [], 0
        for chunk in in_batches(inputs, self.batch_size if batch_size is None else batch_size, progress):
            try:
                batch = self.model.backbone.prepare(chunk)
            except UnreadableInput as exc:  # numbered as the caller gave it, not by its place in the batch
                raise HeadstartError(f"Input {start + exc.position} {exc.detail}") from None
            out.append(self.model(**batch).float().softmax(-1))
            start += len(chunk)
        return torch.cat(out) if out else torch.empty(0, len(self.labels))

    def _as_list(self, inputs) -> list:
        """`inputs` as a list of single inputs, or a HeadstartError for what would be read otherwise than meant."""
        if isinstance(inputs, (str, bytes, Path)):  # it would be read as a sequence of characters or bytes
            raise HeadstartError(f"Give a list of inputs, e.g. predict([{short(repr(inputs), 30)}]), not a single "
                                 f"{type(inputs).__name__}.")
        if isinstance(inputs, pd.DataFrame):  # iterating it gives the column names
            raise HeadstartError("Give a list of inputs, not a DataFrame: for its column 'text', predict(df['text']).")
        if isinstance(inputs, np.ndarray) and inputs.ndim > 1 and self.modality == "text":
            raise HeadstartError(f"Give a list of texts, not a {inputs.ndim}-D array: array.ravel().tolist().")
        # one image would be read as a sequence of pixel rows; a (N, H, W, C) array is a batch
        if isinstance(inputs, Image.Image) or isinstance(inputs, np.ndarray) and inputs.ndim in (2, 3):
            raise HeadstartError(f"Give a list of images, e.g. predict([image]), not a single {type(inputs).__name__}: "
                                 "it would be read as rows of pixels. A batch of grey images in one (N, H, W) array "
                                 "is list(array).")
        if isinstance(inputs, (Mapping, set, frozenset)) or not isinstance(inputs, Iterable):
            raise HeadstartError(f"Give a list of inputs, not a {type(inputs).__name__}: the predictions come in the "
                                 "order of the inputs, so they must have one.")
        return inputs if isinstance(inputs, (list, np.ndarray)) else list(inputs)

    def predict(self, inputs: list, batch_size: int | None = None, progress: bool = False) -> list[dict]:
        """[{"label": ..., "confidence": p, "probabilities": {label: p, ...}}, ...] in input order."""
        results = []
        for row in self.probabilities(inputs, batch_size, progress).tolist():
            best = max(range(len(row)), key=row.__getitem__)
            results.append({"label": self.labels[best], "confidence": row[best],
                            "probabilities": dict(zip(self.labels, row))})
        return results


def _check_texts(texts: list) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise HeadstartError(f"Input {i} is a {type(text).__name__}, not a text: a text model classifies "
                                 "strings.")
        if not visible(text):
            raise HeadstartError(f"Input {i} is an empty text (no visible characters): give some text to classify.")
        if (at := not_utf8(text)) is not None:
            raise HeadstartError(f"Input {i} holds bytes that are not UTF-8 text (at character {at}): give the text "
                                 "as UTF-8.")


def _check_in_memory_images(images: list) -> None:
    """Numbers the in-memory inputs that cannot be images, before any is decoded (a path names itself)."""
    for i, image in enumerate(images):
        try:
            check_input(image)
        except DECODE_ERRORS as exc:
            raise HeadstartError(f"Input {i} is not an image: {exc}.") from None


def load(folder: str | Path) -> Predictor:
    """Open a model folder written by `headstart fit` (runs/<name>/model), or the model of a run folder, for
    predictions."""
    if not isinstance(folder, (str, PurePath)):
        raise HeadstartError(f"headstart.load takes the path of a model or run folder, not `{type(folder).__name__}`.")
    folder = Path(folder)
    if not folder.exists():
        raise HeadstartError(f"{folder} does not exist. Give a model folder (runs/<name>/model) or its run folder.")
    if folder.is_file():
        raise HeadstartError(f"{folder} is a file: give the model folder that holds it ({folder.parent}), or its "
                             "run folder.")
    if (folder / "model").is_dir():  # a run folder: its model, even a damaged one (then named in the error)
        return Predictor(folder / "model")
    if (folder / "config.yaml").is_file():  # a run folder without its model
        from headstart.run import no_model

        raise no_model(folder)
    return Predictor(folder)

"""Shared fixtures: small real datasets written to disk, and a tiny-model run config."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory):
    """scikit-learn's handwritten digits 0, 1 and 2 as 16x16 PNGs in class folders (about 540 images)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for i, (image, target) in enumerate(zip(digits.images, digits.target)):
        if target > 2:
            continue
        folder = root / f"digit{target}"
        folder.mkdir(exist_ok=True)
        pixels = (image * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).resize((16, 16), Image.NEAREST).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def forward_sizes(monkeypatch) -> list[int]:
    """The batch size of every forward pass of a headstart model from here on, in order."""
    from headstart.model.classifier import Classifier

    sizes, forward = [], Classifier.forward

    def recorded(model, **batch):
        sizes.append(len(next(iter(batch.values()))))
        return forward(model, **batch)

    monkeypatch.setattr(Classifier, "forward", recorded)
    return sizes


@pytest.fixture
def tiny_config(digits_folder, tmp_path):
    """A run config for the tiny CNN on the digits folder: trains in seconds."""
    return {
        "name": "tiny",
        "data": {"source": str(digits_folder), "augment": "none"},
        "backbone": "module:tests.tiny:tiny_cnn",
        "head": {"hidden": [16], "dropout": 0.3},
        "strategy": {"name": "gradual", "unfreeze": [1, 2, 3]},
        "train": {"max_epochs": 4, "batch_size": 32, "lr": 0.01, "seed": 0},
        "evaluate": {"after_fit": False},  # tests of the report evaluate explicitly
        "output": str(tmp_path / "runs"),
    }


@pytest.fixture(scope="session")
def tiny_run(digits_folder, tmp_path_factory):
    """A finished run of the tiny CNN on the digits (3 epochs, everything trainable), shared by CLI and report tests."""
    import headstart

    return headstart.fit({"name": "tiny", "data": {"source": str(digits_folder), "augment": "none"},
                          "backbone": "module:tests.tiny:tiny_cnn", "head": {"hidden": [16]},
                          "strategy": {"name": "full"}, "train": {"max_epochs": 3, "lr": 0.02},
                          "evaluate": {"after_fit": False}, "output": str(tmp_path_factory.mktemp("tiny-runs"))})

"""A finished (or interrupted) run folder, opened for reading."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from headstart.config import RunConfig, load_config
from headstart.errors import HeadstartError


class Run:
    """The run folder `path`: resolved config, split manifest, epoch metrics, checkpoints and the best model."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "config.yaml").is_file():
            raise HeadstartError(f"{self.path} is not a run folder (no config.yaml in it).")

    def __repr__(self) -> str:
        return f"Run('{self.path}')"

    @property
    def config(self) -> RunConfig:
        return load_config(self.path / "config.yaml")

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def results(self) -> dict:
        """Test metrics, best epoch, unfreeze events and split sizes (results.json)."""
        path = self.path / "results.json"
        if not path.is_file():
            raise HeadstartError(f"Run {self.path} has not finished: no results.json. Continue it with "
                                 f"`headstart fit --resume {self.path}`.")
        return json.loads(path.read_text())

    @property
    def test_metrics(self) -> dict[str, float]:
        return self.results["test"]

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch metrics (metrics.csv)."""
        return pd.read_csv(self.path / "metrics.csv")

    @property
    def split(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "split.csv", keep_default_na=False)

    def load(self):
        """The best model as a `Predictor`."""
        from headstart.predict import load

        return load(self.model_dir)

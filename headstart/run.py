"""A finished (or interrupted) run folder, opened for reading."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from headstart.config import RunConfig, load_config
from headstart.errors import HeadstartError
from headstart.files import read_json_object


# what to do about a damaged results.json, which `headstart fit` writes last
RESULTS_FIX = "Put back the results.json the run wrote, or train the run again with --overwrite."


def replaced_run(run_dir: Path) -> Path:
    """Where `fit --overwrite` keeps the run it replaces until the new one has finished."""
    return run_dir.with_name(f".{run_dir.name}.replaced")


def unfinished(run_dir: Path, missing: str) -> HeadstartError:
    """The error for a run folder that has no `missing` yet: continue it, or take back the run it was replacing."""
    replaced = replaced_run(run_dir)
    kept = (f" It is a `fit --overwrite` that stopped early: the run it replaces waits in {replaced} until it "
            f"finishes; to keep that one instead, delete {run_dir} and rename {replaced.name} back to "
            f"{run_dir.name}.") if replaced.is_dir() else ""
    return HeadstartError(f"Run {run_dir} has not finished: it has no {missing} yet. Continue it with "
                          f"`headstart fit --resume {run_dir}`.{kept}")


def no_model(run_dir: Path) -> HeadstartError:
    """The error for a run folder without its model folder: not finished yet, or finished and the model since moved
    or deleted."""
    if (run_dir / "results.json").is_file():
        return HeadstartError(f"Run {run_dir} has finished, but {run_dir / 'model' / 'config.json'} is missing: its "
                              "model folder was moved, deleted or damaged. Put it back, or train the run again with "
                              "`headstart fit --overwrite`.")
    return unfinished(run_dir, "model folder")


class Run:
    """The run folder `path`: resolved config, split manifest, epoch metrics, checkpoints and the best model."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise HeadstartError(f"{self.path} does not exist. Give a run folder written by `headstart fit` "
                                 "(<output>/<name>).")
        if not (self.path / "config.yaml").is_file():
            what = "it is a file" if self.path.is_file() else "no config.yaml in it"
            if (self.path / "config.json").is_file() and (self.path.parent / "config.yaml").is_file():
                what = f"it is a run's model folder; give the run, {self.path.parent}"
            raise HeadstartError(f"{self.path} is not a run folder ({what}). Give a folder written by "
                                 "`headstart fit` (<output>/<name>).")
        from headstart.registry.store import is_version_model

        if is_version_model(self.path.parent / "model"):
            source = json.loads((self.path.parent / "version.json").read_text()).get("source")
            raise HeadstartError(f"{self.path} is a registered version's record of its run (config, results, "
                                 f"metrics), not the run folder itself, which was {source}. Give that folder; the "
                                 f"version's model ({self.path.parent / 'model'}) is for predict and serve.")

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
            raise unfinished(self.path, "results.json")
        return read_json_object(path, RESULTS_FIX)

    @property
    def test_metrics(self) -> dict[str, float]:
        return self.results["test"]

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch metrics (metrics.csv)."""
        return pd.read_csv(self._written("metrics.csv", "no epoch has finished"))

    @property
    def split(self) -> pd.DataFrame:
        return pd.read_csv(self._written("split.csv", "its data was not split yet"), keep_default_na=False)

    def _written(self, name: str, why: str) -> Path:
        """The path of a file of the run, refused in words while the run has not written it."""
        path = self.path / name
        if not path.is_file():
            raise HeadstartError(f"Run {self.path} has no {name}: {why} (the run was stopped early). Start it "
                                 f"again with `headstart fit CONFIG --overwrite`, or continue it with `headstart fit "
                                 f"--resume {self.path}` if it has a checkpoint.")
        return path

    def load(self):
        """The best model as a `Predictor`."""
        from headstart.predict import load

        return load(self.path)  # a run that has not finished is named as such

    def evaluate(self, data: str | None = None, slice_by: str | list[str] | None = None,
                 output: str | Path | None = None, read: dict | None = None, progress: bool = True,
                 **settings) -> dict:
        """Evaluate the best model (see `headstart.evaluate.evaluate_run`): writes report.html and metrics.json
        into the run folder (or <run>/evaluations/<source> for `data`) and returns the metrics.

        read: data.* settings that say how to read `data`, e.g. `read={"image_column": "path"}`.
        slice_by and settings: evaluate.* fields, each replacing the run's, e.g. `run.evaluate(bootstrap=200,
        latency=False)`; `slice_by=[]` slices by nothing, None by the run's evaluate.slice_by.
        progress: as for `evaluate_run`.
        """
        from headstart.evaluate import evaluate_run

        if slice_by is not None:
            settings["slice_by"] = [slice_by] if isinstance(slice_by, str) else list(slice_by)
        return evaluate_run(self.path, data=data, output=output, overrides=settings, read=read, progress=progress)

    def compress(self, method: str = "auto", budget: float = 1.0, **options) -> dict:
        """Write the best model's compressed variants (<run>/model/variants/) and compare them with it on the test
        split (see `headstart.compress.compress`); returns the metrics of variants/metrics.json."""
        from headstart.compress import compress

        return compress(self.path, method=method, budget=budget, **options)

    @property
    def evaluation(self) -> dict:
        """The metrics of the last evaluation on the test split (metrics.json)."""
        path = self.path / "metrics.json"
        if not path.is_file():
            raise HeadstartError(f"Run {self.path} has not been evaluated: no metrics.json. Run "
                                 f"`headstart evaluate {self.path}`.")
        return read_json_object(path, f"Run `headstart evaluate {self.path}` again to write it anew.")

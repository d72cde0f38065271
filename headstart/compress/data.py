"""The examples compression works on: the test split (to score every variant), the validation split (calibration,
sensitivity) and the training split (quantization-aware training), from the run that made the model; or, for a
model folder without its run, data sources the user names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.data.split import count_seen, example_key
from headstart.errors import HeadstartError
from headstart.registry.store import is_version_model


@dataclass
class Split:
    inputs: list
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass
class CompressData:
    source: str
    scope: str  # "test split" (the run's) or "all examples" (of --data)
    test: Split
    val: Split | None  # calibration and sensitivity
    train: Split | None  # quantization-aware training
    run_dir: Path | None
    val_origin: str = "--calibration"
    without_run_data: str | None = None  # why the run's own splits could not be read (with --data)
    without_train: str | None = None  # why `train` is None
    seen_in_training: int | None = None  # with --data: its examples the run trained or validated on


def resolve(path: str | Path) -> tuple[Path, Path | None]:
    """RUN_OR_MODEL_DIR -> (model folder, run folder or None)."""
    path = Path(path)
    if (path / "config.yaml").is_file() and (path / "model" / "config.json").is_file():
        return path / "model", path
    if (path / "config.json").is_file():
        if is_version_model(path):
            raise HeadstartError(f"{path} is a version in a model registry, and a registered version never changes. "
                                 "Compress the run it came from (headstart compress runs/<name>), then register it "
                                 "again (headstart registry push runs/<name> --name NAME): the variants go with it.")
        run = path.parent
        return path, run if (run / "config.yaml").is_file() and (run / "split.csv").is_file() else None
    if (path / "config.yaml").is_file():
        from headstart.run import no_model

        raise no_model(path)
    raise HeadstartError(f"{path} is neither a run folder (runs/<name>) nor a model folder (runs/<name>/model): "
                         "it has no config.yaml and no config.json.")


def _split(frame) -> Split:
    return Split(frame["input"].tolist(), np.array(frame["y"], dtype=np.int64))


def _source(option: str, source: str, base: dict, settings: dict, labels: list[str], modality: str) -> Split:
    """Every example of `source` (given with `option`), read with the `base` data settings and `settings` over
    them; refused unless it holds the `modality` the model reads."""
    from pydantic import ValidationError

    from headstart.config import DataConfig, explain
    from headstart.evaluate.examples import other_source

    try:
        config = DataConfig.model_validate({**base, **settings, "source": source})
    except ValidationError as exc:
        raise explain(exc, f"The data settings for {option} {source}", ("data",)) from None
    return _split(other_source(config, source, labels, [], modality, option)[1])


def load_data(model_dir: Path, run_dir: Path | None, labels: list[str], modality: str, data: str | None = None,
              calibration: str | None = None, settings: dict | None = None) -> CompressData:
    """The run's splits; `data` replaces the test split and `calibration` the validation split (each a bundled
    name, folder or table of `modality`, read with the run's column settings and `settings` (data.* fields) over
    them)."""
    settings = settings or {}
    if settings and data is None and calibration is None:
        raise HeadstartError("--set data.* settings say how to read a --data or --calibration source; give --data "
                             "(or --calibration) too.")
    if run_dir is None and data is None:
        raise HeadstartError(f"{model_dir} is a model folder without its run (no split.csv beside it), so its test "
                             "split is unknown. Pass the run folder (runs/<name>), or labelled test data with --data "
                             "(and --calibration for static int8 and auto).")
    base, parts, unread = {}, {"test": None, "val": None, "train": None}, None
    if run_dir is not None:
        from headstart.evaluate.examples import run_parts
        from headstart.run import Run

        config = Run(run_dir).config.data
        base = config.model_dump()
        try:
            parts = {name: _split(frame) for name, frame in run_parts(run_dir, config, labels, [])[1].items()}
        except HeadstartError as exc:  # moved or changed since: --data (and --calibration) stand in for it
            if data is None:
                raise
            unread = str(exc)
    test = parts["test"] if data is None else _source("--data", data, base, settings, labels, modality)
    if not len(test):
        raise HeadstartError(f"The test split of {run_dir} is empty: nothing to compare the variants on.")
    if calibration is not None:
        val, dropped = _without(_source("--calibration", calibration, base, settings, labels, modality), test,
                                modality)
        if not len(val):
            raise HeadstartError(f"Every --calibration example ({dropped}) is also a test example, so none is left to "
                                 "calibrate on (the test must not judge what its own examples chose). Give "
                                 "calibration data other than the test data.")
        origin = "--calibration" + (f" ({dropped} examples that are also test examples left out)" if dropped else "")
    elif parts["val"] is not None:
        val, dropped = _without(parts["val"], test, modality) if data is not None else (parts["val"], 0)
        origin = "the run's validation split" + (f" ({dropped} examples that are also --data examples left out)"
                                                 if dropped else "")
        val = val if len(val) else None
    else:
        val, origin = None, "--calibration"
    train, no_train = parts["train"], None
    if train is not None and data is not None:  # quantization-aware training must not learn what --data scores
        train = _without(train, test, modality)[0]
        if not len(train):
            train, no_train = None, "every example of the run's training split is also a --data example"
    if run_dir is None:
        no_train = "a model folder without its run has no training split: pass the run folder (runs/<name>)"
    elif unread:
        no_train = f"the run's own data could not be read ({unread})"
    seen = None
    if data is not None and parts["train"] is not None:
        seen = count_seen(test.inputs, [*parts["train"].inputs, *parts["val"].inputs], modality)
    return CompressData(data or base["source"], "test split" if data is None else "all examples", test, val,
                        train, run_dir, origin, unread, no_train, seen)


def _without(calibration: Split, test: Split, modality: str) -> tuple[Split, int]:
    """The calibration examples that are not test examples, and how many were left out: the search decides on
    calibration data, and the test must not judge its own choice."""
    tested = {example_key(x, modality) for x in test.inputs}
    keep = [i for i, x in enumerate(calibration.inputs) if example_key(x, modality) not in tested]
    return Split([calibration.inputs[i] for i in keep], calibration.y[keep]), len(calibration) - len(keep)

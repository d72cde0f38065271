"""What a run is started or resumed with: its config (paths made absolute; on resume, the saved one, checked
against what is asked and what the checkpoint trained with) and its checkpoints, read safely."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from headstart.config import RunConfig, load_config
from headstart.errors import HeadstartError


def _local_path(value: str) -> str:
    """A relative path that exists here, made absolute; anything else (a bundled name, a hub name) as it is."""
    path = Path(value).expanduser()
    return os.path.abspath(path) if not path.is_absolute() and path.exists() else value


def anchored(config: RunConfig) -> RunConfig:
    """The config with a relative `data.source` and `hf:` folder made absolute, so that the run's saved config
    reads the same data from any directory (`headstart evaluate`, `compress`, `--resume` elsewhere)."""
    from headstart.data.sources import BUNDLED

    data = config.data
    if data.source not in BUNDLED:
        data = data.model_copy(update={"source": _local_path(data.source)})
    backbone = config.backbone
    if backbone.startswith("hf:"):
        backbone = "hf:" + _local_path(backbone[3:])
    return config.model_copy(update={"data": data, "backbone": backbone})


def run_config(config, overrides, resume) -> RunConfig:
    """The config a run trains with: the one given (paths made absolute), or on resume the run's saved config.yaml,
    which a config given too must not contradict."""
    if resume is None:
        return anchored(load_config(config, overrides))
    saved_path = Path(resume) / "config.yaml"
    if not saved_path.is_file():
        what = ("does not exist" if not Path(resume).exists() else "is a file, not a run folder"
                if not Path(resume).is_dir() else "has no config.yaml, so it is not a run folder")
        raise HeadstartError(f"--resume {resume}: it {what}. Give the folder `headstart fit` wrote (runs/<name>), "
                             "as printed when the run stopped.")
    saved = load_config(saved_path)
    if config is not None or overrides:
        asked = load_config(config if config is not None else saved, overrides)
        # a run saved with relative paths, resumed from where it was started, is the same config
        changed = _differences(anchored(saved).model_dump(mode="json"), anchored(asked).model_dump(mode="json"))
        changed = [name for name in changed if name != "output"]  # where runs are kept, not how this one trains
        if changed:
            raise HeadstartError(f"The config given differs from the one {resume} was started with in "
                                 f"{', '.join(changed)}. A resumed run continues with its saved config.yaml: drop "
                                 "the config changes, or start a new run.")
    return saved


def _differences(saved: dict, asked: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two dumped configs."""
    out = []
    for key in saved.keys() | asked.keys():
        a, b = saved.get(key), asked.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return sorted(out)


def check_trained_with(config: RunConfig, run_dir: Path, checkpoint: dict) -> None:
    """Refuse to resume when config.yaml no longer says what the run trained with (edited by hand): the model would
    not load, or train on with settings config.yaml does not show."""
    from headstart.train.module import CONFIG_KEY

    trained = checkpoint.get(CONFIG_KEY)  # a checkpoint without it is not checked
    if not isinstance(trained, dict):
        return
    now = config.model_dump(mode="json")
    # where runs are kept, and the evaluation after training, change nothing of what was trained
    changed = [name for name in _differences(trained, now) if name != "output" and not name.startswith("evaluate.")]
    if changed:
        shown = "; ".join(f"{name}: {_at(now, name)!r} there, {_at(trained, name)!r} in training"
                          for name in changed[:5])
        raise HeadstartError(f"--resume {run_dir}: its config.yaml was changed since the run started ({shown}). A "
                             "resumed run continues as it began: put those values back, or start a new run with the "
                             "changed config.")


def _at(dump: dict, name: str) -> Any:
    """The value of a dotted field name in a dumped config (None where it has none)."""
    for key in name.split("."):
        dump = dump.get(key) if isinstance(dump, dict) else None
    return dump


def check_unfinished(run_dir: Path) -> None:
    """--resume on a finished run has nothing to continue: say so instead of redoing its test and model."""
    results = run_dir / "results.json"
    if results.is_file():
        raise HeadstartError(f"--resume {run_dir}: the run has already finished (its results.json is written), so "
                             f"there is nothing to continue. Its model is {run_dir / 'model'}; `headstart evaluate "
                             f"{run_dir}` scores it again; a new run needs another name (--set name=...) or "
                             "--overwrite.")
    last, history = run_dir / "checkpoints" / "last.ckpt", run_dir / "metrics.csv"
    epochs = len(history.read_text().splitlines()) - 1 if history.is_file() else 0
    # a run killed in its first epoch has no checkpoint yet, and starts again (its row may be written: Lightning
    # saves checkpoints after the epoch's other callbacks)
    first = epochs <= 1 and not any((run_dir / "checkpoints").glob("*.ckpt"))
    if epochs > 0 and not last.exists() and not first:
        raise HeadstartError(f"--resume {run_dir}: metrics.csv lists {epochs} trained epoch{'s' * (epochs != 1)}, "
                             f"but the last checkpoint {last} is missing, so there is nothing to continue from. "
                             "Restore the file, or start the run again with --overwrite.")


def read_checkpoint(path: Path) -> dict:
    """A checkpoint written by `headstart fit`, read with `torch.load(weights_only=True)`: one that holds other
    objects (which only unpickling could rebuild), is damaged, or is not a training checkpoint is refused, naming
    the file."""
    import pickle

    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage makes the unpickler fail in many ways (KeyError, EOFError, ...)
        # torch's message runs to a page; its first sentence names the problem (after this prefix for an object)
        why = str(exc).split("WeightsUnpickler error: ", 1)[-1].strip().split("\n")[0].split(". ")[0]
        if not (why and isinstance(exc, (pickle.UnpicklingError, RuntimeError))):
            why = "it is damaged, or not a PyTorch checkpoint"
        raise _unreadable(path, why) from None
    if not (isinstance(checkpoint, dict) and {"state_dict", "epoch", "pytorch-lightning_version"} <= set(checkpoint)):
        raise _unreadable(path, "a PyTorch file, but not a training checkpoint: a model's weights alone, say")
    return checkpoint


def _unreadable(path: Path, why: str) -> HeadstartError:
    return HeadstartError(f"{path} is not a checkpoint headstart can read safely ({why}). Checkpoints are read with "
                          "torch.load(weights_only=True), which holds only tensors and plain values, so a file that "
                          "needs unpickling, or a damaged one, is refused. Put back the checkpoint the run wrote, or "
                          "start the run again with --overwrite.")

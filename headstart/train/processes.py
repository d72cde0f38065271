"""The processes of a run on several devices or machines: which one sets the run up, and how the others wait for it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from headstart.config import TrainConfig
from headstart.errors import HeadstartError

STOPPED = ".stopped"  # written by the first process of a run that stopped unfinished, for the others to stop too
_FOUND: dict[str, bool] = {}  # whether fit found this process a worker


def is_worker(train: TrainConfig | None = None) -> bool:
    """True in every DDP process but the first of the first node: those find the run folder set up by it.
    Lightning's own launcher sets LOCAL_RANK and, across nodes, NODE_RANK; torchrun sets RANK; SLURM's srun sets
    SLURM_PROCID, which counts only for a run of several processes (a one-device run is run whole in every task): it
    takes the run's `train` settings, or, without them, what the last `fit` in this process found."""
    if int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0:
        return True
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) > 0
    if train is None:
        return _FOUND.get("worker", False)
    return _slurm_starts(train) and int(os.environ.get("SLURM_PROCID", "0")) > 0


def _slurm_starts(train: TrainConfig) -> bool:
    """Whether SLURM started the processes of a run of `train`, as Lightning reads it: srun's variables, outside an
    interactive job (named bash or interactive), for a run of several devices or nodes."""
    if "SLURM_NTASKS" not in os.environ or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return False
    if train.devices in ("auto", -1):  # every GPU there is
        import torch

        return train.num_nodes > 1 or train.accelerator != "cpu" and torch.cuda.device_count() > 1
    return train.num_nodes > 1 or (len(train.devices) if isinstance(train.devices, list) else train.devices) > 1


def found_worker(train: TrainConfig) -> bool:
    """`is_worker(train)`, remembered for a script that asks `is_worker()` after `fit`, without the config."""
    _FOUND["worker"] = is_worker(train)
    return _FOUND["worker"]


def wait_for_results(run_dir: Path) -> None:
    """In a worker process: wait until the first process has tested the model and written results.json, so that
    the `Run` a script gets back in every process (Lightning runs the script once per process) is finished. Stop if
    the first process says it stopped, or (on its machine) is gone."""
    parent = os.getppid()  # on the first machine, the launcher started this process from the first one
    while not (run_dir / "results.json").exists():
        if (run_dir / STOPPED).exists() or os.getppid() != parent:
            raise HeadstartError(f"The first process of the run {run_dir} stopped before the run finished; see "
                                 "its output.")
        time.sleep(0.2)

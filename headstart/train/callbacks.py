"""The callbacks that carry a run's policy: unfreezing, early stopping, checkpoints, the epoch log."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from headstart.config import RunConfig
from headstart.train.epoch_log import EpochLog
from headstart.train.module import MODES
from headstart.train.unfreezing import GradualUnfreezing


def make_callbacks(config: RunConfig, run_dir: Path, n_groups: int) -> list[Callback]:
    """GradualUnfreezing first (EpochLog and fit read it), then early stopping, checkpoints and the log."""
    monitor, mode = config.train.monitor, MODES[config.train.monitor]
    unfreezing = GradualUnfreezing(config.strategy, monitor, n_groups)
    return [
        unfreezing,
        EarlyStopping(monitor=monitor, mode=mode, patience=config.train.patience),
        # the best epoch so far (best.ckpt, restored at the end), then every epoch (last.ckpt, for --resume): the
        # best one's save_last would write last.ckpt only in epochs that improve the monitor
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_top_k=1,
                        enable_version_counter=False),
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False),
        EpochLog(run_dir / "metrics.csv", unfreezing),
    ]

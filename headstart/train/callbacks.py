"""The callbacks that carry a run's policy: unfreezing, early stopping, checkpoints, the epoch log."""

from __future__ import annotations

import traceback
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from headstart.config import RunConfig
from headstart.errors import chain
from headstart.files import replacing
from headstart.train.epoch_log import EpochLog
from headstart.train.module import MODES
from headstart.train.unfreezing import GradualUnfreezing


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written under a temporary name in their own folder, flushed, then renamed over the old one: a
    full disk or a kill mid-write leaves the previous checkpoint whole. Lightning writes through a temporary file in
    $TMPDIR, which on another filesystem is then copied over the old checkpoint in place."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, "wb") as handle:
            try:
                torch.save(checkpoint, handle)
            except BaseException as exc:
                # torch's zip writer, stopped mid-file (a Ctrl-C), lives on in the frames of the error's tracebacks
                # (the RuntimeError torch raises, and the KeyboardInterrupt it raised it from) and writes the file's
                # end when they are freed: at exit, into the closed file, which aborts the process
                for error in chain(exc):
                    traceback.clear_frames(error.__traceback__)
                raise


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that follows its run folder: a run resumed after being moved or renamed keeps its best score
    so far. Lightning's own forgets it when the folder's path has changed, and would then take a later, worse epoch
    for the best."""

    def load_state_dict(self, state_dict: dict) -> None:
        old = state_dict.get("dirpath")
        if old and old != self.dirpath:
            def moved(path):
                return self.dirpath + path[len(old):] if isinstance(path, str) and path.startswith(old) else path

            state_dict = {**state_dict, "dirpath": self.dirpath,
                          **{key: moved(state_dict.get(key)) for key in
                             ("best_model_path", "kth_best_model_path", "last_model_path")},
                          "best_k_models": {moved(k): v for k, v in state_dict.get("best_k_models", {}).items()}}
        super().load_state_dict(state_dict)


class StageEarlyStopping(EarlyStopping):
    """Early stopping that gives each unfreezing stage `train.patience` epochs of its own, and whose decision survives
    --resume: Lightning does not checkpoint `trainer.should_stop`, so a run interrupted after stopping early (in its
    test, or while saving the model) would otherwise train on."""

    def __init__(self, unfreezing: GradualUnfreezing, **kwargs):
        super().__init__(**kwargs)
        self.unfreezing = unfreezing

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.wait_count >= self.patience:
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # here, not when an unfreeze on plateau is decided: that happens before this callback counts the epoch
        if self.unfreezing.stage_start == trainer.current_epoch > 0:
            self.wait_count = 0


def make_callbacks(config: RunConfig, run_dir: Path, n_groups: int) -> list[Callback]:
    """GradualUnfreezing first (early stopping, EpochLog and fit read it, after it has seen an epoch start), then
    early stopping, checkpoints and the log."""
    monitor, mode = config.train.monitor, MODES[config.train.monitor]
    unfreezing = GradualUnfreezing(config.strategy, monitor, n_groups)
    return [
        unfreezing,
        StageEarlyStopping(unfreezing, monitor=monitor, mode=mode, patience=config.train.patience),
        # the best epoch so far (best.ckpt, restored at the end), then every epoch (last.ckpt, for --resume): the
        # best one's save_last would write last.ckpt only in epochs that improve the monitor
        RunCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_top_k=1,
                      enable_version_counter=False),
        RunCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False),
        EpochLog(run_dir / "metrics.csv", unfreezing),
    ]

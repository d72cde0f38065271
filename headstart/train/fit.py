"""`headstart fit`: one run from config to best model, test metrics and a self-contained model folder."""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Union

from headstart.config import RunConfig, save_config
from headstart.errors import HeadstartError, chain, first_five
from headstart.files import run_lock, write_atomic
from headstart.progress import warn
from headstart.run import Run, replaced_run
from headstart.train.processes import STOPPED, found_worker, wait_for_results
from headstart.train.resume import check_trained_with, check_unfinished, read_checkpoint, run_config
from headstart.train.run_folder import remove_leftovers, remove_run, start_folder, undo_start

PRECISION = {"32": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}


def fit(config: Union[str, Path, dict, RunConfig, None] = None, overrides: list[str] = (),
        resume: Union[str, Path, None] = None, overwrite: bool = False) -> Run:
    """Train a model from a run config (a YAML path, a dict or a RunConfig) and return the finished `Run`.

    `overrides` are `key.sub=value` strings; `resume` is a run folder to continue from its last checkpoint.
    """
    if config is None and resume is None:
        raise HeadstartError("Give a run config (a YAML file) or --resume RUN_DIR.")
    if isinstance(overrides, (str, dict)):
        raise HeadstartError(f"overrides is a list of 'key.sub=value' strings, e.g. ['train.max_epochs=5'], not a "
                             f"{type(overrides).__name__}.")
    config = run_config(config, overrides, resume)
    run_dir = Path(resume) if resume is not None else config.run_dir()  # a resumed run stays where it is now
    if resume is not None:
        check_unfinished(run_dir)
        if (run_dir / "checkpoints" / "last.ckpt").exists():  # before Lightning reads it, which would fail raw
            check_trained_with(config, run_dir, read_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    if found_worker(config.train):
        return _train(config, run_dir, resume is not None, worker=True)
    _warn_of_settings(config)
    replacing, created = start_folder(run_dir, resume is not None, overwrite)
    if resume is None:  # a resumed run keeps the config.yaml it was checked against, as the user left it
        save_config(config, run_dir / "config.yaml")
    with run_lock(run_dir):  # to the end of its evaluation
        remove_leftovers(run_dir)
        try:
            run = _train(config, run_dir, resume is not None)
        except BaseException as exc:
            finished = (run_dir / "results.json").exists()  # stopped in the evaluation that follows training
            removed = resume is None and undo_start(run_dir, replacing, created)
            if not (finished or removed):  # the other processes, waiting for results.json, stop too
                with suppress(OSError):  # the error that stopped the run is the one to report
                    (run_dir / STOPPED).touch()
            if _interrupted(exc):
                raise KeyboardInterrupt(_after_interrupt(run_dir, removed, replacing, finished)) from None
            raise
    return run


def _interrupted(exc: BaseException) -> bool:
    """A Ctrl-C, or an error it caused on its way out: torch's checkpoint writer, stopped mid-file, raises a
    RuntimeError of its own."""
    return any(isinstance(error, KeyboardInterrupt) for error in chain(exc))


def _after_interrupt(run_dir: Path, removed: bool, replaced: bool, finished: bool) -> str:
    """What a Ctrl-C left behind, and what to run next."""
    if finished:
        return f"The run had finished, its evaluation had not: `headstart evaluate {run_dir}` runs it."
    if removed and replaced:
        return f"No epoch had finished: the run that --overwrite was replacing is back in {run_dir}, as it was."
    if removed:
        return "No epoch had finished: no run was kept."
    return f"Continue the run from its last finished epoch with `headstart fit --resume {run_dir}`."


@contextmanager
def _interruptible():
    """Lightning ends a Ctrl-C with exit(1) once it has shut down cleanly: raise it as the KeyboardInterrupt it was."""
    try:
        yield
    except SystemExit as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise


BACKBONE_EXAMPLES = {"image": "efficientnet_lite0 or module:<package.module>:<factory>",
                     "text": "minilm or hf:<local folder>"}


def _warn_of_settings(config: RunConfig) -> None:
    """Settings that a config allows but that cannot take effect in this run: said once, before the work."""
    strategy, train = config.strategy, config.train
    epochs = strategy.unfreeze if strategy.name == "gradual" and isinstance(strategy.unfreeze, list) else []
    late = [e for e in epochs if e >= train.max_epochs]
    if late:  # a config shortened for a quick try keeps its schedule: said, not refused
        warn(f"strategy.unfreeze lists {len(late)} unfreezing{'s' if len(late) > 1 else ''} at epoch {late[0]} or "
              f"later, but the run trains epochs 0 to {train.max_epochs - 1} (train.max_epochs {train.max_epochs}): "
              f"{'those groups' if len(late) > 1 else 'that group'} will not train.")
    if train.reduce_lr_patience >= train.patience - 1:
        # torch cuts the rates at the (reduce_lr_patience + 1)th epoch without improvement; patience ends the stage
        warn(f"train.reduce_lr_patience {train.reduce_lr_patience} with train.patience {train.patience}: early "
              "stopping ends each stage before an epoch at reduced learning rates, so train.reduce_lr_factor never "
              "applies. Set reduce_lr_patience to at most patience - 2 to use it.")


def _train(config: RunConfig, run_dir: Path, resume: bool, worker: bool = False) -> Run:
    """Data, model, training, the best epoch's test metrics and the model folder, in the run folder (in the first
    process; another, a `worker`, trains its share)."""
    from headstart.data.prepare import prepare_data

    # before lightning: data errors answer quickly
    data = prepare_data(config.data, run_dir, write=not worker, resume=resume)
    if config.evaluate.after_fit:
        from headstart.evaluate.costs import check_settings
        from headstart.evaluate.examples import check_slice_by

        check_settings(config.evaluate, data.labels)
        check_slice_by(config.data, config.evaluate.slice_by)
    import lightning as L  # lazily: importing it takes seconds
    import torch
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from headstart.backbones.contract import check_backbone
    from headstart.backbones.registry import build

    if config.train.precision == "16-mixed" and not torch.cuda.is_available():
        raise HeadstartError("train.precision 16-mixed needs a CUDA GPU; on CPU use bf16-mixed or 32.")
    L.seed_everything(config.train.seed, verbose=False)
    backbone = build(config.backbone, config.data)
    modality = getattr(backbone, "modality", None)  # one that is not set, check_backbone names
    if modality in ("text", "image") and modality != data.modality:  # before it reads texts as image paths
        hint = (" (for a table of image paths, name its column with data.image_column)" if modality == "image"
                else "")
        raise HeadstartError(f"Backbone '{config.backbone}' reads {modality}s, but data.source "
                             f"{config.data.source} holds {data.modality}s{hint}. Pick one that reads "
                             f"{data.modality}s: {BACKBONE_EXAMPLES.get(data.modality, 'one registered for it')}.")
    check_backbone(backbone, config.backbone, config.data, data.frame["input"].head(2).tolist())
    if backbone.modality == "text" and getattr(backbone, "max_length", config.data.max_length) < config.data.max_length:
        warn(f"data.max_length {config.data.max_length} is more than {config.backbone} reads: texts are cut at "
              f"{backbone.max_length} tokens (model/config.json says so).")
    from headstart.model.classifier import Classifier
    from headstart.model.folder import non_finite, preprocessing, save_model
    from headstart.train.callbacks import AtomicCheckpointIO, make_callbacks
    from headstart.cache.prefix import PrefixCache
    from headstart.train.epoch_data import EpochData
    from headstart.train.loaders import class_weights
    from headstart.train.module import FineTuner

    model = Classifier(backbone, data.labels, config.head.hidden, config.head.dropout,
                       config.strategy.freeze_batchnorm)
    train = config.train
    callbacks = make_callbacks(config, run_dir, len(model.groups))
    unfreezing = callbacks[0]
    augment = backbone.modality == "image" and config.data.augment != "none"
    sizes = {split: int((data.frame["split"] == split).sum()) for split in ("train", "val")}
    cache = PrefixCache(model, train, augment, sizes, run_dir / "cache", config.data.balance == "oversample")
    epoch_data = EpochData(data, backbone, config, cache, unfreezing)
    weights = None
    if config.data.balance == "class_weights":
        weights = class_weights(epoch_data.targets["train"], len(data.labels))
    module = FineTuner(model, config, cache, epoch_data, weights)
    _quiet_lightning()

    def make_trainer(strategy):
        try:
            return L.Trainer(max_epochs=train.max_epochs, precision=PRECISION[train.precision],
                             accelerator=train.accelerator, devices=train.devices, strategy=strategy,
                             num_nodes=train.num_nodes, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
                             logger=False, default_root_dir=run_dir,
                             num_sanity_val_steps=0, enable_model_summary=False, reload_dataloaders_every_n_epochs=1)
        except (MisconfigurationException, TypeError) as exc:  # GPUs this machine lacks (indices on a CPU: TypeError)
            why = " ".join(str(exc).split()).rstrip(".!")
            raise HeadstartError(f"train.accelerator {train.accelerator!r} with train.devices {train.devices!r} "
                                 f"cannot run here: {why}. Ask for what this machine has (train.accelerator=auto "
                                 "uses a GPU when there is one, else the CPU; train.devices=1).") from None

    trainer = make_trainer(_strategy(config, ddp=train.strategy == "ddp"))
    if train.strategy == "auto" and trainer.world_size > 1:  # Lightning chose DDP for several devices
        trainer = make_trainer(_strategy(config, ddp=True))
    processes = trainer.world_size
    if train.batch_size % processes:
        multiple = max(processes, train.batch_size // processes * processes)
        raise HeadstartError(f"train.batch_size {train.batch_size} is the global batch, split evenly among {processes} "
                             f"processes, and does not divide by {processes}. Give a multiple of {processes}, e.g. "
                             f"--set train.batch_size={multiple}.")
    # each DDP process would need every example's states while it sees a different shard each epoch: no cache then
    cache.enabled = cache.enabled and trainer.world_size == 1
    last = run_dir / "checkpoints" / "last.ckpt"
    with warnings.catch_warnings():
        for message in (".*does not have many workers.*", ".*module\\(s\\) in eval mode.*", ".*LeafSpec.*",
                        ".*all_gather is deprecated.*", ".*recommended to use `self.log\\(.*sync_dist.*",
                        ".*Checkpoint directory .* exists and is not empty.*"):
            # frozen groups are in eval mode on purpose; workers are a choice (train.num_workers); metrics are
            # gathered from every process by the module itself; a resumed run's checkpoints are meant to be there
            warnings.filterwarnings("ignore", message=message)
        try:
            with _interruptible():
                trainer.fit(module, ckpt_path=last if resume and last.exists() else None, weights_only=True)
        finally:
            cache.close()
        if not trainer.is_global_zero:
            wait_for_results(run_dir)
            return Run(run_dir)
        best_path, best_epoch = run_dir / "checkpoints" / "best.ckpt", None
        if best_path.exists():
            best = read_checkpoint(best_path)
            module.load_state_dict(best["state_dict"])
            best_epoch = int(best["epoch"])
        broken = non_finite(model.state_dict())
        if broken:  # early stopping ends a run whose loss turns NaN; the best epoch may have been NaN throughout
            raise HeadstartError(f"The training diverged: the weights of its best epoch hold NaN or infinite values "
                                 f"({first_five(broken)}), so no model is saved; metrics.csv in {run_dir} shows the "
                                 f"losses. Train again with a lower train.lr (it is {train.lr:g}), with --overwrite.")
        # the test split is scored once, by one process (a sharded test would count padded duplicates), on the
        # first device the run was given, in float32: the model as it is saved and served, whatever the training's
        # precision (under bf16 autocast a score differs by a few examples)
        tester = L.Trainer(accelerator=train.accelerator, precision="32-true", logger=False,
                           devices=train.devices[:1] if isinstance(train.devices, list) else 1,
                           enable_model_summary=False, enable_checkpointing=False, default_root_dir=run_dir)
        with _interruptible():
            test = tester.test(module, verbose=False)[0]

    save_model(model, run_dir / "model", {"hidden": config.head.hidden, "dropout": config.head.dropout},
               {"run": config.name, "preprocessing": preprocessing(backbone), "test_metrics": test})
    summary = {"test": test, "best_epoch": best_epoch, "epochs_trained": trainer.current_epoch,
               "unfreeze_events": unfreezing.events, "labels": data.labels,
               "examples": {name: int((data.frame["split"] == name).sum()) for name in ("train", "val", "test")}}
    write_atomic(run_dir / "results.json", json.dumps(summary, indent=2))  # the mark of a finished run
    # now, not after the evaluation, which a kill -9 may cut short
    remove_run(replaced_run(run_dir), ignore_errors=True)
    if config.evaluate.after_fit:
        _evaluate(run_dir)
    return Run(run_dir)


def _evaluate(run_dir: Path) -> None:
    """The report on the test split (report.html, metrics.json). The run is complete before it starts: a problem
    here is reported and leaves the trained model as it is."""
    from rich.console import Console
    from rich.markup import escape

    from headstart.evaluate import evaluate_run

    try:
        evaluate_run(run_dir)
    except Exception as exc:  # a full disk, or a fault in one part of the report: the trained run stands
        kind = "" if isinstance(exc, (HeadstartError, OSError)) else f"{type(exc).__name__}: "
        Console(stderr=True).print(f"[yellow]The run finished, but its evaluation did not:[/] "
                                   f"{escape(kind + str(exc))}\nRun it again with `headstart evaluate {run_dir}`.")


def _strategy(config: RunConfig, ddp: bool):
    """Lightning's strategy. DDP with frozen groups must expect parameters without gradients: every parameter is
    registered when DDP wraps the model (all trainable then), and frozen ones get no gradient until unfrozen."""
    if not ddp:
        return config.train.strategy
    if config.strategy.name == "full":
        return "ddp"
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(find_unused_parameters=True)


def _quiet_lightning() -> None:
    """Keep Lightning's start-up chatter (accelerator lines, tips) out of the run's output."""
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)

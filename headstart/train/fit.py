"""`headstart fit`: one run from config to best model, test metrics and a self-contained model folder."""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Union

from headstart.config import RunConfig, TrainConfig, load_config, save_config
from headstart.errors import HeadstartError, chain, first_five
from headstart.files import model_lock, remove_temporary, run_lock, write_atomic
from headstart.progress import warn
from headstart.run import Run, replaced_run

PRECISION = {"32": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}
STOPPED = ".stopped"  # written by the first process of a run that stopped unfinished, for the others to stop too


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


def _run_config(config, overrides, resume) -> RunConfig:
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


def _check_trained_with(config: RunConfig, run_dir: Path, checkpoint: dict) -> None:
    """Refuse to resume when config.yaml no longer says what the run trained with (edited by hand): the model would
    not load, or train on with settings config.yaml does not show."""
    from headstart.train.module import CONFIG_KEY

    trained = checkpoint.get(CONFIG_KEY)  # absent from checkpoints of older versions
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


def _check_unfinished(run_dir: Path) -> None:
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


def _remove(path: Path, ignore_errors: bool = False) -> None:
    """Delete a run folder if there is one, or only the link when it is a symbolic link to one (rmtree refuses
    links)."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=ignore_errors)


def _remove_leftovers(run_dir: Path) -> None:
    """Files and model copies that a kill -9 cut short in an earlier process of this run (we hold its lock), and the
    mark of an earlier attempt that stopped."""
    (run_dir / STOPPED).unlink(missing_ok=True)
    remove_temporary(run_dir)
    remove_temporary(run_dir / "checkpoints")
    for copy in run_dir.glob(".model-*"):  # save_model's staging folder, or the replaced model set aside
        _remove(copy, ignore_errors=True)


def _start_folder(run_dir: Path, resume: bool, overwrite: bool) -> tuple[bool, list[Path]]:
    """Create the run folder; return whether it replaces a run (--overwrite) and the folders above it that had to
    be created. The old run is moved aside: it is deleted only once the new run has finished, and put back if the
    new one stops before its first epoch ends."""
    replacing = run_dir.exists() and not resume
    if replacing:
        if not overwrite:
            raise HeadstartError(f"Run folder {run_dir} already exists. Continue it with --resume {run_dir}, give "
                                 "the run another name (--set name=...), or replace it with --overwrite (in Python: "
                                 "resume=, a config with another name, or overwrite=True).")
        if not (run_dir / "config.yaml").is_file():
            raise HeadstartError(f"{run_dir} already exists and is not a headstart run (it has no config.yaml), so "
                                 "--overwrite leaves it alone: it replaces runs only. Give the run another name "
                                 "(--set name=...) or output folder (--set output=...).")
        # not a run that another process is training or evaluating, nor a model being compressed or pushed
        with run_lock(run_dir), model_lock(run_dir / "model"):
            if replaced_run(run_dir).exists() and not (run_dir / "results.json").exists():
                _remove(run_dir)  # an unfinished replacement: the finished run set aside stays the one to keep
            else:
                _remove(replaced_run(run_dir), ignore_errors=True)
                run_dir.rename(replaced_run(run_dir))
    created = [folder for folder in run_dir.parents if not folder.exists()]  # the deepest first
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return replacing, created


def _undo_start(run_dir: Path, replacing: bool, created: list[Path]) -> bool:
    """After a failure: remove a run folder that has no finished epoch, so it does not block the next try, with the
    folders created for it, and put back the run it replaced. True if it was removed; a run with a checkpoint
    stays, for --resume."""
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        return False
    _remove(run_dir, ignore_errors=True)  # while another error is on its way
    for folder in created:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if replacing:
        replaced_run(run_dir).rename(run_dir)
    return True


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


_FOUND: dict[str, bool] = {}  # whether fit found this process a worker: a script asks after it, without the config


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
    config = _run_config(config, overrides, resume)
    run_dir = Path(resume) if resume is not None else config.run_dir()  # a resumed run stays where it is now
    if resume is not None:
        _check_unfinished(run_dir)
        if (run_dir / "checkpoints" / "last.ckpt").exists():  # before Lightning reads it, which would fail raw
            _check_trained_with(config, run_dir, read_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    _FOUND["worker"] = is_worker(config.train)
    if _FOUND["worker"]:
        return _train(config, run_dir, resume is not None, worker=True)
    _warn_of_settings(config)
    replacing, created = _start_folder(run_dir, resume is not None, overwrite)
    if resume is None:  # a resumed run keeps the config.yaml it was checked against, as the user left it
        save_config(config, run_dir / "config.yaml")
    with run_lock(run_dir):  # to the end of its evaluation
        _remove_leftovers(run_dir)
        try:
            run = _train(config, run_dir, resume is not None)
        except BaseException as exc:
            finished = (run_dir / "results.json").exists()  # stopped in the evaluation that follows training
            removed = resume is None and _undo_start(run_dir, replacing, created)
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
            _wait_for_results(run_dir)
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
    _remove(replaced_run(run_dir), ignore_errors=True)  # now, not after the evaluation, which a kill -9 may cut short
    if config.evaluate.after_fit:
        _evaluate(run_dir)
    return Run(run_dir)


def _wait_for_results(run_dir: Path) -> None:
    """In a worker process: wait until the first process has tested the model and written results.json, so that
    the `Run` a script gets back in every process (Lightning runs the script once per process) is finished. Stop if
    the first process says it stopped, or (on its machine) is gone."""
    parent = os.getppid()  # on the first machine, the launcher started this process from the first one
    while not (run_dir / "results.json").exists():
        if (run_dir / STOPPED).exists() or os.getppid() != parent:
            raise HeadstartError(f"The first process of the run {run_dir} stopped before the run finished; see "
                                 "its output.")
        time.sleep(0.2)


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

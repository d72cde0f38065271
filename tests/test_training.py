"""The training strategy on a tiny CNN with BatchNorm: freezing, learning rates per group, unfreeze order,
best-epoch restore, class weights and oversampling, bf16 on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import headstart
from headstart.config import StrategyConfig, TrainConfig
from headstart.model.classifier import Classifier
from headstart.run import Run
from headstart.train.callbacks import StageEarlyStopping
from headstart.train.loaders import EpochSampler, class_weights
from headstart.train.optim import build_optimizer, group_learning_rates
from headstart.train.unfreezing import GradualUnfreezing
from tests.tiny import tiny_cnn


def _backbone_state(prefix: str, state: dict) -> dict:
    return {k[len("backbone."):]: v for k, v in state.items() if k.startswith(f"backbone.{prefix}")}


def test_frozen_groups_keep_weights_and_batchnorm_statistics(tiny_config):
    # epochs 0-1: head, then the top group; stem and block stay frozen throughout
    tiny_config["train"]["max_epochs"] = 2
    run = headstart.fit(tiny_config)
    trained = load_file(str(run.model_dir / "model.safetensors"))
    initial = {f"backbone.{k}": v for k, v in tiny_cnn().state_dict().items()}
    for prefix in ("stem", "block"):
        for name, value in _backbone_state(prefix, trained).items():
            assert torch.equal(value, initial[f"backbone.{name}"]), f"frozen {name} changed"
    top_changed = [n for n, v in _backbone_state("top", trained).items() if not torch.equal(v, initial[f"backbone.{n}"])]
    assert "top.1.running_mean" in top_changed and "top.0.weight" in top_changed


def test_freeze_batchnorm_keeps_the_statistics_of_trainable_groups_and_trains_their_scale(tiny_config):
    tiny_config["train"]["max_epochs"] = 2
    tiny_config["strategy"]["freeze_batchnorm"] = True
    run = headstart.fit(tiny_config)
    trained = load_file(str(run.model_dir / "model.safetensors"))
    initial = {f"backbone.{k}": v for k, v in tiny_cnn().state_dict().items()}
    top_changed = [n for n, v in _backbone_state("top", trained).items() if not torch.equal(v, initial[f"backbone.{n}"])]
    assert "top.1.weight" in top_changed and "top.0.weight" in top_changed  # scale and convolution train
    assert not [n for n in top_changed if "running" in n or "num_batches" in n]  # the statistics do not move


def test_frozen_modules_stay_in_eval_mode_when_training():
    model = Classifier(tiny_cnn(), ["a", "b"], [8], 0.3)
    model.set_trainable(2)  # head + top
    model.train()
    assert not model.backbone.stem[1].training and not model.backbone.block[3].training
    assert model.backbone.top[1].training and model.head.training
    assert not any(p.requires_grad for p in model.backbone.stem.parameters())
    assert all(p.requires_grad for p in model.backbone.top.parameters())


def test_learning_rates_per_group():
    train, strategy = TrainConfig(lr=0.01), StrategyConfig(discriminative_factor=2.0, backbone_lr_ratio=0.1)
    assert group_learning_rates(4, train, strategy) == pytest.approx([0.00025, 0.0005, 0.001, 0.01])
    model = Classifier(tiny_cnn(), ["a", "b"], [8], 0.3)
    model.set_trainable(1)
    optimizer = build_optimizer(model, train, strategy)
    # every layer group is in the optimizer from the start, frozen or not
    assert [g["name"] for g in optimizer.param_groups] == ["stem", "block", "top", "head"]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.00025, 0.0005, 0.001, 0.01])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_unfreezes_from_the_top_on_milestones(tiny_config):
    run = headstart.fit(tiny_config)
    history = run.history
    assert history["trainable_groups"].tolist() == [1, 2, 3, 4]
    assert history["unfrozen"].fillna("").tolist() == ["", "top", "block", "stem"]
    assert [e["group"] for e in run.results["unfreeze_events"]] == ["top", "block", "stem"]


def _fake_trainer(loss: float, epoch: int, max_epochs: int = 100):
    return SimpleNamespace(sanity_checking=False, callback_metrics={"val_loss": torch.tensor(loss)},
                           current_epoch=epoch, max_epochs=max_epochs)


def test_unfreezes_when_validation_plateaus():
    callback = GradualUnfreezing(StrategyConfig(unfreeze="plateau", unfreeze_patience=2), "val_loss", n_groups=4)
    module = SimpleNamespace(model=Classifier(tiny_cnn(), ["a", "b"], [8], 0.3),
                             scheduler=SimpleNamespace(num_bad_epochs=2))
    trainable = []
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.92, 0.8, 0.85, 0.81, 0.7]):
        callback.on_validation_end(_fake_trainer(loss, epoch), module)
        trainable.append(callback.trainable)
    # two epochs without a new best -> one more group, counted again from zero
    assert trainable == [1, 1, 1, 2, 2, 2, 3, 3]
    assert callback.events == [{"epoch": 4, "group": "top"}, {"epoch": 7, "group": "block"}]
    assert module.scheduler.num_bad_epochs == 0  # an unfreeze starts a new plateau for the LR scheduler too
    # a plateau after the last epoch unfreezes nothing: the group would never train, yet be reported
    callback = GradualUnfreezing(StrategyConfig(unfreeze="plateau", unfreeze_patience=2), "val_loss", n_groups=4)
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.92]):
        callback.on_validation_end(_fake_trainer(loss, epoch, max_epochs=4), module)
    assert callback.trainable == 1 and callback.events == []


def test_an_unfreeze_on_a_milestone_restarts_early_stopping_count():
    callback = GradualUnfreezing(StrategyConfig(unfreeze=[3]), "val_loss", n_groups=4)
    stopping = StageEarlyStopping(callback, monitor="val_loss", patience=3)
    module = SimpleNamespace(model=Classifier(tiny_cnn(), ["a", "b"], [8], 0.3),
                             scheduler=SimpleNamespace(num_bad_epochs=2))
    for epoch, wait in ((2, 2), (3, 0)):
        stopping.wait_count = 2
        trainer = _fake_trainer(1.0, epoch)
        callback.on_train_epoch_start(trainer, module)  # in the order make_callbacks gives
        stopping.on_train_epoch_start(trainer, module)
        assert stopping.wait_count == wait
    assert callback.trainable == 2 and module.scheduler.num_bad_epochs == 0


def test_training_metrics_are_evaluate_s():
    import torch

    from headstart.evaluate.metrics import macro_f1
    from headstart.train.module import classification_metrics

    logits = torch.tensor([[3.0, 0, 0], [3, 0, 0], [0, 3, 0], [3, 0, 0]])  # class 2 neither in truth nor predicted
    metrics = classification_metrics(logits, torch.tensor([0, 0, 1, 1]), "test")
    assert metrics["test_acc"] == 0.75 and metrics["test_f1"] == macro_f1(np.array([0, 0, 1, 1]), logits.numpy())
    assert round(metrics["test_f1"], 4) == 0.7333  # (0.8 + 0.6667) / 2: an absent class is not scored 0


def _script_val_loss(monkeypatch, losses: list[float]) -> None:
    """Validation loss takes `losses`, epoch by epoch; the other metrics are measured."""
    from headstart.train import module

    script, measured = iter(losses), module.classification_metrics

    def scripted(logits, targets, prefix):
        metrics = measured(logits, targets, prefix)
        return {**metrics, "val_loss": next(script)} if prefix == "val" else metrics

    monkeypatch.setattr(module, "classification_metrics", scripted)


def test_each_stage_unfrozen_on_plateau_gets_the_whole_patience(tiny_config, monkeypatch):
    # a scripted validation loss: one epoch without a new best unfreezes a group (top, block, stem); after the last
    # unfreeze, patience 3 allows three epochs without one (7, 8, 9), so the run stops after epoch 9, not 8
    _script_val_loss(monkeypatch, [1.0, 0.9, 0.95, 0.8, 0.85, 0.7, 0.75, 0.76, 0.77, 0.78, 0.79, 0.8])
    tiny_config["strategy"]["unfreeze"] = "plateau"
    tiny_config["train"].update(max_epochs=20, patience=3)
    run = headstart.fit(tiny_config)
    assert run.history["unfrozen"].fillna("").tolist() == ["", "", "", "top", "", "block", "", "stem", "", ""]
    assert run.results["epochs_trained"] == 10 and run.results["best_epoch"] == 5


def test_each_epoch_logs_the_learning_rate_it_trained_at(tiny_config, monkeypatch):
    # two epochs without a new best (2, 3), patience 1: the rate is cut after epoch 3, so epoch 4 trains at half
    _script_val_loss(monkeypatch, [1.0, 0.9, 0.95, 0.96, 0.97])
    tiny_config["strategy"]["name"] = "full"
    tiny_config["train"].update(max_epochs=5, patience=10, reduce_lr_patience=1)
    run = headstart.fit(tiny_config)
    lr = tiny_config["train"]["lr"]
    assert run.history["lr_head"].tolist() == pytest.approx([lr, lr, lr, lr, lr / 2])


def test_an_epoch_listed_twice_unfreezes_two_groups():
    callback = GradualUnfreezing(StrategyConfig(unfreeze=[2, 2, 3]), "val_loss", n_groups=4)
    module = SimpleNamespace(model=Classifier(tiny_cnn(), ["a", "b"], [8], 0.3),
                             scheduler=SimpleNamespace(num_bad_epochs=0))
    trainable = []
    for epoch in range(5):
        callback.apply(_fake_trainer(1.0, epoch), module)
        trainable.append(callback.trainable)
    assert trainable == [1, 1, 3, 4, 4]
    assert [e["group"] for e in callback.events] == ["top", "block", "stem"]
    assert all(p.requires_grad for p in module.model.backbone.block.parameters())


def test_early_stopping_ends_the_run_and_the_best_epoch_is_restored(tiny_config):
    # at this rate validation loss is best at epoch 4, then worse twice: patience 2 stops the run after epoch 6
    tiny_config["train"].update(max_epochs=10, lr=0.1, patience=2)
    run = headstart.fit(tiny_config)
    history = run.history
    assert len(history) == 7 and run.results["epochs_trained"] < 10
    best_epoch = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    assert run.results["best_epoch"] == best_epoch == 4
    best = torch.load(run.path / "checkpoints" / "best.ckpt", weights_only=True)
    last = torch.load(run.path / "checkpoints" / "last.ckpt", weights_only=True)
    assert best["epoch"] == best_epoch and last["epoch"] == 6
    saved = load_file(str(run.model_dir / "model.safetensors"))
    for name, value in best["state_dict"].items():
        assert torch.equal(saved[name[len("model."):]], value), name
    assert not all(torch.equal(saved[name[len("model."):]], value) for name, value in last["state_dict"].items())
    # the test metrics are those of the restored model
    probabilities = headstart.load(run.model_dir).probabilities(
        run.split.query("split == 'test'")["origin"].tolist())
    labels = run.results["labels"]
    truth = torch.tensor([labels.index(l) for l in run.split.query("split == 'test'")["label"]])
    accuracy = float((probabilities.argmax(1) == truth).float().mean())
    assert accuracy == pytest.approx(run.test_metrics["test_acc"], abs=1e-6)


def test_plateau_cuts_reach_even_the_smallest_learning_rates():
    from headstart.config import RunConfig
    from headstart.train.module import FineTuner

    config = RunConfig(name="x", data={"source": "unused"}, train={"lr": 1e-6, "reduce_lr_patience": 1},
                       strategy={"discriminative_factor": 10.0})
    module = FineTuner(Classifier(tiny_cnn(), ["a", "b"], [8], 0.3), config, SimpleNamespace(augment=False), None)
    optimizer = module.configure_optimizers()
    before = [g["lr"] for g in optimizer.param_groups]  # the stem's is 1e-9: torch's default eps skipped its cuts
    module.scheduler.step(1.0)
    module.scheduler.step(2.0)
    module.scheduler.step(2.0)  # two epochs without improvement, patience 1: every group's rate is cut
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([lr * 0.5 for lr in before], rel=1e-12)


def test_class_weights_and_oversampling():
    targets = [0] * 90 + [1] * 10
    weights = class_weights(targets, 2)
    assert weights.tolist() == pytest.approx([100 / 180, 100 / 20])
    drawn = list(EpochSampler(100, seed=0, epoch=0, weights=weights[targets]))
    minority = sum(1 for i in drawn if i >= 90)
    assert 35 <= minority <= 65  # about half, against 10 of 100 without oversampling
    first = list(EpochSampler(100, seed=0, epoch=1))
    assert sorted(first) == list(range(100)) and first != list(EpochSampler(100, seed=0, epoch=2))
    assert first == list(EpochSampler(100, seed=0, epoch=1))


def test_bf16_mixed_precision_on_cpu_with_class_weights(tiny_config, monkeypatch):
    tiny_config["train"].update(max_epochs=3, precision="bf16-mixed")
    tiny_config["strategy"] = {"name": "full"}
    tiny_config["data"]["balance"] = "class_weights"
    dtypes, weights, forward, cross_entropy = set(), [], Classifier.forward, F.cross_entropy

    def recorded_forward(model, **batch):
        logits = forward(model, **batch)
        dtypes.add((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), logits.dtype))
        return logits

    def recorded_loss(logits, targets, weight=None, **kwargs):
        weights.append(weight)
        return cross_entropy(logits, targets, weight=weight, **kwargs)

    monkeypatch.setattr(Classifier, "forward", recorded_forward)
    monkeypatch.setattr(F, "cross_entropy", recorded_loss)
    run = headstart.fit(tiny_config)
    # training and validation in bf16; the test split in float32, as the saved model predicts
    assert dtypes == {(True, torch.bfloat16, torch.bfloat16), (False, torch.bfloat16, torch.float32)}
    train = run.split.query("split == 'train'")["label"]
    expected = class_weights([run.results["labels"].index(label) for label in train], 3)
    trained = [w for w in weights if w is not None]  # the validation metrics' losses are unweighted
    steps = -(-len(train) // tiny_config["train"]["batch_size"]) * 3
    assert len(trained) == steps and all(torch.equal(w.cpu(), expected) for w in trained)
    assert run.history["val_loss"].iloc[-1] < run.history["val_loss"].iloc[0]
    assert run.test_metrics["test_acc"] > 0.6
    assert json.loads((run.model_dir / "config.json").read_text())["labels"] == ["digit0", "digit1", "digit2"]


def test_devices_this_machine_lacks_are_named(tiny_config):
    with pytest.raises(headstart.HeadstartError, match="train.accelerator 'gpu' with train.devices 64 cannot run "
                                                      "here: .*train.devices=1"):
        headstart.fit(tiny_config, ["train.accelerator=gpu", "train.devices=64"])
    with pytest.raises(headstart.HeadstartError, match=r"train.devices \[0, 63\] cannot run here: .*train.devices=1"):
        headstart.fit(tiny_config, ["train.devices=[0, 63]"])  # GPU indices; accelerator auto
    assert not (Path(tiny_config["output"]) / "tiny").exists()


def test_a_global_batch_that_does_not_divide_among_processes_is_refused(tiny_config):
    # each of 2 processes took 33 // 2 = 16: the run trained with batches of 32 and config.yaml said 33
    with pytest.raises(headstart.HeadstartError, match=r"train.batch_size 33 is the global batch, split evenly among "
                                                      r"2 processes, and does not divide by 2\. .* "
                                                      r"--set train.batch_size=32\."):
        headstart.fit(tiny_config, ["train.accelerator=cpu", "train.devices=2", "train.batch_size=33"])
    assert not (Path(tiny_config["output"]) / "tiny").exists()


def test_settings_that_cannot_take_effect_are_warned_of(tiny_config, capsys):
    # tiny_config unfreezes at epochs 1, 2 and 3
    headstart.fit(tiny_config, ["train.max_epochs=1", "train.patience=4", "train.reduce_lr_patience=2"])
    said = " ".join(capsys.readouterr().err.split())
    assert "reduce_lr_factor never applies" not in said
    assert ("strategy.unfreeze lists 3 unfreezings at epoch 1 or later, but the run trains epochs 0 to 0 "
            "(train.max_epochs 1): those groups will not train.") in said
    headstart.fit(tiny_config, ["train.max_epochs=4", "train.patience=4", "name=second"])
    said = " ".join(capsys.readouterr().err.split())
    assert ("train.reduce_lr_patience 3 with train.patience 4: early stopping ends each stage before an epoch at "
            "reduced learning rates") in said
    assert "will not train" not in said


def test_a_run_that_diverges_saves_no_model_and_says_so(tiny_config):
    tiny_config.update(strategy={"name": "full"})
    with pytest.raises(headstart.HeadstartError, match=r"The training diverged: the weights of its best epoch hold "
                                                      r"NaN or infinite values \(.*\), so no model is saved; "
                                                      r".* a lower train.lr \(it is 1e\+12\)"):
        headstart.fit(tiny_config, ["train.lr=1e12", "train.max_epochs=2"])
    run_dir = Path(tiny_config["output"]) / "tiny"
    assert not (run_dir / "model").exists() and (run_dir / "metrics.csv").is_file()


def test_refuses_to_overwrite_a_run(tiny_config):
    tiny_config["train"]["max_epochs"] = 1
    run = headstart.fit(tiny_config)
    # finished: nothing to resume
    with pytest.raises(headstart.HeadstartError, match=r"already holds a finished run .*`headstart evaluate .*` "
                                                        r"scores it again.*--overwrite \(in Python: a config "
                                                        r"with another name, or overwrite=True\)"):
        headstart.fit(tiny_config)
    (run.path / "results.json").unlink()  # as if stopped before its test
    with pytest.raises(headstart.HeadstartError, match=r"already exists. Continue it with --resume .*--overwrite "
                                                        r"\(in Python: resume=, a config with another name"):
        headstart.fit(tiny_config)
    assert pd.read_csv(f"{tiny_config['output']}/tiny/metrics.csv").shape[0] == 1


def test_a_tiny_improvement_still_counts_as_a_plateau():
    strategy = StrategyConfig(unfreeze="plateau", unfreeze_patience=1, unfreeze_min_improvement=0.01)
    callback = GradualUnfreezing(strategy, "val_acc", n_groups=4)
    module = SimpleNamespace(model=Classifier(tiny_cnn(), ["a", "b"], [8], 0.3),
                             scheduler=SimpleNamespace(num_bad_epochs=2))
    for epoch, accuracy in enumerate([0.80, 0.805, 0.90]):
        trainer = _fake_trainer(0.0, epoch)
        trainer.callback_metrics = {"val_acc": torch.tensor(accuracy)}
        callback.on_validation_end(trainer, module)
    # 0.805 is under 1% better than 0.80: plateau, unfreeze; 0.90 is a real gain: no unfreeze
    assert callback.events == [{"epoch": 2, "group": "top"}]


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(tiny_config):
    tiny_config["train"]["max_epochs"] = 1
    old = headstart.fit(tiny_config)
    bad_data = {**tiny_config, "data": {**tiny_config["data"], "source": "/no/such/folder"}}
    bad_backbone = {**tiny_config, "backbone": "module:tests.tiny:no_such_factory"}  # fails after the data stage
    for broken, error in [(bad_data, "neither a bundled dataset"), (bad_backbone, "no_such_factory")]:
        with pytest.raises(headstart.HeadstartError, match=error):
            headstart.fit(broken, overwrite=True)
        assert (old.model_dir / "model.safetensors").is_file() and (old.path / "results.json").is_file()
        assert Run(old.path).config.backbone == tiny_config["backbone"]
        assert sorted(p.name for p in old.path.parent.iterdir()) == ["tiny"]
    headstart.fit(tiny_config, overwrite=True)  # a good config replaces it
    assert sorted(p.name for p in old.path.parent.iterdir()) == ["tiny"]


def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder(tiny_config):
    with pytest.raises(headstart.HeadstartError, match="no_such_factory"):
        headstart.fit({**tiny_config, "backbone": "module:tests.tiny:no_such_factory"})
    assert not (Path(tiny_config["output"]) / "tiny").exists()
    deeper = Path(tiny_config["output"]) / "new" / "deeper"  # nor the folders created to hold it
    with pytest.raises(headstart.HeadstartError, match="no_such_factory"):
        headstart.fit({**tiny_config, "backbone": "module:tests.tiny:no_such_factory", "output": str(deeper)})
    assert not (Path(tiny_config["output"]) / "new").exists()
    tiny_config["train"]["max_epochs"] = 1
    headstart.fit(tiny_config)  # the corrected config is not refused as "already exists"


def test_a_second_overwrite_keeps_the_finished_run_not_the_unfinished_one(tmp_path):
    from headstart.train.run_folder import start_folder, undo_start

    run, aside = tmp_path / "x", tmp_path / ".x.replaced"
    aside.mkdir()
    (aside / "results.json").write_text("{}")  # a finished run, set aside by a first --overwrite
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")  # its replacement, stopped after an epoch
    assert start_folder(run, resume=False, overwrite=True) == (True, [])
    assert (aside / "results.json").is_file() and not (run / "checkpoints" / "last.ckpt").exists()
    assert undo_start(run, replacing=True, created=[])  # the third run stops before its first epoch ends
    assert (run / "results.json").is_file() and not aside.exists()


def test_the_replaced_run_is_gone_before_the_evaluation_starts(tiny_config, monkeypatch):
    tiny_config["train"]["max_epochs"] = 1
    headstart.fit(tiny_config)
    aside = Path(tiny_config["output"]) / ".tiny.replaced"
    seen = []
    monkeypatch.setattr("headstart.evaluate.evaluate_run", lambda run_dir: seen.append(aside.exists()))
    headstart.fit({**tiny_config, "evaluate": {"after_fit": True}}, overwrite=True)
    assert seen == [False]  # a kill -9 during the evaluation leaves no old run behind


def test_overwrite_replaces_runs_only(tiny_config):
    kept = Path(tiny_config["output"]) / "tiny" / "thesis.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("not a run")
    with pytest.raises(headstart.HeadstartError, match="is not a headstart run .*leaves it alone"):
        headstart.fit(tiny_config, overwrite=True)
    assert kept.read_text() == "not a run" and len(list(kept.parent.parent.iterdir())) == 1


@pytest.mark.parametrize("lock", [".lock", "model/.compress.lock"])  # a fit or evaluate; a compress or push
def test_a_run_in_use_by_another_process_is_not_overwritten_resumed_or_evaluated(tiny_config, lock):
    tiny_config["train"]["max_epochs"] = 1
    run = headstart.fit(tiny_config)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\n"
                               f"fd = open({str(run.path / lock)!r}, 'a')\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "print('held', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        attempts = [lambda: headstart.fit(tiny_config, overwrite=True)]
        if lock == ".lock":
            attempts.append(lambda: run.evaluate(progress=False))
        for attempt in attempts:
            with pytest.raises(headstart.HeadstartError, match="is in use"):
                attempt()
        assert (run.path / "results.json").is_file() and not (run.path.parent / ".tiny.replaced").exists()
        if lock == ".lock":  # as if killed before its evaluation: a --resume is refused, its config.yaml untouched
            (run.path / "results.json").rename(run.path / "results.kept")
            config = run.path / "config.yaml"
            config.write_text(config.read_text() + "# the user's note\n")
            with pytest.raises(headstart.HeadstartError, match="is in use"):
                headstart.fit(resume=run.path)
            assert config.read_text().endswith("# the user's note\n")
            (run.path / "results.kept").rename(run.path / "results.json")
    finally:
        holder.kill()
        holder.wait()
    headstart.fit(tiny_config, overwrite=True)  # free again


def test_only_a_run_folder_that_can_be_locked_is(tmp_path):
    from headstart.files import run_lock

    (tmp_path / "model").mkdir()
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "config.yaml").write_text("")  # a registry version's copy of the run files
    for folder in ("model", "copy"):  # not runs: a registry version must stay as registered
        with run_lock(tmp_path / folder):
            pass
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["copy", "copy/config.yaml",
                                                                                       "model"]
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("")
    (tmp_path / "run" / ".lock").mkdir()  # cannot be opened, as on a read-only filesystem
    with run_lock(tmp_path / "run"):
        pass


def test_a_lock_is_freed_when_its_holder_dies_though_its_forked_children_live(tmp_path):
    from headstart.files import locked

    lock, log = tmp_path / ".lock", tmp_path / "child.log"
    script = f"""import os, time
from headstart.files import locked
with locked({str(lock)!r}):
    child = os.fork()  # as a DataLoader worker is
    if child:
        print(child, flush=True)
        os._exit(0)  # dies holding the lock, as on kill -9
    log = open({str(log)!r}, "w")  # the lowest free descriptor: the lock's, which the child closed at the fork
log.write("ok")  # leaving the block in the child must not have closed it
log.close()
time.sleep(60)
"""
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                              stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    holder.wait(timeout=60)
    try:
        # the child closes its copy of the lock's descriptor just after the fork, once it is scheduled: on busy cores
        # that can come after the parent's exit, so wait a little (a child keeping the lock would hold it for 60 s)
        with locked(lock, timeout=10):
            pass
        deadline = time.monotonic() + 30
        while not (log.is_file() and log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.read_text() == "ok"
    finally:
        os.kill(child, 9)


def _saved_cnn(hidden: int) -> Classifier:
    """A tiny classifier that save_model can write (its backbone named by its factory)."""
    from headstart.backbones.registry import build
    from headstart.config import DataConfig

    return Classifier(build("module:tests.tiny:tiny_cnn", DataConfig(source="unused")), ["a", "b"], [hidden], 0.3)


def test_a_filesystem_that_cannot_flush_folders_still_gets_its_files(tmp_path, monkeypatch):
    import errno
    import stat

    from headstart.files import write_atomic
    from headstart.model.folder import load_model, save_model

    flush = os.fsync

    def files_only(fd):  # as on some network and FUSE filesystems
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        flush(fd)

    monkeypatch.setattr(os, "fsync", files_only)
    write_atomic(tmp_path / "results.json", "{}")
    save_model(_saved_cnn(8), tmp_path / "model", {"hidden": [8], "dropout": 0.3})
    assert load_model(tmp_path / "model").head[1].out_features == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "results.json"]


def test_a_model_folder_being_replaced_is_whole_wherever_a_kill_stops_it(tmp_path, monkeypatch):
    from headstart.model.folder import load_model, save_model

    save_model(_saved_cnn(8), tmp_path / "model", {"hidden": [8], "dropout": 0.3})

    def killed(path, ignore_errors=False):  # midway through deleting the folder replaced
        (Path(path) / "model.safetensors").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr("headstart.model.folder.shutil.rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model(_saved_cnn(4), tmp_path / "model", {"hidden": [4], "dropout": 0.3})
    assert load_model(tmp_path / "model").head[1].out_features == 4  # the new one, whole


def test_overwrite_twice_through_a_symbolic_link(tiny_config, tmp_path):
    tiny_config["train"]["max_epochs"] = 1
    target = tmp_path / "archive" / "tiny"
    headstart.fit({**tiny_config, "output": str(target.parent)})
    (Path(tiny_config["output"])).mkdir(parents=True)
    (Path(tiny_config["output"]) / "tiny").symlink_to(target)
    for _ in range(2):  # the first left the link as .tiny.replaced, which the second could not replace
        headstart.fit(tiny_config, overwrite=True)
    assert sorted(p.name for p in Path(tiny_config["output"]).iterdir()) == ["tiny"]


@pytest.mark.parametrize("fault, shown", [(OSError(28, "No space left on device"), "[Errno 28] No space left on device"),
                                          (ValueError("'xerr' must not contain negative values"),
                                           "ValueError: 'xerr' must not contain negative values")])
def test_an_evaluation_that_fails_leaves_the_finished_run(tiny_config, monkeypatch, capsys, fault, shown):
    tiny_config["train"]["max_epochs"] = 1

    def fail(*args, **kwargs):
        raise fault

    monkeypatch.setattr("headstart.evaluate.evaluate_run", fail)
    run = headstart.fit({**tiny_config, "evaluate": {"after_fit": True}})
    assert (run.path / "results.json").is_file() and (run.model_dir / "model.safetensors").is_file()
    assert f"The run finished, but its evaluation did not: {shown}" in " ".join(capsys.readouterr().err.split())


def test_a_checkpoint_write_that_fails_leaves_the_previous_one(tmp_path, monkeypatch):
    from headstart.train.callbacks import AtomicCheckpointIO

    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1, "weights": torch.ones(3)}, path)

    def full_disk(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        AtomicCheckpointIO().save_checkpoint({"epoch": 2, "weights": torch.zeros(3)}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_the_model_folder_is_readable_as_the_umask_allows(tiny_config):
    tiny_config["train"]["max_epochs"] = 1
    old = os.umask(0o022)
    try:
        run = headstart.fit(tiny_config)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [run.model_dir, *run.model_dir.rglob("*")]}
    assert modes["model"] == 0o755 and modes["model.safetensors"] == modes["config.json"] == 0o644  # were 700, 600


@pytest.mark.parametrize("stage, after", [
    ("headstart.data.prepare.prepare_data", "No epoch had finished: the run that --overwrite was replacing is back"),
    ("headstart.train.fit._evaluate", "The run had finished, its evaluation had not: `headstart evaluate"),
])
def test_an_interrupt_says_what_it_left(tiny_config, monkeypatch, stage, after):
    tiny_config["train"]["max_epochs"] = 1
    old = headstart.fit(tiny_config)
    (old.path / "old-run").write_text("")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, interrupt)
    with pytest.raises(KeyboardInterrupt) as caught:
        headstart.fit({**tiny_config, "evaluate": {"after_fit": True}}, overwrite=True)
    assert str(caught.value).startswith(after)
    assert (old.path / "old-run").exists() == (stage.endswith("prepare_data"))  # put back, or replaced
    assert (old.path / "results.json").is_file() and [p.name for p in old.path.parent.iterdir()] == ["tiny"]


def test_a_ctrl_c_while_a_checkpoint_is_written_is_an_interrupt(tiny_config, monkeypatch):
    import torch

    tiny_config["train"]["max_epochs"] = 3
    save, calls = torch.save, []

    def cut_short(checkpoint, handle):  # torch's zip writer, stopped by a Ctrl-C, raises its own error
        calls.append(handle)
        if len(calls) == 3:  # epoch 1's first checkpoint
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1376 vs 1361")
        save(checkpoint, handle)

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(KeyboardInterrupt) as caught:
        headstart.fit(tiny_config)
    run_dir = Path(tiny_config["output"]) / "tiny"
    assert str(caught.value) == ("Continue the run from its last finished epoch with "
                                 f"`headstart fit --resume {run_dir}`.")
    for load in (lambda: headstart.load(run_dir), lambda: headstart.Run(run_dir).load()):
        with pytest.raises(headstart.HeadstartError, match="has not finished: it has no model folder yet. Continue"):
            load()
    monkeypatch.setattr(torch, "save", save)
    assert len(headstart.fit(resume=run_dir).history) == 3
    (run_dir / "model").rename(run_dir.parent / "moved")  # a finished run whose model was moved away
    from headstart.compress import compress

    for call in (lambda: headstart.load(run_dir), lambda: headstart.Run(run_dir).load(),
                 lambda: headstart.Run(run_dir).evaluate(progress=False), lambda: compress(run_dir, progress=False)):
        with pytest.raises(headstart.HeadstartError, match="has finished, but .*config.json is missing: its model "):
            call()


@pytest.mark.parametrize("cut", [1, 3])  # before the first write: a KeyboardInterrupt; within: torch's RuntimeError
def test_a_checkpoint_cut_short_frees_torch_s_writer_while_its_file_is_open(tmp_path, monkeypatch, cut):
    """torch's zip writer, freed after its file is closed (at exit, with the tracebacks that hold it), writes the
    file's end into the closed file and aborts the process: seen once after a Ctrl-C, as exit code -6."""
    import contextlib
    import traceback

    import torch

    import headstart.train.callbacks as callbacks
    from headstart.errors import chain

    replacing = callbacks.replacing

    @contextlib.contextmanager
    def interrupted(path, mode):  # a Ctrl-C halfway through the file's `cut`th write
        with replacing(path, mode) as handle:
            write, writes = handle.write, []

            def cut_short(data):
                writes.append(data)
                if len(writes) == cut:
                    write(data[:len(data) // 2])
                    raise KeyboardInterrupt
                return write(data)

            handle.write = cut_short
            yield handle

    monkeypatch.setattr(callbacks, "replacing", interrupted)
    with pytest.raises((KeyboardInterrupt, RuntimeError)) as caught:
        callbacks.AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(10_000), "v": torch.ones(10_000)},
                                                       tmp_path / "last.ckpt")
    assert any(isinstance(error, KeyboardInterrupt) for error in chain(caught.value))
    held = [value for error in chain(caught.value) for frame, _ in traceback.walk_tb(error.__traceback__)
            for value in frame.f_locals.values()]
    assert not [value for value in held if isinstance(value, torch._C.PyTorchFileWriter)]
    assert not list(tmp_path.iterdir())


def test_resume_refuses_a_finished_run_and_names_changed_fields(tiny_config):
    tiny_config["train"]["max_epochs"] = 1
    run = headstart.fit(tiny_config)
    results = (run.path / "results.json").read_text()
    with pytest.raises(headstart.HeadstartError, match="already finished"):
        headstart.fit(resume=run.path)
    assert (run.path / "results.json").read_text() == results
    with pytest.raises(headstart.HeadstartError, match=r"in train\.lr, train\.max_epochs\. A resumed run"):
        headstart.fit(resume=run.path, overrides=["train.max_epochs=3", "train.lr=0.1"])
    for wrong, said in [(run.path.parent / "nowhere", "it does not exist"),
                        (run.path / "results.json", "it is a file, not a run folder"),
                        (run.model_dir, "it has no config.yaml, so it is not a run folder")]:
        with pytest.raises(headstart.HeadstartError, match=f"--resume .*: {said}. Give the folder"):
            headstart.fit(resume=wrong)


@pytest.mark.parametrize("setting, message", [
    ({"costs": {"false_negative": 5}}, "false_positive / false_negative apply to binary tasks; this one has 3"),
    ({"positive_label": "digit1"}, "positive_label is set, but the task has 3 classes"),
    ({"costs": {"per_class": {"cat": 2}}}, "names cat, which are not labels"),
    ({"slice_by": ["pne"]}, "has no column 'pne'. This data has no metadata columns to slice by"),
])
def test_evaluation_settings_that_do_not_fit_the_labels_are_refused_before_training(tiny_config, setting, message):
    tiny_config["evaluate"] = {"after_fit": True, **setting}
    with pytest.raises(headstart.HeadstartError, match=message):
        headstart.fit(tiny_config)
    assert not (Path(tiny_config["output"]) / "tiny").exists()  # no epoch trained, nothing kept


def test_a_backbone_of_the_other_modality_is_named_before_it_reads_the_data(tiny_config, tmp_path):
    table = tmp_path / "texts.csv"
    table.write_text("text,label\n" + "".join(f"the team won match {i},{('sport', 'news')[i % 2]}\n"
                                              for i in range(30)))
    tiny_config["data"] = {"source": str(table)}  # texts, for the tiny CNN
    with pytest.raises(headstart.HeadstartError, match=r"reads images, but data.source .*texts.csv holds texts \(for "
                                                       r"a table of image paths, name its column"):
        headstart.fit(tiny_config)


@pytest.mark.parametrize("call, message", [
    (lambda: headstart.fit([{"name": "x"}]), "The run config must be the path of a YAML file, .* not `list`"),
    (lambda: headstart.fit(5), "not `int`"),
    (lambda: headstart.load(None), "headstart.load takes the path of a model or run folder, not `NoneType`"),
    (lambda: headstart.load("no/such/model"), "no/such/model does not exist"),
])
def test_python_calls_with_the_wrong_kind_of_argument_say_so(call, message):
    with pytest.raises(headstart.HeadstartError, match=message):
        call()


def test_a_bf16_run_reports_the_test_metrics_of_the_model_as_saved(tiny_config):
    """The test split is scored in float32, as the saved model predicts and is served, whatever train.precision."""
    import headstart

    tiny_config["train"].update(precision="bf16-mixed", max_epochs=2)
    run = headstart.fit(tiny_config)
    test = run.split[run.split["split"] == "test"]
    probabilities = headstart.load(run.model_dir).probabilities(test["origin"].tolist())
    targets = torch.tensor([run.results["labels"].index(label) for label in test["label"]])
    accuracy = (probabilities.argmax(1) == targets).double().mean().item()
    assert run.test_metrics["test_acc"] == pytest.approx(accuracy, abs=1e-6)  # logged as float32
    assert run.test_metrics["test_loss"] == pytest.approx(F.nll_loss(probabilities.log(), targets).item(), abs=1e-5)

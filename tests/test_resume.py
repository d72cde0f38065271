"""A run killed with SIGKILL mid-training continues with --resume and ends exactly like an unbroken run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _fit(config: Path | None, *extra: str) -> subprocess.Popen:
    """`headstart fit` in a process that takes Ctrl-C as from a terminal (jobs started in the background ignore it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "1000"}  # messages on one line each
    return subprocess.Popen([sys.executable, "-m", "headstart.cli", "fit", *([str(config)] if config else []), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _epochs_done(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def test_killed_run_resumes_to_the_same_result(tiny_config, tmp_path):
    tiny_config["train"].update(max_epochs=10, patience=20, reduce_lr_patience=1, monitor="val_acc")
    tiny_config["strategy"]["unfreeze"] = [2, 4, 6]
    tiny_config["data"]["augment"] = "symmetric"  # augmentation and dropout draw random numbers: they must replay
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config))

    whole = _fit(config, "--set", "name=whole")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()

    broken_dir = Path(tiny_config["output"]) / "broken"
    broken = _fit(config, "--set", "name=broken")
    deadline = time.time() + 300
    while _epochs_done(broken_dir) < 3 and broken.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    broken.send_signal(signal.SIGKILL)
    broken.wait()
    assert broken.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (broken_dir / "results.json").exists() and _epochs_done(broken_dir) < 10
    # the run goes on from its last checkpoint: that of the last epoch in metrics.csv, or of the one before when the
    # kill came between the epoch's row and its checkpoint (Lightning runs checkpoint callbacks last), whose row the
    # resumed run then writes again
    last = torch.load(broken_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] >= _epochs_done(broken_dir) - 2

    renamed = broken_dir.with_name("broken renamed")  # the folder given is the run, whatever it is called now
    broken_dir.rename(renamed)
    broken_dir = renamed
    resumed = _fit(None, "--resume", str(broken_dir))
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert "exists and is not empty" not in resumed.stderr.read()  # Lightning's warning, meaningless on a resume

    whole_dir = Path(tiny_config["output"]) / "whole"
    expected = json.loads((whole_dir / "results.json").read_text())
    got = json.loads((broken_dir / "results.json").read_text())
    assert got["test"] == expected["test"]
    assert got["best_epoch"] == expected["best_epoch"]
    assert got["unfreeze_events"] == expected["unfreeze_events"]
    assert _history(broken_dir) == _history(whole_dir)
    # the plateau scheduler cut the learning rate during the run, and the resumed run replayed those cuts
    assert (pd.read_csv(whole_dir / "metrics.csv")["lr_head"] < tiny_config["train"]["lr"]).any()


def _history(run_dir: Path) -> list[str]:
    """Every epoch's metrics, bar the two timing columns at the end."""
    return [line.rsplit(",", 2)[0] for line in (run_dir / "metrics.csv").read_text().splitlines()]


def test_ctrl_c_keeps_the_run_for_resume_and_the_run_it_replaces(tiny_config, tmp_path):
    tiny_config["train"].update(max_epochs=1)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    first = _fit(config)
    assert first.wait(timeout=600) == 0, first.stderr.read()

    run_dir = Path(tiny_config["output"]) / "tiny"
    second = _fit(config, "--overwrite", "--set", "train.max_epochs=40", "--set", "train.patience=50")
    deadline = time.time() + 300
    while _epochs_done(run_dir) < 2 and second.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second.send_signal(signal.SIGINT)
    assert second.wait(timeout=120) == 130, "the run ended before it could be interrupted"
    assert f"Interrupted. Continue the run from its last finished epoch with `headstart fit --resume {run_dir}`." \
        in second.stderr.read()
    replaced = run_dir.with_name(".tiny.replaced")
    assert (replaced / "results.json").is_file() and not (run_dir / "results.json").exists()

    resumed = _fit(None, "--resume", str(run_dir))
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert json.loads((run_dir / "results.json").read_text())["epochs_trained"] > 1 and not replaced.exists()


class _Payload:
    """An object that runs code when unpickled: what a tampered checkpoint could hold."""

    def __reduce__(self):
        return (print, ("UNPICKLED",))


def test_resume_refuses_a_checkpoint_that_needs_unpickling_or_is_damaged(tiny_config, capfd):
    import headstart

    tiny_config["train"]["max_epochs"] = 1
    run = headstart.fit(tiny_config)
    (run.path / "results.json").unlink()  # as if killed after its last epoch
    last = run.path / "checkpoints" / "last.ckpt"
    torch.save({**torch.load(last, weights_only=True), "extra": _Payload()}, last)
    tampered = last.read_bytes()
    with pytest.raises(headstart.HeadstartError, match=r"last.ckpt is not a checkpoint headstart can read safely "
                                                       r"\(Unsupported global: GLOBAL print was not an allowed global"):
        headstart.fit(resume=run.path)
    assert "UNPICKLED" not in capfd.readouterr().out and last.read_bytes() == tampered  # nothing ran or changed
    last.write_bytes(tampered[: len(tampered) // 2])
    with pytest.raises(headstart.HeadstartError, match="last.ckpt is not a checkpoint headstart can read safely"):
        headstart.fit(resume=run.path)
    torch.save({"head.0.weight": torch.zeros(2)}, last)  # a model's weights saved over it
    with pytest.raises(headstart.HeadstartError, match=r"last.ckpt is not a checkpoint headstart can read safely "
                                                       r"\(a PyTorch file, but not a training checkpoint"):
        headstart.fit(resume=run.path)
    last.unlink()  # lost: the run would start again from epoch 0 and write over its history
    history = (run.path / "metrics.csv").read_text()
    with pytest.raises(headstart.HeadstartError, match=r"metrics.csv lists 1 trained epoch, but the last "
                                                       r"checkpoint .*last.ckpt is missing"):
        headstart.fit(resume=run.path)
    assert (run.path / "metrics.csv").read_text() == history


def test_a_run_moved_before_resuming_keeps_its_best_epoch(tiny_config, monkeypatch):
    import headstart
    from headstart.train.epoch_log import EpochLog

    # at this rate validation loss is best at epoch 4 and worse at 5 and 6
    tiny_config["train"].update(max_epochs=7, lr=0.1, patience=10)
    whole = headstart.fit({**tiny_config, "name": "whole"})
    assert whole.results["best_epoch"] == 4

    start = EpochLog.on_train_epoch_start

    def crash_at_6(self, trainer, module):
        if trainer.current_epoch == 6:
            raise RuntimeError("the machine went down")
        start(self, trainer, module)

    monkeypatch.setattr(EpochLog, "on_train_epoch_start", crash_at_6)
    with pytest.raises(RuntimeError, match="went down"):
        headstart.fit({**tiny_config, "name": "broken"})
    monkeypatch.setattr(EpochLog, "on_train_epoch_start", start)
    broken = whole.path.with_name("broken")
    moved = broken.rename(broken.with_name("moved"))
    resumed = headstart.fit(resume=moved)
    assert resumed.results["best_epoch"] == 4 and resumed.test_metrics == whole.test_metrics


def test_a_run_stopped_early_and_interrupted_in_its_test_does_not_train_on(tiny_config, monkeypatch):
    import headstart
    from headstart.train.module import FineTuner

    # as in the early-stopping test: best at epoch 4, stopped after epoch 6
    tiny_config["train"].update(max_epochs=10, lr=0.1, patience=2)
    whole = headstart.fit({**tiny_config, "name": "whole"})
    assert whole.results["epochs_trained"] == 7

    def crash(self):
        raise RuntimeError("the machine went down")

    monkeypatch.setattr(FineTuner, "on_test_epoch_end", crash)
    with pytest.raises(RuntimeError, match="went down"):
        headstart.fit({**tiny_config, "name": "broken"})
    monkeypatch.undo()
    resumed = headstart.fit(resume=whole.path.with_name("broken"))
    assert resumed.results["epochs_trained"] == 7 and len(resumed.history) == 7
    assert resumed.results["best_epoch"] == 4 and resumed.test_metrics == whole.test_metrics


def test_a_relative_data_source_is_saved_absolute(tiny_config, digits_folder, tmp_path, monkeypatch):
    import headstart

    monkeypatch.chdir(digits_folder.parent)
    relative = {**tiny_config, "data": {**tiny_config["data"], "source": digits_folder.name}}
    run = headstart.fit({**relative, "train": {**relative["train"], "max_epochs": 1}})
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["data"]["source"] == str(digits_folder)
    monkeypatch.chdir(tmp_path)  # another directory: the run still finds its data
    accuracy = run.evaluate(output=tmp_path / "eval")["overall"]["accuracy"]
    assert accuracy == pytest.approx(run.test_metrics["test_acc"], abs=1e-6)

    # a run saved with a relative source (before sources were saved absolute) resumes from where it was started
    monkeypatch.chdir(digits_folder.parent)
    old = run.path.with_name("old")
    (old / "checkpoints").mkdir(parents=True)
    (old / "config.yaml").write_text(yaml.safe_dump({**saved, "name": "old", "data": {**saved["data"], "source":
                                                                                           digits_folder.name}}))
    resumed = headstart.fit({**relative, "name": "old", "train": {**relative["train"], "max_epochs": 1}}, resume=old)
    assert resumed.results["epochs_trained"] == 1


def _interrupted(tiny_config, epochs: int = 2):
    """A run of `epochs` epochs, left as a kill after its last epoch leaves it (no results.json)."""
    import headstart

    tiny_config["train"]["max_epochs"] = epochs
    run = headstart.fit(tiny_config)
    (run.path / "results.json").unlink()
    return run


def test_resume_refuses_a_config_yaml_edited_since_the_run_started(tiny_config):
    import headstart

    run = _interrupted(tiny_config)
    saved = run.path / "config.yaml"
    text = saved.read_text()
    saved.write_text(text.replace("lr: 0.01", "lr: 0.5").replace("- 16", "- 32"))  # would train on, or not load
    with pytest.raises(headstart.HeadstartError, match=r"its config.yaml was changed since the run started \(head"
                                                       r"\.hidden: \[32\] there, \[16\] in training; train\.lr: 0\.5 "
                                                       r"there, 0\.01 in training\)"):
        headstart.fit(resume=run.path)
    saved.write_text(text.replace("bootstrap: 1000", "bootstrap: 200"))  # the evaluation after training may change
    assert headstart.fit(resume=run.path).results["epochs_trained"] == 2


def test_a_run_killed_before_its_first_checkpoint_starts_again(tiny_config):
    import headstart

    run = _interrupted(tiny_config, epochs=1)
    for checkpoint in (run.path / "checkpoints").glob("*.ckpt"):  # the row of epoch 0 written, its checkpoints not
        checkpoint.unlink()
    resumed = headstart.fit(resume=run.path)
    assert resumed.history["epoch"].tolist() == [0]


def test_a_resume_removes_the_files_a_kill_left_half_written(tiny_config):
    import headstart

    run = _interrupted(tiny_config)
    leftovers = [run.path / ".model-a1b2" / "config.json", run.path / ".model-c3d4-old" / "model.safetensors",
                 run.path / ".results.json.4242.1.tmp", run.path / "checkpoints" / ".last.ckpt.4242.1.tmp"]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half written")
    headstart.fit(resume=run.path)
    assert [p.name for p in run.path.glob(".*")] == [".lock"]
    assert not list((run.path / "checkpoints").glob(".*"))


def test_an_overwrite_killed_before_its_first_epoch_names_the_run_it_was_replacing(tiny_config):
    import shutil

    import headstart

    run = headstart.fit(tiny_config)
    kept = run.path.with_name(".tiny.replaced")
    run.path.rename(kept)  # what `fit --overwrite` does first; a kill -9 before the first epoch ends stops it there
    (run.path / "checkpoints").mkdir(parents=True)
    shutil.copy(kept / "config.yaml", run.path)
    message = f"delete {run.path} and rename .tiny.replaced back to tiny"
    for attempt in (lambda: run.evaluate(progress=False), lambda: run.results):
        with pytest.raises(headstart.HeadstartError, match=re.escape(message)):
            attempt()
    shutil.rmtree(run.path)
    kept.rename(run.path)
    assert run.results["test"]


def test_a_resume_refused_for_changed_data_keeps_the_run_s_record_of_its_data(tiny_config, digits_folder, tmp_path):
    import shutil

    import headstart

    data = Path(shutil.copytree(digits_folder, tmp_path / "digits"))
    tiny_config["data"]["source"] = str(data)
    run = _interrupted(tiny_config)
    records = {name: (run.path / name).read_bytes() for name in ("data_problems.csv", "leakage.csv", "split.csv")}
    next(data.rglob("*.png")).write_bytes(b"not an image any more")
    with pytest.raises(headstart.HeadstartError, match="no longer gives the split saved in"):
        headstart.fit(resume=run.path)
    assert {name: (run.path / name).read_bytes() for name in records} == records


def test_a_resume_refuses_a_table_whose_rows_hold_other_inputs_now(tiny_config, digits_folder, tmp_path):
    import headstart

    paths = sorted(str(p) for p in digits_folder.rglob("*.png"))
    table = tmp_path / "digits.csv"
    pd.DataFrame({"image": paths, "label": [Path(p).parent.name for p in paths]}).to_csv(table, index=False)
    tiny_config["data"].update(source=str(table), image_column="image")
    run = _interrupted(tiny_config)
    paths[0], paths[1] = paths[1], paths[0]  # two images of one class swapped: the same labels, row by row
    pd.DataFrame({"image": paths, "label": [Path(p).parent.name for p in paths]}).to_csv(table, index=False)
    with pytest.raises(headstart.HeadstartError, match="no longer gives the split saved in"):
        headstart.fit(resume=run.path)


def test_a_run_stopped_before_it_wrote_its_history_says_so(tiny_config):
    import headstart

    run = _interrupted(tiny_config, epochs=1)
    (run.path / "metrics.csv").unlink()
    with pytest.raises(headstart.HeadstartError, match="has no metrics.csv: no epoch has finished"):
        run.history

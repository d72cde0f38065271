"""DDP with 2 processes on CPU (gloo) trains to the accuracy of 1 process, and the run folder is written once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_reach_the_accuracy_of_one(tiny_config, tmp_path):
    # gradual unfreezing: frozen parameters get no gradient, which DDP must expect
    tiny_config.update(strategy={"name": "gradual", "unfreeze": [1, 2, 3]})
    tiny_config["train"].update(max_epochs=8, lr=0.02, accelerator="cpu")
    results = {}
    for devices in (1, 2):
        config = tmp_path / f"ddp{devices}.yaml"
        train = {**tiny_config["train"], "devices": devices, "strategy": "auto"}
        config.write_text(yaml.safe_dump({**tiny_config, "name": f"ddp{devices}", "train": train}))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("LOCAL_RANK", None)
        done = subprocess.run([sys.executable, "-m", "headstart.cli", "fit", str(config)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        run_dir = Path(tiny_config["output"]) / f"ddp{devices}"
        results[devices] = json.loads((run_dir / "results.json").read_text())["test"]["test_acc"]
        lines = (run_dir / "metrics.csv").read_text().splitlines()
        assert len(lines) == 1 + 8  # one row per epoch, written by the first process only
        # each epoch scores the validation split exactly: an odd number of examples, none counted twice (two
        # shards of an odd split are evened out with a repeat)
        n_val = int((pd.read_csv(run_dir / "split.csv")["split"] == "val").sum())
        assert n_val % 2 == 1
        for accuracy in pd.read_csv(run_dir / "metrics.csv")["val_acc"]:
            assert accuracy * n_val == pytest.approx(round(accuracy * n_val), abs=1e-3)
    assert results[1] > 0.85 and results[2] > 0.85
    assert abs(results[1] - results[2]) <= 0.08


def test_every_process_of_a_python_script_gets_the_finished_run(tiny_config, tmp_path):
    """Lightning runs the user's script once per process: `run.test_metrics` must work in each, not only the first
    (the second used to get the run back before the first had tested it)."""
    tiny_config["train"].update(max_epochs=2, accelerator="cpu", devices=2)
    script = tmp_path / "train.py"
    script.write_text("import os, sys\nimport headstart\n"
                      f"run = headstart.fit({tiny_config!r})\n"
                      "print('process', os.environ.get('LOCAL_RANK', '0'), run.test_metrics['test_acc'], "
                      "headstart.is_worker(), flush=True)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LOCAL_RANK", None)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = sorted(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("process "))
    assert [p[0] for p in printed] == ["0", "1"] and printed[0][1] == printed[1][1], done.stdout + done.stderr[-3000:]
    assert [p[2] for p in printed] == ["False", "True"]  # what a script tests to evaluate or push once


def test_each_launcher_s_other_processes_are_workers(monkeypatch):
    from headstart.config import TrainConfig
    from headstart.train.processes import is_worker

    for variable in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(variable, raising=False)
    two, one = TrainConfig(devices=2), TrainConfig(devices=1)
    slurm = {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train"}
    for env, train, worker in [
            ({}, two, False), ({"LOCAL_RANK": "1"}, one, True), ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, two, True),
            ({"RANK": "0", "LOCAL_RANK": "0"}, two, False), ({"RANK": "3", "LOCAL_RANK": "1"}, two, True),  # torchrun
            ({**slurm, "SLURM_PROCID": "0"}, two, False), ({**slurm, "SLURM_PROCID": "1"}, two, True),  # srun
            ({**slurm, "SLURM_PROCID": "1"}, TrainConfig(devices=[0, 1]), True),
            ({**slurm, "SLURM_PROCID": "1"}, TrainConfig(num_nodes=2), True),
            ({**slurm, "SLURM_PROCID": "1"}, one, False),  # tasks of a sweep, each training a run of its own
            ({**slurm, "SLURM_PROCID": "1", "SLURM_JOB_NAME": "interactive"}, two, False),  # Lightning launches
            ({**slurm, "SLURM_PROCID": "0", "LOCAL_RANK": "1"}, two, True)]:  # a process Lightning launched
        with monkeypatch.context() as m:
            for name, value in env.items():
                m.setenv(name, value)
            assert is_worker(train) == worker, (env, train.devices, train.num_nodes)


def test_on_several_machines_the_others_stop_with_the_first(tiny_config, tmp_path):
    """Two machines played on this one, started as the README says (NODE_RANK, WORLD_SIZE, MASTER_ADDR / PORT). The
    second starts first, while the run folder still holds the run that --overwrite replaces (it used to compare its
    split with that run's split.csv and stop); the first stops after training (it diverged), and the second must
    stop too, not wait for results.json for ever."""
    import socket

    import headstart

    headstart.fit({**tiny_config, "train": {**tiny_config["train"], "max_epochs": 1}})  # the run to replace
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tiny_config.update(strategy={"name": "full"}, data={**tiny_config["data"], "split": {"seed": 3}})
    tiny_config["train"].update(max_epochs=2, lr=1e8, accelerator="cpu", num_nodes=2)
    config = tmp_path / "nodes.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    for variable in ("LOCAL_RANK", "RANK", "SLURM_PROCID"):
        env.pop(variable, None)
    command = [sys.executable, "-m", "headstart.cli", "fit", str(config), "--overwrite"]
    logs = {rank: tmp_path / f"node{rank}.log" for rank in (0, 1)}
    with logs[1].open("w") as log:
        second = subprocess.Popen(command, cwd=ROOT, env={**env, "NODE_RANK": "1"}, stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while "Initializing distributed" not in logs[1].read_text() and second.poll() is None:  # it waits for the first
        assert time.monotonic() < deadline, logs[1].read_text()
        time.sleep(0.5)
    with logs[0].open("w") as log:
        first = subprocess.Popen(command, cwd=ROOT, env={**env, "NODE_RANK": "0"}, stdout=log, stderr=log)
    try:
        codes = [first.wait(timeout=300), second.wait(timeout=300)]
    finally:
        first.kill(), second.kill()
    said = {rank: " ".join(log.read_text().split()) for rank, log in logs.items()}
    assert codes == [2, 2], said
    assert "The training diverged" in said[0]
    assert "The first process of the run" in said[1] and "stopped before the run finished" in said[1], said[1]

"""DDP with 2 processes on CPU (gloo) trains to the accuracy of 1 process, and the run folder is written once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
                      "print('process', os.environ.get('LOCAL_RANK', '0'), run.test_metrics['test_acc'], flush=True)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LOCAL_RANK", None)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = sorted(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("process "))
    assert [p[0] for p in printed] == ["0", "1"] and printed[0][1] == printed[1][1], done.stdout + done.stderr[-3000:]

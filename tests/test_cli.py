"""The command line as a user meets it: predictions, JSON output, and one-paragraph errors without tracebacks."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.errors import HeadstartError


ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "headstart.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_predict_images_and_folders_as_json(tiny_run, digits_folder):
    image = next((digits_folder / "digit1").iterdir())
    result = cli("predict", str(tiny_run.model_dir), str(image), str(digits_folder / "digit2"), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 1 + len(list((digits_folder / "digit2").iterdir()))
    assert lines[0]["input"] == str(image)
    for line in lines:
        assert set(line["probabilities"]) == {"digit0", "digit1", "digit2"}
        assert sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert line["label"] == max(line["probabilities"], key=line["probabilities"].get)
    # the model learned something: most digit2 images are called digit2
    assert sum(line["label"] == "digit2" for line in lines[1:]) > 0.6 * (len(lines) - 1)
    # progress goes to stderr, so the JSON lines stay clean
    assert "predicting:" in result.stderr and f"0/{len(lines)}" in result.stderr


def test_a_loaded_model_runs_images_in_batches_of_8_unless_told(tiny_run, digits_folder, forward_sizes):
    import headstart

    model = headstart.load(tiny_run.model_dir)
    images = [str(p) for p in sorted((digits_folder / "digit1").iterdir())[:20]]
    assert model.batch_size == 8
    by_8, by_20 = model.probabilities(images), model.probabilities(images, batch_size=20)
    assert forward_sizes == [8, 8, 4, 20]
    assert by_8.shape == (20, 3) and torch.allclose(by_8, by_20, atol=1e-6)
    with pytest.raises(HeadstartError, match="batch_size must be a whole number of 1 or more, not 0"):
        model.probabilities(images, batch_size=0)
    pil = Image.open(images[0])
    assert model.probabilities([pil, np.asarray(pil)]).allclose(by_8[[0, 0]], atol=1e-6)
    rgb = np.asarray(pil.convert("RGB"))
    assert model.probabilities(np.stack([rgb] * 2)).allclose(by_8[[0, 0]], atol=1e-6)  # (N, H, W, C): a batch
    for one in (pil, np.asarray(pil), rgb):  # not read as rows of pixels
        with pytest.raises(HeadstartError, match=r"Give a list of images, e.g. predict\(\[image\]\), not a single"):
            model.predict(one)


def test_predict_reads_a_table_of_image_paths(tiny_run, digits_folder, tmp_path):
    images = sorted((digits_folder / "digit2").iterdir())[:3]
    (tmp_path / "batch.csv").write_text("path,site\n" + "".join(f"{p},{i}\n" for i, p in enumerate(images)))
    result = cli("predict", str(tiny_run.model_dir), str(tmp_path / "batch.csv"), "--json")
    assert result.returncode == 0, result.stderr
    import headstart

    expected = headstart.load(tiny_run.model_dir).predict([str(p) for p in images])
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"input": str(p), **row} for p, row in zip(images, expected)]
    (tmp_path / "bad.csv").write_text(f"path\n{images[0]}\n{tmp_path / 'gone.png'}\n")
    result = cli("predict", str(tiny_run.model_dir), str(tmp_path / "bad.csv"))
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "names image files that do not exist, at " in message, result.stderr
    assert f"bad.csv row 3 ({tmp_path / 'gone.png'})" in message


def test_predict_shows_image_paths_whole(tiny_run, digits_folder, tmp_path):
    image = tmp_path / "a_rather_long_folder_name_for_images" / "sub" / "first_image.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(next((digits_folder / "digit0").iterdir()).read_bytes())
    relative = str(image.relative_to(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "headstart.cli", "predict", str(tiny_run.model_dir), relative],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and len(relative) > 40 and relative in result.stdout, result.stdout


def test_predict_prints_a_table_and_accepts_a_run_folder(tiny_run, digits_folder):
    import headstart

    image = next((digits_folder / "digit0").iterdir())
    result = cli("predict", str(tiny_run.path), str(image))
    assert result.returncode == 0, result.stderr
    expected = headstart.load(tiny_run.model_dir).predict([str(image)])[0]
    ranked = sorted(expected["probabilities"].items(), key=lambda kv: -kv[1])
    row = next(line for line in result.stdout.splitlines() if image.name in line)
    assert [cell.strip() for cell in row.split("│")[2:4]] == [
        expected["label"], "  ".join(f"{label} {p:.3f}" for label, p in ranked)]


def test_predict_shows_brackets_in_names_as_written(tiny_run, digits_folder, tmp_path):
    image = tmp_path / "scan[draft].png"
    image.write_bytes(next((digits_folder / "digit0").iterdir()).read_bytes())
    result = cli("predict", str(tiny_run.path), str(image))
    assert result.returncode == 0, result.stderr
    assert "scan[draft].png" in result.stdout


def test_predict_explains_a_corrupt_image(tiny_run, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    result = cli("predict", str(tiny_run.model_dir), str(broken))
    assert result.returncode == 2
    assert "broken.png: not an image file that can be decoded" in result.stderr and "Traceback" not in result.stderr
    for i in range(7):  # a folder with several: how many, and the first five, not only the first
        (tmp_path / "scans" / "x").mkdir(parents=True, exist_ok=True)
        (tmp_path / "scans" / "x" / f"bad{i}.png").write_bytes(b"not an image either")
    result = cli("predict", str(tiny_run.model_dir), str(tmp_path / "scans"))
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and "7 of 7 images cannot be read" in said and "and 2 more" in said, said


def test_a_loaded_model_names_an_image_it_cannot_read(tiny_run, digits_folder, tmp_path):
    import headstart

    good = next((digits_folder / "digit0").iterdir())
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:60])
    with pytest.raises(HeadstartError, match=f"{cut}: not a readable image .*Give PNG"):
        headstart.load(tiny_run.model_dir).predict([str(good), str(cut)])
    whole, cut_bytes = good.read_bytes(), cut.read_bytes()  # its header is whole: it fails decoding, numbered
    with pytest.raises(HeadstartError, match=r"^Input 10 \(bytes\) is not a readable image \(OSError: .*Give PNG"):
        headstart.load(tiny_run.model_dir).predict([whole] * 10 + [cut_bytes], batch_size=4)
    with pytest.raises(HeadstartError, match=r"^'' \(an empty path\): no such image file\. Check the path"):
        headstart.load(tiny_run.model_dir).predict([""])
    with pytest.raises(HeadstartError, match=rf"^gone.png: no such image file\. Check the path: a relative one is "
                                             rf"read from the current folder, {re.escape(os.getcwd())}\.$"):
        headstart.load(tiny_run.model_dir).predict(["gone.png"])
    # in-memory inputs are numbered, and refused before any is decoded
    model = headstart.load(tiny_run.model_dir)
    for bad, why in [(b"not an image", "Input 2 is not an image: its bytes are no PNG, JPEG, BMP, TIFF, WebP or GIF file.$"),
                     (np.zeros((3, 8, 8)), r"Input 2 is not an image: .* not of shape \(3, 8, 8\)"),
                     ([[0, 1]], "Input 2 is not an image: a list is not an image input")]:
        with pytest.raises(HeadstartError, match=why):
            model.predict([str(good), Image.open(good), bad])


def test_a_model_folder_with_nan_weights_or_a_damaged_run_is_named(tiny_run, tmp_path):
    import headstart
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model_dir = Path(shutil.copytree(tiny_run.model_dir, tmp_path / "run" / "model"))
    weights = load_file(model_dir / "model.safetensors")
    first = sorted(weights)[0]
    weights[first] = torch.full_like(weights[first], float("nan"))
    with safe_open(str(model_dir / "model.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    save_file(weights, model_dir / "model.safetensors", metadata=metadata)
    with pytest.raises(HeadstartError, match=rf"model.safetensors holds NaN or infinite values \({first}\): the "
                                             "training that wrote it diverged"):
        headstart.load(model_dir)
    with pytest.raises(HeadstartError, match=r"config.json is a file: give the model folder that holds it"):
        headstart.load(model_dir / "config.json")
    (model_dir / "config.json").unlink()
    with pytest.raises(HeadstartError, match=r"\S*run/model is not a headstart model folder: it has no config.json"):
        headstart.load(tmp_path / "run")  # the run's model/ is named, not the run folder


def test_predict_names_a_table_without_rows(tmp_path):
    from headstart.backbones.registry import build
    from headstart.config import DataConfig
    from headstart.model.classifier import Classifier
    from headstart.model.folder import save_model

    model = Classifier(build("minilm", DataConfig(source="unused", max_length=32)), ["a", "b"], [8], 0.3)
    save_model(model, tmp_path / "model", {"hidden": [8], "dropout": 0.3})
    table = tmp_path / "empty.csv"
    table.write_text("text\n")
    result = cli("predict", str(tmp_path / "model"), str(table))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"No inputs found in {table}" in " ".join(result.stderr.split())
    long = "The central bank raised interest rates for the third time this year"
    result = cli("predict", str(tmp_path / "model"), long, "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["input"] == long  # whole, so it can be matched
    result = cli("predict", str(tmp_path / "model"), long)
    assert result.returncode == 0 and long[:37] + "..." in result.stdout and long not in result.stdout


def test_predict_explains_a_folder_that_is_not_a_model(tmp_path):
    result = cli("predict", str(tmp_path), "some text")
    assert result.returncode == 2
    assert "not a headstart model folder" in result.stderr and "Traceback" not in result.stderr


def test_config_typo_gives_a_paragraph_not_a_traceback(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("name: x\ndata: {source: bbc}\ntrain: {max_epoch: 3}\n")
    result = cli("fit", str(config))
    assert result.returncode == 2
    assert "train.max_epoch: unknown field. Did you mean 'train.max_epochs'?" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_missing_column_names_the_column(tmp_path):
    table = tmp_path / "news.csv"
    table.write_text("body,topic\nhello,a\n")
    config = tmp_path / "run.yaml"
    config.write_text(f"name: x\ndata: {{source: {table}}}\noutput: {tmp_path / 'runs'}\n")
    result = cli("fit", str(config))
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "Column 'text' (data.text_column) is not in" in message and "body, topic" in message
    assert "Traceback" not in result.stderr


def test_help_lists_the_commands():
    result = cli("--help")
    assert result.returncode == 0 and "fit" in result.stdout and "predict" in result.stdout


def test_serve_refuses_a_port_in_use_before_loading_anything(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = cli("serve", "--model", "nothing@production", "--registry", str(tmp_path), "--port", str(port))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr and "give another --port" in result.stderr
    result = cli("serve", "--model", "nothing@production", "--port", "99999")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "'--port'" in result.stderr
    assert "less than or equal to 65535" in result.stderr


def test_evaluate_refuses_a_file_as_its_output_folder_before_the_work(tiny_run, tmp_path):
    taken = tmp_path / "notes.yaml"
    taken.write_text("kept: true\n")
    result = cli("evaluate", str(tiny_run.path), "--out", str(taken))
    assert result.returncode == 2 and "is a file. Give a folder" in result.stderr
    assert "evaluate:" not in result.stdout + result.stderr  # no progress: refused before predicting anything
    assert taken.read_text() == "kept: true\n"
    result = cli("evaluate", str(tiny_run.model_dir))
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and f"it is a run's model folder; give the run, {tiny_run.path})" in message


def test_an_error_prints_brackets_as_written(tmp_path):
    folder = tmp_path / "data [v2]" / "[redacted]"
    result = cli("predict", str(folder), "x")
    assert result.returncode == 2 and "[redacted]" in " ".join(result.stderr.split())  # not read as markup


@pytest.mark.parametrize("command, target, said", [
    (["evaluate"], "headstart.evaluate.evaluate_run", "The earlier report.html and metrics.json, if any, are as they"),
    (["compress", "--no-latency"], "headstart.compress.compress", "The model's earlier variants, if any, are as they"),
])
def test_ctrl_c_in_evaluate_or_compress_says_what_it_left(tiny_run, monkeypatch, command, target, said):
    from typer.testing import CliRunner

    from headstart.cli import app

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    result = CliRunner().invoke(app, [command[0], str(tiny_run.path), *command[1:]])
    assert result.exit_code == 130 and f"Interrupted. {said}" in " ".join(result.output.split())

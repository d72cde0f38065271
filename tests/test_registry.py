"""The model registry: immutable versions, aliases, promote and rollback, concurrent writers, interrupted writes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from headstart.errors import HeadstartError
from headstart.registry import Registry
from tests.test_cli import ROOT, cli


def test_push_records_an_immutable_version(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    version = reg.push(tiny_run.path, "digits")
    assert version.spec == "digits@1" and reg.names() == ["digits"]
    meta = version.meta
    assert meta["labels"] == ["digit0", "digit1", "digit2"] and meta["modality"] == "image"
    assert meta["backbone"]["factory"] == "tests.tiny:tiny_cnn" and meta["preprocessing"]["image_size"] == 16
    assert meta["parent"] is None and meta["source"] == str(tiny_run.path.resolve()) and meta["same_model_as"] is None
    assert meta["metrics"]["test.test_acc"] == pytest.approx(tiny_run.test_metrics["test_acc"])
    assert sum(meta["data"]["examples"].values()) == len(tiny_run.split)
    assert (version.model_dir / "model.safetensors").is_file() and (version.path / "run" / "config.yaml").is_file()
    assert "model/model.safetensors" in meta["files"]
    weights = version.model_dir / "model.safetensors"
    assert not os.access(weights, os.W_OK) or os.geteuid() == 0  # read-only (root may write anyway)
    assert weights.stat().st_mode & 0o222 == 0
    version.verify()
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(HeadstartError, match="differs from the file registered in digits@1"):
        version.verify()


@pytest.mark.parametrize("change", [lambda reg: reg.promote("nothing", 1), lambda reg: reg.rollback("nothing")])
def test_promote_and_rollback_name_an_unknown_model_and_create_nothing(tiny_run, tmp_path, change):
    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    with pytest.raises(HeadstartError, match="No model named 'nothing' in the registry .* \\(models: digits\\)"):
        change(reg)
    assert sorted(p.name for p in reg.root.iterdir()) == ["digits"]


def test_compress_refuses_to_write_into_a_version(tiny_run, tmp_path):
    from headstart.compress import compress

    version = Registry(tmp_path / "reg").push(tiny_run.path, "digits")
    with pytest.raises(HeadstartError, match="is a version in a model registry, and a registered version never"):
        compress(version.model_dir, method="bf16", latency=False, progress=False)
    assert not (version.model_dir / "variants").exists()
    version.verify()


def test_a_file_added_to_a_version_is_refused(tiny_run, tmp_path):
    version = Registry(tmp_path / "reg").push(tiny_run.path, "digits")
    variant = version.model_dir / "variants" / "int8-by-hand"
    variant.mkdir(parents=True)
    (variant / "model.onnx").write_bytes(b"not registered")
    with pytest.raises(HeadstartError, match="was added to digits@1 after it was registered"):
        version.verify()


def test_data_fingerprint_follows_the_split_not_its_row_order(tiny_run, tmp_path):
    from headstart.registry.fingerprint import data_fingerprint

    split = tiny_run.split
    shuffled = tmp_path / "shuffled.csv"
    split.sample(frac=1, random_state=0).to_csv(shuffled, index=False)
    assert data_fingerprint(shuffled) == data_fingerprint(tiny_run.path / "split.csv")
    split.loc[0, "split"] = "test" if split.loc[0, "split"] != "test" else "train"
    moved = tmp_path / "moved.csv"
    split.to_csv(moved, index=False)
    assert data_fingerprint(moved)["sha256"] != data_fingerprint(tiny_run.path / "split.csv")["sha256"]


def test_promote_rollback_and_resolve(tiny_run, tmp_path):
    reg = Registry(tmp_path)
    for _ in range(3):
        reg.push(tiny_run.path, "digits")
    with pytest.raises(HeadstartError, match="no version marked 'production'.*registry promote digits 3"):
        reg.resolve("digits")
    reg.promote("digits", 1)
    assert reg.push(tiny_run.path, "digits").meta["parent"] == 1  # the production version at push time
    reg.promote("digits", 2)
    reg.promote("digits", 3, "candidate")
    assert reg.resolve("digits@candidate").number == 3 and reg.resolve("digits@latest").number == 4
    reg.promote("digits", 3)  # the candidate becomes production: the candidate alias is cleared
    assert reg.resolve("digits").number == 3 and "candidate" not in reg.aliases("digits")["aliases"]
    with pytest.raises(HeadstartError, match="digits version 3 is the production version: a candidate is compared"):
        reg.promote("digits", 3, "candidate")
    reg.promote("digits", 2, "candidate")
    assert reg.rollback("digits").number == 2  # onto the candidate: the candidate alias is cleared
    assert "candidate" not in reg.aliases("digits")["aliases"]
    assert reg.rollback("digits").number == 1
    with pytest.raises(HeadstartError, match="no earlier production version"):
        reg.rollback("digits")
    assert [e["to"] for e in reg.aliases("digits")["events"]] == [1, 2, 3, 3, 2, 2, 1]
    with pytest.raises(HeadstartError, match="digits has no version 9 .*versions: 1, 2, 3, 4"):
        reg.promote("digits", 9)
    with pytest.raises(HeadstartError, match="aliases are production, candidate"):
        reg.promote("digits", 1, "staging")
    with pytest.raises(HeadstartError, match="No model named 'nope'"):
        reg.resolve("nope@1")
    with pytest.raises(HeadstartError, match="not a valid model name"):
        reg.resolve("../etc")


def test_a_damaged_version_does_not_block_later_pushes(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    first = reg.push(tiny_run.path, "digits")
    meta = first.path / "version.json"
    meta.chmod(0o644)
    meta.write_text("{")
    second = reg.push(tiny_run.path, "digits")
    assert second.number == 2 and second.meta["same_model_as"] is None  # version 1 cannot be read
    assert reg.push(tiny_run.path, "digits").meta["same_model_as"] == 2


def test_push_refuses_pickles_and_unfinished_runs(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "model" / "extra.pt").write_bytes(b"\x80\x04pickle")
    reg = Registry(tmp_path / "reg")
    with pytest.raises(HeadstartError, match="extra.pt.*never pickles"):
        reg.push(run, "digits")
    assert not reg.root.exists()  # refused before the first write
    (run / "model" / "extra.pt").unlink()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "evil.pkl").write_bytes(b"\x80\x04pickle")
    (run / "model" / "extra").symlink_to(tmp_path / "elsewhere")  # copied as a folder, though not listed as one
    with pytest.raises(HeadstartError, match=f"{run / 'model'} holds files .*: extra/evil.pkl.*never pickles"):
        reg.push(run, "digits")
    assert reg.numbers("digits") == [] and not list((tmp_path / "reg" / "digits").glob(".staging-*"))
    (run / "model" / "extra").unlink()
    with pytest.raises(HeadstartError, match=f"{run / 'model'} is a run's model folder: push its run folder, {run}"):
        reg.push(run / "model", "digits")
    with pytest.raises(HeadstartError, match=f"{tmp_path / 'nothere'} does not exist: give a run folder"):
        reg.push(tmp_path / "nothere", "digits")
    (run / "results.json").unlink()
    with pytest.raises(HeadstartError, match="not a finished run folder: results.json is missing"):
        reg.push(run, "digits")
    assert reg.numbers("digits") == [] and not list((tmp_path / "reg" / "digits").glob(".staging-*"))


PUSHER = """
import sys
from headstart.registry import Registry
reg = Registry(sys.argv[1])
for _ in range(int(sys.argv[3])):
    reg.push(sys.argv[2], "digits")
    reg.promote("digits", reg.numbers("digits")[-1])
"""


def _pushers(registry: Path, run: Path, count: int, each: int) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [subprocess.Popen([sys.executable, "-c", PUSHER, str(registry), str(run), str(each)], env=env)
            for _ in range(count)]


def _check_consistent(reg: Registry) -> None:
    """Every version is complete and unmodified; the aliases point at existing versions."""
    numbers = reg.numbers("digits")
    assert numbers == list(range(1, len(numbers) + 1))
    for version in reg.versions("digits"):
        version.verify()
    state = reg.aliases("digits")
    for number in [*state["aliases"].values(), *state["history"]["production"]]:
        assert number in numbers


def test_two_concurrent_writers(tiny_run, tmp_path):
    procs = _pushers(tmp_path, tiny_run.path, 2, 3)
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    reg = Registry(tmp_path)
    _check_consistent(reg)
    state = reg.aliases("digits")
    assert reg.numbers("digits") == [1, 2, 3, 4, 5, 6]
    assert len(state["events"]) == 6 and len(state["history"]["production"]) == 5


# a push killed (SIGKILL) at a chosen point: copying the run's files, or renaming the finished version into place
KILLED_PUSHER = """
import os, shutil, signal, sys
from headstart.registry import Registry
module, name = {"copy": (shutil, "copy2"), "rename": (os, "rename")}[sys.argv[3]]
original, calls = getattr(module, name), []
def dying(*args, **kwargs):
    calls.append(args)
    if name == "rename" or len(calls) == 2:  # the second run file, or the rename itself
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(module, name, dying)
Registry(sys.argv[1]).push(sys.argv[2], "digits")
"""


@pytest.mark.parametrize("point", ["copy", "rename"])
def test_a_writer_killed_mid_write_leaves_the_registry_intact(tiny_run, tmp_path, point):
    reg = Registry(tmp_path)
    reg.push(tiny_run.path, "digits")
    killed = subprocess.run([sys.executable, "-c", KILLED_PUSHER, str(tmp_path), str(tiny_run.path), point],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert list((tmp_path / "digits").glob(".staging-*"))  # it died with a version half written
    (tmp_path / "digits" / ".aliases.json.4242.1.tmp").write_text("{")  # as a promote killed mid-write leaves
    _check_consistent(reg)
    assert reg.numbers("digits") == [1]
    version = reg.push(tiny_run.path, "digits")  # the next writer gets the lock and cleans up
    assert not list((tmp_path / "digits").glob(".staging-*")) and not list((tmp_path / "digits").glob(".*.tmp"))
    assert version.number == 2 and reg.numbers("digits") == [1, 2]


def test_registry_cli(tiny_run, tmp_path):
    reg = str(tmp_path / "reg")
    Registry(reg).push(tiny_run.path, "digits")
    result = cli("registry", "push", str(tiny_run.path), "--name", "digits", "--registry", reg, "--parent", "1")
    assert result.returncode == 0 and "Registered digits@2" in result.stdout, result.stderr
    assert "identical to digits@1's" in result.stdout
    Registry(reg).promote("digits", 1)
    assert cli("registry", "promote", "digits", "2", "--to", "candidate", "--registry", reg).returncode == 0
    promoted = cli("registry", "promote", "digits", "candidate", "--registry", reg)  # an alias names the version
    assert promoted.returncode == 0 and "digits@2 is now production" in promoted.stdout, promoted.stderr
    listing = cli("registry", "list", "--registry", reg).stdout
    assert "digits" in listing and "2" in listing
    shown = json.loads(cli("registry", "show", "digits@production", "--registry", reg).stdout)
    assert shown["number"] == 2 and shown["parent"] == 1 and "files" not in shown
    table = cli("registry", "show", "digits", "--registry", reg).stdout
    assert "production" in table and "digits" in table
    diff = cli("registry", "diff", "digits", "1", "production", "--registry", reg).stdout
    assert "test.test_acc" in diff and "+0.0000" in diff and "different examples" not in diff
    rollback = cli("registry", "rollback", "digits", "--registry", reg)
    assert rollback.returncode == 0 and "digits@production is now version 1" in rollback.stdout
    again = cli("registry", "rollback", "digits", "--registry", reg)
    assert again.returncode == 2 and "no earlier production version" in again.stderr
    assert "Traceback" not in again.stderr


def test_a_file_given_as_the_registry_is_refused(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text("{}")
    listing = cli("registry", "list", "--registry", str(path))
    assert listing.returncode == 2 and "is a file. A registry is a folder" in listing.stderr
    assert "Traceback" not in listing.stderr and path.read_text() == "{}"


def _copy_run(tiny_run, target: Path) -> Path:
    import shutil

    shutil.copytree(tiny_run.path, target, ignore=shutil.ignore_patterns("checkpoints"))
    return target


def _edit_json(path: Path, **changes) -> None:
    path.chmod(0o644)
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_removed_version_number_is_never_reused_and_its_aliases_are_reported(tiny_run, tmp_path):
    import shutil

    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    reg.push(tiny_run.path, "digits")
    reg.promote("digits", 2)
    shutil.rmtree(tmp_path / "reg" / "digits" / "versions" / "2")  # by hand, production included
    assert reg.push(tiny_run.path, "digits").number == 3  # not 2: production must not point at it
    with pytest.raises(HeadstartError, match="digits@production points at version 2, whose folder is missing"):
        reg.resolve("digits")
    assert reg.dangling("digits") == {"production": 2}
    shutil.rmtree(tmp_path / "reg" / "digits" / "versions" / "3")  # the highest: still never given again
    assert reg.push(tiny_run.path, "digits").number == 4
    (tmp_path / "reg" / "digits" / "last-version").write_text("lots")
    with pytest.raises(HeadstartError, match="last-version is damaged"):
        reg.push(tiny_run.path, "digits")
    assert reg.numbers("digits") == [1, 4]

    args = ("--registry", str(reg.root))
    shown = cli("registry", "show", "digits", *args)
    assert shown.returncode == 0 and "digits@production points at version 2, whose folder is missing" in shown.stdout
    assert "2 (missing)" in cli("registry", "list", *args).stdout
    resolved = cli("registry", "show", "digits@production", *args)
    assert resolved.returncode == 2 and "points at version 2" in resolved.stderr and "Traceback" not in resolved.stderr


def test_a_version_keeps_the_model_s_figures_not_how_they_were_measured(tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run.path, tmp_path / "run"))
    (run / "metrics.json").write_text(json.dumps({
        "overall": {"accuracy": 0.9, "examples": 80, "per_class": {"digit0": {"f1": 0.8, "support": 30},
                                                                    "support": {"f1": 0.7, "support": 20}},
                    "calibration": {"n_bins": 10, "ece_by_chance": 0.02}},
        "latency": {"batch1_p50_ms": 3.5, "batch1_runs": 50, "threads": 2, "load_average": 1.7}}))
    metrics = Registry(tmp_path / "reg").push(run, "digits").meta["metrics"]
    assert {k: v for k, v in metrics.items() if not k.startswith("test.")} == {
        "overall.accuracy": 0.9, "overall.examples": 80, "overall.per_class.digit0.f1": 0.8,
        "overall.per_class.support.f1": 0.7,  # a class named like a setting keeps its metrics
        "overall.calibration.ece_by_chance": 0.02, "latency.batch1_p50_ms": 3.5}


def test_push_refuses_another_modality_and_diff_names_other_labels(tiny_run, tmp_path):
    from headstart.backbones.registry import build
    from headstart.config import DataConfig
    from headstart.model.classifier import Classifier
    from headstart.model.folder import save_model
    from tests.test_compress_quantize import tiny_bert_folder

    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    text = _copy_run(tiny_run, tmp_path / "text")
    backbone = build(f"hf:{tiny_bert_folder(tmp_path / 'bert')}", DataConfig(source="unused", max_length=32))
    save_model(Classifier(backbone, ["a", "b"], [8], 0.1), text / "model", {"hidden": [8], "dropout": 0.1})
    _edit_json(text / "model" / "config.json", modality="image")  # what the model reads is what counts
    with pytest.raises(HeadstartError, match="holds a model of texts, but the versions of digits classify images"):
        reg.push(text, "digits")
    assert reg.numbers("digits") == [1]
    renamed = _copy_run(tiny_run, tmp_path / "renamed")
    _edit_json(renamed / "model" / "config.json", labels=["zero", "one", "digit2"])
    assert reg.push(renamed, "digits").meta["same_model_as"] is None  # its config.json differs
    diff = cli("registry", "diff", "digits", "1", "2", "--registry", str(reg.root))
    assert "different labels (only in v1: digit0, digit1; only in v2: zero, one)" in diff.stdout, diff.stderr
    assert "different examples" not in diff.stdout  # the same test split


def test_diff_says_when_the_versions_were_tested_on_different_examples(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    other = _copy_run(tiny_run, tmp_path / "other")
    split = pd.read_csv(other / "split.csv", dtype=str, keep_default_na=False)
    split.loc[split["split"] == "test", "origin"] += "-elsewhere"  # another test split, the training one unchanged
    split.to_csv(other / "split.csv", index=False)
    reg.push(other, "digits")
    said = " ".join(cli("registry", "diff", "digits", "1", "2", "--registry", str(reg.root)).stdout.split())
    assert "The versions were tested on different examples (their runs' test splits differ)" in said


def test_versions_pushed_before_test_rows_had_their_own_fingerprint_are_not_said_to_differ():
    from headstart.registry.fingerprint import same_test_data

    old, new = {"data": {"sha256": "a"}}, {"data": {"sha256": "b", "test_sha256": "t"}}
    assert same_test_data(old, new) is None  # the training rows alone may differ: it cannot tell
    assert same_test_data(old, {"data": {"sha256": "a", "test_sha256": "t"}}) is True  # the same manifest
    assert same_test_data(new, {"data": {"sha256": "c", "test_sha256": "t"}}) is True
    assert same_test_data(new, {"data": {"sha256": "b", "test_sha256": "u"}}) is False


def _break(run: Path, damage: str) -> None:
    if damage == "weights":
        (run / "model" / "model.safetensors").write_text("xx\n")
    elif damage == "model":
        import shutil

        shutil.rmtree(run / "model")
    elif damage == "split":
        (run / "split.csv").write_text("path,class\na.png,digit0\n")
    else:
        file, text = damage.split(":")
        (run / file).write_text(text)


@pytest.mark.parametrize("damage, message", [
    ("weights", r"model.safetensors is not a readable safetensors file"),
    ("model", r"not a finished run folder: model is missing"),
    ("split", r"split.csv has no origin, label, split column"),
    ("results.json:{nope", r"results.json is not valid JSON"),
    ("results.json:[1]", r"results.json holds a JSON list, not an object"),
    ("metrics.json:{nope", r"metrics.json is not valid JSON"),
])
def test_push_refuses_a_damaged_run_and_registers_nothing(tiny_run, tmp_path, damage, message):
    run = _copy_run(tiny_run, tmp_path / "run")
    _break(run, damage)
    reg = Registry(tmp_path / "reg")
    with pytest.raises(HeadstartError, match=message):
        reg.push(run, "digits")
    assert reg.numbers("digits") == []


def test_damaged_aliases_are_named_and_do_not_hide_other_models(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    for name in ("digits", "other"):
        reg.push(tiny_run.path, name)
        reg.promote(name, 1)
    aliases = reg.root / "digits" / "aliases.json"
    aliases.write_text('{"aliases": {"produc')
    for action in (lambda: reg.resolve("digits"), lambda: reg.promote("digits", 1), lambda: reg.rollback("digits"),
                   lambda: reg.push(tiny_run.path, "digits")):
        with pytest.raises(HeadstartError, match="aliases.json is not valid JSON"):
            action()
    listing = cli("registry", "list", "--registry", str(reg.root))
    assert listing.returncode == 0 and "other" in listing.stdout and "Traceback" not in listing.stderr
    assert f"{aliases} is not valid JSON" in " ".join(listing.stdout.split()), listing.stdout
    aliases.write_text('{"aliases": {"production": 9}}')
    with pytest.raises(HeadstartError, match='aliases.json is damaged: it needs "aliases"'):
        reg.rollback("digits")
    assert reg.resolve("other").number == 1


def test_promote_and_rollback_refuse_a_version_whose_files_changed(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    reg.push(tiny_run.path, "digits")
    reg.promote("digits", 1)
    reg.promote("digits", 2)
    weights = reg.version("digits", 1).model_dir / "model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-1] + b"\1")
    before = reg.aliases("digits")
    promoted = cli("registry", "promote", "digits", "1", "--registry", str(reg.root))
    assert promoted.returncode == 2 and "differs from the file registered in digits@1" in promoted.stderr
    with pytest.raises(HeadstartError, match="differs from the file registered in digits@1"):
        reg.rollback("digits")
    assert reg.aliases("digits") == before


def test_a_reference_with_nothing_after_the_at_is_refused(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    reg.promote("digits", 1)
    with pytest.raises(HeadstartError, match="'digits@' has nothing after '@'"):
        reg.resolve("digits@")
    with pytest.raises(HeadstartError, match="Use a version number, 'latest', or an alias"):
        reg.resolve("digits@²")  # a digit to str.isdigit, not to int()


def test_aliases_are_put_back_only_as_the_change_left_them(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    reg.push(tiny_run.path, "digits")
    reg.promote("digits", 1)
    before = reg.aliases("digits")
    reg.promote("digits", 2)
    after = reg.aliases("digits")
    reg.promote("digits", 1, "candidate")  # another writer, after the change to undo
    assert not reg.restore_aliases("digits", before, after)
    assert reg.aliases("digits")["aliases"] == {"production": 2, "candidate": 1}
    assert reg.restore_aliases("digits", before, reg.aliases("digits"))
    assert reg.aliases("digits") == before


def test_rollback_skips_versions_removed_by_hand(tiny_run, tmp_path):
    import shutil

    reg = Registry(tmp_path / "reg")
    for number in (1, 2, 3):
        reg.push(tiny_run.path, "digits")
        reg.promote("digits", number)
    removed = reg.version("digits", 2).path
    for path in [removed, *removed.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(removed)
    before = reg.aliases("digits")
    assert reg.rollback_target("digits") == 1 and reg.aliases("digits") == before  # what rollback does, unwritten
    assert reg.rollback("digits").number == 1
    for change in (reg.rollback_target, reg.rollback):
        with pytest.raises(HeadstartError, match="no earlier production version"):
            change("digits")


def test_rollback_never_lands_on_the_version_in_production(tiny_run, tmp_path):
    import shutil

    reg = Registry(tmp_path / "reg")
    for number in (1, 2, 3):
        reg.push(tiny_run.path, "digits")
    for number in (1, 2, 1, 3):
        reg.promote("digits", number)
    assert reg.rollback("digits").number == 1  # production history 1, 2 left
    removed = reg.version("digits", 2).path
    for path in [removed, *removed.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(removed)
    # 2 is gone and 1 is production already: nothing is left to go back to, and nothing is written
    before = reg.aliases("digits")
    for change in (reg.rollback_target, reg.rollback):
        with pytest.raises(HeadstartError, match="no earlier production version"):
            change("digits")
    assert reg.aliases("digits") == before


def _variants(folder: Path, tag: str) -> None:
    """A set of variants as `headstart compress` writes it (a manifest and metrics.json), marked with `tag`."""
    from headstart.compress.variants import write_manifest

    (folder / "int8-dynamic").mkdir(parents=True)
    write_manifest(folder / "int8-dynamic", {"name": "int8-dynamic", "runtime": "onnxruntime", "accepted": True,
                                            "verdict": tag})
    (folder / "metrics.json").write_text(json.dumps({"tag": tag}))


def _registered_set(version) -> str:
    return json.loads((version.model_dir / "variants" / "metrics.json").read_text())["tag"]


def test_push_waits_for_a_compress_swapping_the_variants(tiny_run, tmp_path, monkeypatch):
    import fcntl
    import re
    import threading

    from headstart.compress.pipeline import LOCK, PREVIOUS, STAGING

    run = _copy_run(tiny_run, tmp_path / "run")
    model = run / "model"
    _variants(model / "variants", "old")
    reg = Registry(tmp_path / "reg")
    fd = os.open(model / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as `headstart compress` in another process, in the middle of its swap
    (model / "variants").rename(model / PREVIOUS)
    _variants(model / STAGING, "new")

    def finish():
        time.sleep(0.5)
        (model / STAGING).rename(model / "variants")
        (model / PREVIOUS / "metrics.json").unlink()  # compress then removes the previous set
        os.close(fd)

    monkeypatch.setattr("headstart.registry.store.COMPRESS_WAIT", 0.2)
    with pytest.raises(HeadstartError, match=f"^`headstart compress` has been writing the variants of "
                                             f"{re.escape(str(model))} for over 0.2 s"):
        reg.push(run, "digits")
    assert reg.numbers("digits") == [] and not (model / "variants").exists()
    monkeypatch.setattr("headstart.registry.store.COMPRESS_WAIT", 30.0)
    compress = threading.Thread(target=finish)
    compress.start()
    start = time.monotonic()
    version = reg.push(run, "digits")
    compress.join()
    assert time.monotonic() - start >= 0.4  # it waited for the swap to finish, then copied the new set
    assert _registered_set(version) == "new" and version.meta["variants"][0]["name"] == "int8-dynamic"
    version.verify()


@pytest.mark.parametrize("swapped", [False, True])
def test_push_completes_a_swap_that_a_killed_compress_left_half_done(tiny_run, tmp_path, swapped):
    """As the next `headstart compress` would: the previous set goes back if the new one was not in place yet, else
    the new one stays; the staging and previous folders go. The version gets that one whole set."""
    from headstart.compress.pipeline import PREVIOUS, STAGING

    run = _copy_run(tiny_run, tmp_path / "run")
    model = run / "model"
    _variants(model / PREVIOUS, "old")  # moved aside by the swap
    _variants(model / ("variants" if swapped else STAGING), "new")
    version = Registry(tmp_path / "reg").push(run, "digits")
    assert _registered_set(version) == ("new" if swapped else "old")
    assert sorted(p.name for p in model.iterdir() if p.name.startswith(".variants")) == []
    assert json.loads((model / "variants" / "metrics.json").read_text())["tag"] == _registered_set(version)


def test_a_registry_on_a_filesystem_without_locks_is_refused_with_its_path(tiny_run, tmp_path, monkeypatch):
    import errno
    import fcntl

    from headstart.files import run_lock

    def no_locks(fd, operation):  # as NFS without its lock service answers
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(HeadstartError, match=r"Cannot lock \S*digits/\.lock: No locks available\. Its filesystem"):
        reg.promote("digits", 1)
    with pytest.raises(HeadstartError, match=r"Cannot lock \S*model/\.compress\.lock: No locks available"):
        reg.push(tiny_run.path, "digits")
    with run_lock(tiny_run.path):  # a run's lock is skipped there: nothing else can take it either
        pass


def test_push_of_a_model_folder_it_cannot_write_takes_no_lock(tiny_run, tmp_path, monkeypatch):
    from headstart.compress.pipeline import LOCK

    run = _copy_run(tiny_run, tmp_path / "run")
    (run / "model" / LOCK).unlink(missing_ok=True)
    monkeypatch.setattr("headstart.compress.pipeline.os.access", lambda *_args, **_kwargs: False)  # read-only
    assert Registry(tmp_path / "reg").push(run, "digits").number == 1  # never compressed: nothing to wait for
    assert not (run / "model" / LOCK).exists()


def test_a_name_with_an_at_is_refused_not_registered_out_of_reach(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    with pytest.raises(HeadstartError, match="'digits@5' is not a valid model name"):
        reg.push(tiny_run.path, "digits@5")
    assert not reg.root.exists()
    with pytest.raises(HeadstartError, match="'digits@5' is not a valid model name"):
        reg.promote("digits@5", 1)


def test_a_version_number_given_as_text_is_refused_before_any_write(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    with pytest.raises(HeadstartError, match="Version '1': a version is given by its number"):
        reg.promote("digits", "1")
    with pytest.raises(HeadstartError, match="--parent '1': a version is given by its number"):
        reg.push(tiny_run.path, "digits", parent="1")
    assert reg.aliases("digits")["aliases"] == {} and reg.numbers("digits") == [1]
    reg.promote("digits", 1)
    assert reg.resolve("digits").number == 1


def test_a_refused_first_push_leaves_no_model_in_the_listing(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    with pytest.raises(HeadstartError, match="--parent 1: fresh has no such version"):
        reg.push(tiny_run.path, "fresh", parent=1)
    assert reg.names() == ["digits"]
    with pytest.raises(HeadstartError, match=r"No model named 'fresh' .* \(models: digits\)"):
        reg.resolve("fresh")


@pytest.mark.parametrize("damage, message", [
    (lambda meta: meta.pop("created"), "its field 'created' is missing or not a text"),
    (lambda meta: meta.update(files=["model/model.safetensors"]), "its field 'files' is missing or not a JSON object"),
    (lambda meta: meta.update(parent="1"), "its field 'parent' is missing or not a version number or null"),
    (lambda meta: meta.update(variants=[1]), "its field 'variants' is missing or not a list"),
])
def test_a_version_json_missing_a_field_is_named_and_hides_no_other_model(tiny_run, tmp_path, damage, message):
    reg = Registry(tmp_path / "reg")
    for name in ("digits", "other"):
        reg.push(tiny_run.path, name)
    path = reg.root / "digits" / "versions" / "1" / "version.json"
    meta = json.loads(path.read_text())
    damage(meta)
    path.chmod(0o644)
    path.write_text(json.dumps(meta))
    with pytest.raises(HeadstartError, match=f"version.json is damaged: {message}"):
        reg.resolve("digits@1")
    listing = cli("registry", "list", "--registry", str(reg.root))
    assert listing.returncode == 0 and "other" in listing.stdout and "Traceback" not in listing.stderr
    assert message in " ".join(listing.stdout.split())
    assert reg.push(tiny_run.path, "digits").number == 2  # a damaged version does not block later pushes


def test_a_version_folder_without_its_version_json_is_named(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    (reg.root / "digits" / "versions" / "2").mkdir()
    with pytest.raises(HeadstartError, match="versions/2 has no version.json: the version was partly removed"):
        reg.resolve("digits@latest")
    with pytest.raises(HeadstartError, match="digits has no version 3 .* \\(versions: 1, 2\\)"):
        reg.resolve("digits@3")


def test_a_last_version_file_that_is_not_text_is_named(tiny_run, tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.push(tiny_run.path, "digits")
    (reg.root / "digits" / "last-version").write_bytes(b"\xff\n")
    with pytest.raises(HeadstartError, match="last-version is damaged"):
        reg.push(tiny_run.path, "digits")


def test_push_refuses_a_broken_link_and_takes_tokenizer_vocabularies(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "run")
    (run / "model" / "notes.md").symlink_to(tmp_path / "gone.md")
    reg = Registry(tmp_path / "reg")
    with pytest.raises(HeadstartError, match="notes.md is a link to a file that does not exist"):
        reg.push(run, "digits")
    assert not reg.root.exists()
    (run / "model" / "notes.md").unlink()
    (run / "model" / "bpe.codes").write_text("a b 1\n")  # what BERTweet / PhoBERT tokenizers save
    assert "model/bpe.codes" in reg.push(run, "digits").meta["files"]


def test_a_registry_path_starting_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    from headstart.registry import default_root

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HEADSTART_REGISTRY", "~/models")
    assert default_root() == tmp_path / "models"
    assert Registry("~/other").root == tmp_path / "other"

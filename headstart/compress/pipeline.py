"""`compress`: write a model folder's compressed variants and compare them with the full model.

Every variant (float ONNX Runtime, bf16, int8) is scored on the same test examples as the full PyTorch model:
accuracy, macro-F1, agreement, size, latency. A variant that loses more than `budget` points of accuracy is
marked rejected.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

from headstart.compress import calibration
from headstart.compress.data import CompressData, load_data, resolve
from headstart.compress.export import export_onnx, max_logit_difference
from headstart.compress.groups import group_order, int8_groups, node_groups, nodes_of
from headstart.compress.score import HEADLINE, onnx_probabilities, scores, size_mb
from headstart.compress.variants import write_manifest
from headstart.errors import HeadstartError
from headstart.progress import reporter
from headstart.files import COMPRESS_LOCK as LOCK, NoLocks, locked, share_like_umask
from headstart.json_safe import json_safe

METHODS = ("auto", "dynamic", "static", "qat", "bf16")
MAX_LOGIT_DIFFERENCE = 1e-3  # ONNX Runtime against PyTorch, float32
LOADER = "headstart.compress.variants:load_any_variant"
STAGING = ".variants-staging"  # the set being written, swapped into variants/ when the call completes
PREVIOUS = ".variants-previous"  # the set it replaces, for the moment of the swap


def linear_heavy(model) -> bool:
    """More weights in Linear (and Embedding) layers than in convolutions: dynamic int8 suits it. Given the
    backbone: a wide head on a CNN does not make it one."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)))
    convolutions = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, convolutions))
    return linear > conv


class Compression:
    """The state of one `compress` call: the model, its data, the variants folder, and the rows of the table."""

    def __init__(self, model_dir: Path, data: CompressData, budget: float, say: Callable[[str], None]):
        from headstart.model.folder import load_model

        self.model_dir, self.data, self.budget, self.say = model_dir, data, budget, say
        self.model = load_model(model_dir)
        self.labels = self.model.labels
        self.root = model_dir / STAGING
        self.work = self.root / ".work"
        self.rows: dict[str, dict] = {}
        backbone = self.model.backbone
        self.test_batches = calibration.batches(backbone, data.test)
        self.reference = self._torch_probabilities(self.model, self.test_batches)
        self.val = calibration.sample(data.val) if data.val is not None and len(data.val) else None
        self.val_batches = calibration.batches(backbone, self.val) if self.val is not None else []
        self.val_reference = self._torch_probabilities(self.model, self.val_batches) if self.val_batches else None

    @staticmethod
    @torch.inference_mode()
    def _torch_probabilities(model, batches: list) -> np.ndarray:
        logits = torch.cat([model(**batch).double() for batch in batches])
        return logits.softmax(-1).numpy()

    def export(self, model, path: Path) -> tuple[Path, float, dict[str, str]]:
        """Export to ONNX, check it against PyTorch on real test inputs; also returns each node's layer group."""
        import onnx

        from headstart.compress.export import strip_metadata

        sample = self.data.test.inputs[:4] if len(self.data.test) >= 2 else self.data.test.inputs * 2
        export_onnx(model, model.backbone.prepare(sample), path, scopes=True)
        proto = onnx.load(str(path))
        groups = node_groups(proto, model)
        strip_metadata(proto)
        onnx.save_model(proto, str(path))
        difference = max_logit_difference(model, path, self.test_batches[:4])
        self.say(f"ONNX export of {path.parent.name}: max |logit difference| against PyTorch {difference:.2e}")
        if difference > MAX_LOGIT_DIFFERENCE:
            raise HeadstartError(f"The ONNX export ({path}) differs from the PyTorch model by up to "
                                 f"{difference:.3g} in the logits (allowed: {MAX_LOGIT_DIFFERENCE}); the backbone "
                                 "uses an operation the exporter translates wrongly.")
        return path, difference, groups

    def add(self, name: str, proba: np.ndarray, size: float, manifest: dict) -> dict:
        """Score a variant on the test split, judge it against the budget and write its manifest."""
        row = {**scores(self.data.test, proba, self.reference), "size_mb": size, **manifest}
        if name == "fp32-pytorch":
            row.update(accepted=True, verdict="the full model.")
        elif row["accuracy_drop"] <= self.budget:
            row.update(accepted=True, verdict=f"accuracy drop {row['accuracy_drop']:+.2f} points, within the budget "
                                              f"of {self.budget:g}.")
        else:
            row.update(accepted=False, verdict=f"accuracy drop {row['accuracy_drop']:+.2f} points exceeds the budget "
                                               f"of {self.budget:g}.")
        self.rows[name] = row
        if name != "fp32-pytorch":
            write_manifest(self.root / name, {"name": name, **row})
        self.say(f"{name}: accuracy {row['accuracy']:.4f} (drop {row['accuracy_drop']:+.2f} points), agreement "
                 f"{row['agreement']:.4f}, {size:.1f} MB: {'accepted' if row['accepted'] else 'REJECTED'}")
        return row

    def onnx_variant(self, name: str, path: Path, manifest: dict) -> dict:
        return self.add(name, onnx_probabilities(path, self.test_batches), size_mb(path),
                        {"runtime": "onnxruntime", "file": "model.onnx", **manifest})

    def fresh(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir(parents=True)
        return folder


def _bf16(c: Compression) -> dict:
    from safetensors.torch import save_file

    from headstart.model.folder import load_model, weights_metadata

    folder = c.fresh("bf16")
    state = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous()
             for k, v in c.model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={**weights_metadata(c.model), "dtype": "bfloat16"})
    model = load_model(c.model_dir, weights=folder / "model.safetensors")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        proba = c._torch_probabilities(model, c.test_batches)
    return c.add("bf16", proba, size_mb(folder / "model.safetensors"),
                 {"runtime": "torch", "file": "model.safetensors", "method": "bf16 weights, bf16 autocast",
                  "precision": "bf16"})


def _check_val(c: Compression, why: str, force: bool, calibrates: bool) -> dict:
    """The calibration / sensitivity set's description; a broken one is refused unless `force`."""
    if c.val is None:
        if c.data.without_run_data:
            where = f"the run's own data could not be read ({c.data.without_run_data})"
        elif c.data.run_dir is None:
            where = f"{c.model_dir} has no run beside it (or pass the run folder)"
        else:
            where = "every example of the run's validation split is also a --data example"
        raise HeadstartError(f"{why} needs calibration data, and {where}: pass --calibration SOURCE (labelled "
                             "examples of every class).")
    origin = c.data.val_origin
    found = calibration.check(c.val, c.labels, origin, force, calibrates)
    counts = np.bincount(c.val.y, minlength=len(c.labels)).tolist()
    return {"source": origin, "examples": len(c.val), "class_counts": dict(zip(c.labels, counts)), "problems": found}


def _search(c: Compression, kind: str, probe, order: list[str]) -> tuple[list[str], dict, dict]:
    """auto: every group quantized; if that misses the budget on validation, the sensitivity analysis and the
    groups kept in float. Returns (float groups, validation scores, report)."""
    from headstart.compress import sensitivity

    full = probe.with_float([])
    c.say(f"auto: {kind} int8 of every layer group: validation accuracy drop {full['accuracy_drop']:+.2f} points")
    report = {"validation_full": full, "sensitivity": None, "steps": []}
    if full["accuracy_drop"] <= c.budget:
        return [], full, report
    ranked = sensitivity.analyse(probe, order, c.say)
    kept, last, steps = sensitivity.fit_budget(probe, ranked, c.budget, full, len(order) // 2, c.say)
    report.update(sensitivity=ranked, steps=steps)
    return kept, last, report


def _int8(c: Compression, kind: str, calibration_set: dict | None, fp32_onnx: Path, groups: dict[str, str], method: str,
          qat_epochs: int, qat_lr: float) -> dict:
    """The int8 variants: dynamic or static post-training quantization (with `auto`, the most sensitive layer
    groups kept in float until the budget is met on validation data), and quantization-aware training when asked
    or when `auto` cannot meet the budget that way."""
    import onnx

    from headstart.compress.quantize_dynamic import quantize_dynamic_int8
    from headstart.compress.quantize_static import quantize_static_int8
    from headstart.compress.sensitivity import Probe

    report: dict = {"kind": kind, "calibration": calibration_set, "search": None, "qat": None}

    def quantizer(source: Path, cache: Path):
        if kind == "dynamic":
            return lambda target, exclude: quantize_dynamic_int8(source, target, exclude)
        return lambda target, exclude: quantize_static_int8(source, target, c.val_batches, cache, exclude)

    order = [g for g in group_order(c.model) if g in set(groups.values())]
    quantize = quantizer(fp32_onnx, c.work / "ranges.json")
    described = {"dynamic": "dynamic int8 (weights per channel, embeddings per row)",
                 "static": "static int8 (QDQ, weights per channel, activations calibrated)"}[kind]
    float_groups, fits = [], True
    fp32_proto = onnx.load(str(fp32_onnx))
    if method == "auto" and c.val is not None:
        # every node of the graph: "a group alone" keeps in float the nodes of no group too (pooling, a shared
        # activation), so that their error is not charged to each group
        every_node = [node.name for node in fp32_proto.graph.node]
        probe = Probe(quantize, groups, every_node, c.val_batches, c.val, c.val_reference, c.work)
        float_groups, last, report["search"] = _search(c, kind, probe, order)
        fits = last["accuracy_drop"] <= c.budget

    def quantized(path: Path, source, source_groups: dict[str, str], kept: list[str]) -> list[str]:
        """The groups whose weights `path` (quantized from the graph `source`, `kept` in float) holds in int8; says
        which the method left in float unasked."""
        done = int8_groups(source, onnx.load(str(path)), source_groups)
        left = [g for g in order if g not in done and g not in kept]
        if left:
            c.say(f"{path.parent.name}: {kind} int8 leaves {', '.join(left)} in float (dynamic int8 quantizes MatMul "
                  "weights and embedding tables, static int8 no embedding tables)")
        return [g for g in order if g in done]

    rows = []
    if method != "qat":
        name = f"int8-{kind}"
        path = quantize(c.fresh(name) / "model.onnx", nodes_of(groups, float_groups))
        if float_groups:
            c.say(f"{name}: kept in float (most sensitive first): {', '.join(float_groups)}")
        rows.append(c.onnx_variant(name, path, {"method": described, "precision": "int8", "float_groups": float_groups,
                                                "quantized_groups": quantized(path, fp32_proto, groups, float_groups)}))
    if method == "qat" or not fits:
        if c.data.train is None:
            c.say(f"auto: post-training quantization misses the budget on validation data; quantization-aware "
                  f"training skipped: {c.data.without_train}")
            return {**report, "qat": {"skipped": c.data.without_train}, "rows": rows}
        c.say("quantization-aware training" + ("" if method == "qat" else
                                               ": post-training quantization misses the budget on validation data"))
        from headstart.compress.qat import quantization_aware_training
        from headstart.run import Run

        trained = quantization_aware_training(c.model, c.data.train, qat_epochs,
                                              Run(c.data.run_dir).config.train.batch_size, qat_lr, say=c.say)
        qat_onnx, _, qat_groups = c.export(trained, c.work / "qat" / "model.onnx")
        path = quantizer(qat_onnx, c.work / "qat-ranges.json")(c.fresh("int8-qat") / "model.onnx", [])
        report["qat"] = {"epochs": qat_epochs, "lr": qat_lr, "examples": len(c.data.train)}
        rows.append(c.onnx_variant("int8-qat", path, {"method": described + " after quantization-aware training",
                                                      "precision": "int8", "float_groups": [],
                                                      "quantized_groups": quantized(path, onnx.load(str(qat_onnx)), qat_groups, [])}))
    return {**report, "rows": rows}


def _check_options(method: str, budget: float, qat_epochs: int, qat_lr: float) -> None:
    """Refuse settings that cannot work, before anything is read or written."""
    if method not in METHODS:
        raise HeadstartError(f"--method {method} is not one of {', '.join(METHODS)}.")
    if not 0 <= budget <= 100:  # NaN too
        raise HeadstartError(f"--budget {budget}: the accuracy budget is a number of points of accuracy, 0 to 100 "
                             "(e.g. 1.0).")
    if not isinstance(qat_epochs, int) or qat_epochs < 1:
        raise HeadstartError(f"--qat-epochs {qat_epochs}: quantization-aware training runs a whole number of epochs, "
                             "1 or more (e.g. 2).")
    if not math.isfinite(qat_lr) or qat_lr <= 0:
        raise HeadstartError(f"--qat-lr {qat_lr}: the learning rate of quantization-aware training is a positive "
                             "number (e.g. 2e-5).")


def compress(path: Union[str, Path], method: str = "auto", budget: float = 1.0, data: str | None = None,
             calibration_data: str | None = None, data_settings: dict | None = None, latency: bool = True,
             force_calibration: bool = False, qat_epochs: int = 2, qat_lr: float = 2e-5,
             progress: Union[bool, Callable[[str], None]] = True) -> dict:
    """Write the compressed variants of a run's (or a model folder's) model into <model>/variants/ and compare
    them with the full model on the test split; writes variants/metrics.json and variants/report.html and returns
    the metrics. The new set replaces the previous one only once complete. See README, "Compress"."""
    from headstart.model.folder import read_model_config

    _check_options(method, budget, qat_epochs, qat_lr)
    say = reporter("compress", progress)
    model_dir, run_dir = resolve(path)
    config = read_model_config(model_dir)
    examples = load_data(model_dir, run_dir, config["labels"], config["modality"], data, calibration_data,
                         data_settings)
    if method == "qat" and examples.train is None:
        raise HeadstartError(f"Quantization-aware training needs the run's training split, but "
                             f"{examples.without_train}.")
    with _locked(model_dir):
        c = Compression(model_dir, examples, budget, say)
        kind, calibration_set = None, None
        if method != "bf16":
            kind = method if method in ("dynamic", "static") else ("dynamic" if linear_heavy(c.model.backbone)
                                                                   else "static")
            if kind == "static" or method == "auto":  # what calibrates, or decides auto's search (not dynamic qat)
                calibration_set = _check_val(c, "quantization-aware training" if method == "qat" else
                                             f"{method} int8", force_calibration, calibrates=kind == "static")
        _tidy(model_dir)  # after a killed call
        try:
            metrics = _write(c, method, kind, calibration_set, latency, qat_epochs, qat_lr)
            share_like_umask(c.root)
            _swap(c.root, model_dir / "variants")
        finally:
            _tidy(model_dir)
    return metrics


def _write(c: Compression, method: str, kind: str | None, calibration_set: dict | None, latency: bool,
           qat_epochs: int, qat_lr: float) -> dict:
    """Every variant, metrics.json and report.html, in the staging folder; returns the metrics."""
    from headstart.compress.report import write

    c.work.mkdir(parents=True)
    c.say(f"fp32 PyTorch: {c.data.scope} of {c.data.source}, {len(c.data.test)} examples")
    if c.data.seen_in_training:
        c.say(f"{c.data.seen_in_training} of these examples are inputs the run trained or validated on: every "
              "variant's accuracy on them is optimistic (the drops against fp32-pytorch still compare like with like)")
    c.add("fp32-pytorch", c.reference, size_mb(c.model_dir / "model.safetensors"),
          {"runtime": "torch", "file": "../model.safetensors", "method": "none", "precision": "fp32"})
    try:
        fp32_onnx, difference, groups = c.export(c.model, c.fresh("fp32-onnx") / "model.onnx")
    except HeadstartError as exc:
        if kind is not None:  # int8 is made from the ONNX graph
            raise
        shutil.rmtree(c.root / "fp32-onnx")
        c.say(f"fp32-onnx left out (bf16 needs no ONNX): {exc}")
    else:
        c.onnx_variant("fp32-onnx", fp32_onnx, {"method": "ONNX export", "precision": "fp32",
                                                "max_logit_difference": difference})
    _bf16(c)
    int8 = None if kind is None else _int8(c, kind, calibration_set, fp32_onnx, groups, method, qat_epochs, qat_lr)
    shutil.rmtree(c.work)
    if latency:
        _time(c)
    metrics = _metrics(c, method, int8)
    (c.root / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    for name, row in c.rows.items():
        if name != "fp32-pytorch":
            write_manifest(c.root / name, {"name": name, **row})
    write(metrics, c.root / "report.html")
    return metrics


@contextmanager
def _locked(model_dir: Path, timeout: float = 0, busy: str | None = None):
    """Hold the model folder's compress lock, waiting up to `timeout` seconds for the call (or push) holding it;
    `busy`: the refusal when it is not released in time."""
    with ExitStack() as stack:
        try:
            stack.enter_context(locked(model_dir / LOCK, timeout=timeout))
        except NoLocks:
            raise
        except HeadstartError:
            raise HeadstartError(busy or f"Another `headstart compress` is writing the variants of {model_dir}, or "
                                 f"`headstart registry push` is copying them (it holds {model_dir / LOCK}). Wait "
                                 "for it to finish, then run this one again.") from None
        except OSError as exc:
            raise HeadstartError(f"{model_dir} cannot be written ({exc.strerror}), and compress writes the variants "
                                 "there. Make it writable, or compress a copy of the model folder.") from None
        yield


@contextmanager
def settled(model_dir: Path, timeout: float):
    """Hold the compress lock of `model_dir` while its variants are read as one set (`registry push` copies them):
    waits up to `timeout` seconds for a running call, and first tidies a swap a killed call left half done, as
    that call's next run would (the previous set back, or the new one kept if it was already in place)."""
    if not (model_dir / LOCK).exists() and not os.access(model_dir, os.W_OK):
        yield  # never compressed (a call creates its lock file first), and it cannot be: nothing to wait for
        return
    busy = (f"`headstart compress` has been writing the variants of {model_dir} for over {timeout:g} s (it holds "
            f"{model_dir / LOCK}): try again once it has finished.")
    with _locked(model_dir, timeout, busy):
        try:
            _tidy(model_dir)
        except OSError as exc:
            raise HeadstartError(f"A stopped `headstart compress` left the variants of {model_dir} half swapped, and "
                                 f"they cannot be put back ({exc.strerror}): make it writable, then try again.") \
                from None
        yield


def _swap(staging: Path, variants: Path) -> None:
    """The completed set in place of the previous one, which is moved aside (and removed by `_tidy`)."""
    if variants.exists():
        variants.rename(variants.with_name(PREVIOUS))
    staging.rename(variants)


def _tidy(model_dir: Path) -> None:
    """One whole set in variants/: a set moved aside by a swap that did not finish goes back; the staging folder of
    a stopped call and the set a finished swap replaced are removed."""
    variants, previous = model_dir / "variants", model_dir / PREVIOUS
    if previous.is_dir() and not variants.exists():
        previous.rename(variants)
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(model_dir / STAGING, ignore_errors=True)


def _time(c: Compression) -> None:
    from rich.progress import track

    from headstart.compress.score import latency

    inputs = c.data.test.inputs
    for name in track(list(c.rows), description="latency: each variant in a fresh process", transient=True):
        folder, loader = (c.model_dir, "headstart.predict:load") if name == "fp32-pytorch" else (c.root / name, LOADER)
        c.rows[name]["latency"] = latency(folder, inputs, loader, c.model_dir)
    base = c.rows["fp32-pytorch"]["latency"]
    for row in c.rows.values():
        t = row["latency"]
        t["speedup_batch1"] = base["batch1_p50_ms"] / t["batch1_p50_ms"]
        t["speedup_batch32"] = t["batch32_throughput_per_s"] / base["batch32_throughput_per_s"]
        t["speedup_model_batch32"] = t["batch32_model_throughput_per_s"] / base["batch32_model_throughput_per_s"]


def _metrics(c: Compression, method: str, int8: dict | None) -> dict:
    base = c.rows["fp32-pytorch"]
    for row in c.rows.values():
        row["size_ratio"] = base["size_mb"] / row["size_mb"]
    return json_safe({
        "schema": "headstart-compression", "version": 1, "model": str(c.model_dir),
        "data": {"source": c.data.source, "scope": c.data.scope, "examples": len(c.data.test), "labels": c.labels,
                 "without_run_data": c.data.without_run_data, "seen_in_training": c.data.seen_in_training},
        "settings": {"method": method, "budget_points": c.budget, "headline": HEADLINE},
        "int8": None if int8 is None else {k: v for k, v in int8.items() if k != "rows"},
        "variants": c.rows,
    })

"""ONNX export of a classifier (backbone + head), verified against PyTorch on real inputs.

The exported graph takes exactly the batch that `Backbone.prepare` gives (token ids and attention mask for text,
uint8 pixels for images: normalisation is inside the model) and returns `logits`. The batch dimension is dynamic,
and so is the sequence dimension of text models.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

import numpy as np
import torch
from torch import nn

from headstart.errors import HeadstartError
from headstart.model.classifier import Classifier

OUTPUT = "logits"
MAX_IR_VERSION = 10  # ONNX Runtime 1.31 refuses models of IR version 11 and above (onnx 1.23 writes 14)
OPSET = 20


class _Exported(nn.Module):
    """The classifier with positional tensor inputs, in the order of the prepared batch's keys."""

    def __init__(self, model: Classifier, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors)))


def dynamic_dims(batch: dict[str, torch.Tensor], modality: str) -> tuple[dict[int, object], ...]:
    """Dynamic dimensions per input: the batch, and for texts the sequence (dimension 1 of 2-D inputs)."""
    size = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=1, max=8192)
    return tuple({0: size, 1: sequence} if modality == "text" and tensor.dim() == 2 else {0: size}
                 for tensor in batch.values())


@contextmanager
def quiet():
    """The exporter logs every unavailable optional operator set and warns about internals; none of it is ours."""
    loggers = [logging.getLogger(name)
               for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        # a failed trace prints the whole traced graph to stderr before raising; the error names what failed
        with warnings.catch_warnings(), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextmanager
def float32():
    """Autocast off (on CPU and GPU): what runs inside computes in the tensors' own dtype."""
    with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
        yield


def strip_metadata(proto) -> None:
    """Drop the exporter's per-node records (module paths, stack traces with local file paths): in a small
    model they outweigh the weights."""
    for node in proto.graph.node:
        del node.metadata_props[:]


def export_onnx(model: Classifier, sample: dict[str, torch.Tensor], path: Path, scopes: bool = False) -> Path:
    """Write `model` as ONNX to `path` (one file, IR version <= 10), traced on the prepared batch `sample`.

    The sample should hold at least 2 examples (a batch of 1 would be specialised to size 1). `scopes` keeps each
    node's module path (see headstart.compress.groups).
    """
    wrapper = _Exported(model.eval(), list(sample)).eval()
    return export_module(wrapper, sample, [OUTPUT], model.backbone.modality, path,
                         f"the {type(model.backbone).__name__} model", scopes)


def export_module(module: nn.Module, sample: dict[str, torch.Tensor], outputs: list[str], modality: str, path: Path,
                  what: str, scopes: bool = False) -> Path:
    """Write `module` (positional tensor inputs named and ordered as `sample`'s keys; outputs named `outputs`) as
    ONNX to `path`, with the batch dimension dynamic (and the sequence dimension for `text`); `what` names the
    module in errors."""
    import onnx

    if next(iter(sample.values())).shape[0] < 2:
        raise HeadstartError("ONNX export needs a sample batch of at least 2 examples, so the batch size stays "
                             "dynamic.")
    names = list(sample)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the exporter draws from the global generator: a training run that exports mid-epoch must not see that; and a
    # graph traced under a training step's bf16 autocast would hold bf16 convolutions ONNX Runtime cannot run
    with quiet(), torch.inference_mode(False), torch.no_grad(), torch.random.fork_rng(devices=[]), float32():
        try:
            program = torch.onnx.export(module, tuple(sample.values()), dynamo=True, input_names=names,
                                        output_names=outputs, opset_version=OPSET,
                                        dynamic_shapes=(dynamic_dims(sample, modality),),
                                        verbose=False, report=False)
            proto = program.model_proto
            proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
            if not scopes:
                strip_metadata(proto)
            onnx.save_model(proto, str(path), save_as_external_data=False)
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:  # the exporter and checker raise many types; the user needs the model named
            raise HeadstartError(f"Exporting {what} to ONNX failed: {_cause(exc)} ONNX export traces the model "
                                 "with torch.export, which needs code without branches on tensor values (an `if` on "
                                 "a tensor); `--method bf16` needs no export.") from exc
    return path


def _cause(exc: Exception) -> str:
    """The exporter's own cause of a failure, without its colours and advice: its exception summary when it gives
    one, else its first line; at most 400 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    summary = text.split("## Exception summary", 1)
    lines = [line.strip() for line in summary[-1].splitlines() if line.strip()]
    cause = lines[0] if lines else type(exc).__name__
    return (cause if len(cause) <= 400 else cause[:397] + "...").rstrip(".") + "."


def session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session with all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_logits(sess, batch: dict[str, torch.Tensor]) -> np.ndarray:
    """Logits of an ONNX Runtime session on a prepared batch."""
    feeds = {i.name: batch[i.name].numpy() for i in sess.get_inputs()}
    return sess.run([OUTPUT], feeds)[0]


@torch.inference_mode()
def max_logit_difference(model: Classifier, path: Path, batches: list[dict[str, torch.Tensor]]) -> float:
    """The largest absolute difference between PyTorch's and ONNX Runtime's logits over the prepared batches."""
    sess = session(path)
    worst = 0.0
    for batch in batches:
        expected = model.eval()(**batch).float().numpy()
        worst = max(worst, float(np.abs(run_logits(sess, batch) - expected).max()))
    return worst

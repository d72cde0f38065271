"""Reading a float ONNX model for ONNX Runtime's quantization tools, running one of them, and saving the result."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from headstart.compress.export import MAX_IR_VERSION, quiet, strip_metadata


def load_for_quantization(path: Path):
    """The float model with its recorded intermediate shapes dropped: the dynamo exporter's `value_info` makes
    ONNX Runtime's shape inference fail on transformers ("Inferred shape and existing shape differ")."""
    import onnx

    proto = onnx.load(str(path))
    del proto.graph.value_info[:]
    return proto


def run_tool(tool: Callable, source: Path, target: Path, *args, **kwargs):
    """`tool(float model, output path, *args, **kwargs)` (an onnxruntime.quantization function), run quietly on
    `source`; returns the quantized model (the tool's file is removed: `save_quantized` writes the final one)."""
    import onnx

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_suffix(".staged.onnx")
    try:
        with quiet():
            tool(load_for_quantization(source), staged, *args, **kwargs)
        return onnx.load(str(staged))
    finally:
        staged.unlink(missing_ok=True)


def save_quantized(proto, path: Path) -> Path:
    """One file, IR version <= 10, without the exporter's per-node records; checked."""
    import onnx

    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    strip_metadata(proto)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    onnx.checker.check_model(str(path))
    return path

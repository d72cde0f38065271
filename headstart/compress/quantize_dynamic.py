"""Dynamic int8 for Linear-heavy models (transformers), with ONNX Runtime's quantization tools.

Weights are int8 with one scale per output channel (per-tensor scales moved MiniLM's features to cosine 0.95 of the
float ones, per-channel kept 0.99); activations are quantized on the fly, per batch. Embedding tables are int8
weight-only, one scale per row (see headstart.compress.embeddings).
"""

from __future__ import annotations

from pathlib import Path

from headstart.compress.embeddings import quantize_embeddings
from headstart.compress.onnx_io import run_tool, save_quantized

OP_TYPES = ["MatMul"]  # Linear layers export as MatMul (Gemm has no dynamic int8 kernel in ONNX Runtime)


def quantize_dynamic_int8(source: Path, target: Path, exclude: list[str] = ()) -> Path:
    """Write the dynamic int8 version of the float ONNX model `source` to `target`; nodes named in `exclude`
    stay in float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = run_tool(quantize_dynamic, source, target, op_types_to_quantize=OP_TYPES, per_channel=True,
                     weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude))
    quantize_embeddings(proto, set(exclude))
    return save_quantized(proto, target)

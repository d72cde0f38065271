"""Compression for deployment: ONNX export, int8 quantization (dynamic, static, quantization-aware) and bf16, each
variant measured against the full model on the test split. See README, "Compress"."""

from headstart.compress.pipeline import METHODS, compress
from headstart.compress.variants import list_variants, load_variant

__all__ = ["METHODS", "compress", "list_variants", "load_variant"]

"""Loading a registered version for serving: an accepted ONNX Runtime variant where one exists, else PyTorch.

`runtime="auto"` picks, among the version's accepted ONNX Runtime variants, the one with the highest measured
batch-32 throughput (int8 before float when unmeasured); `"torch"` serves the full PyTorch model; the name of any
accepted variant (`int8-dynamic`, `fp32-onnx`, `bf16`, ...) serves that variant.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from headstart.errors import HeadstartError
from headstart.registry import Version
from headstart.serve.batching import MicroBatcher
from headstart.serve.metrics import ServiceMetrics


def choose_variant(version: Version, runtime: str) -> dict | None:
    """The manifest of the variant to serve, or None for the PyTorch model."""
    from headstart.compress.variants import list_variants

    if runtime == "torch":
        return None
    accepted = list_variants(version.model_dir, accepted_only=True)
    if runtime == "auto":
        def rank(v):
            latency = v.get("latency") or {}
            return (latency.get("batch32_throughput_per_s", 0.0), v.get("precision") == "int8")

        variants = [v for v in accepted if v["runtime"] == "onnxruntime"]
        return max(variants, key=rank) if variants else None
    for variant in accepted:
        if variant["name"] == runtime:
            return variant
    known = ", ".join(v["name"] for v in accepted) or "none"
    raise HeadstartError(f"--runtime {runtime}: {version.spec} has no accepted variant of that name (accepted: "
                         f"{known}). Use auto, torch, or one of those.")


def check_pair(production: Version, candidate: Version | None) -> None:
    """Refuse a candidate of another modality than production: a request could not go to both."""
    if candidate is not None and candidate.meta["modality"] != production.meta["modality"]:
        raise HeadstartError(f"The candidate {candidate.spec} classifies {candidate.meta['modality']}s but production "
                             f"{production.spec} classifies {production.meta['modality']}s: a request could not go "
                             "to both. Serve a candidate of the same modality.")


def load_predictor(version: Version, runtime: str = "auto"):
    """(predictor, runtime label) for a version, after checking its files against the registry's digests."""
    version.verify()
    variant = choose_variant(version, runtime)
    try:
        if variant is None:
            from headstart.predict import load

            return load(version.model_dir), "torch"
        from headstart.compress.variants import load_variant

        return load_variant(variant["folder"]), variant["name"]
    except HeadstartError:
        raise
    except Exception as exc:  # a runtime's own error (ONNX Runtime, safetensors): one line, not a traceback
        raise HeadstartError(f"{version.spec} could not be loaded ({type(exc).__name__}: {exc}). Push its run "
                             "again as a new version.") from None


class Arm:
    """One loaded model version serving one arm (production or candidate), with its own micro-batcher.

    Requests hold the arm while they use it (`with arm.use():`); a retired arm (replaced by a reload) closes
    only after its last request finished, so a reload never drops a request in flight.
    """

    def __init__(self, version: Version, predictor, runtime: str, metrics: ServiceMetrics, max_batch: int,
                 max_wait_ms: float):
        self.version, self.predictor, self.runtime, self.metrics = version, predictor, runtime, metrics
        self.name, self.number = version.name, version.number
        self.labels, self.modality = predictor.labels, predictor.modality
        self.batcher = MicroBatcher(self._run, max_batch, max_wait_ms, name=f"{version.name}-{version.number}")
        self.active, self.retired, self.closed = 0, False, None

    def _run(self, inputs: list) -> list[dict]:
        start = time.perf_counter()
        results = self.predictor.predict(inputs)  # a micro-batch runs in chunks of the predictor's batch size
        labels = (self.name, str(self.number))
        self.metrics.batch_size.labels(*labels).observe(len(inputs))
        self.metrics.batch_seconds.labels(*labels).observe(time.perf_counter() - start)
        return results

    async def predict(self, inputs: list) -> list[dict]:
        return await self.batcher.submit(inputs)

    @contextmanager
    def use(self):
        self.active += 1
        try:
            yield self
        finally:
            self.active -= 1
            if self.retired and self.active == 0:
                self.close()

    def retire(self) -> None:
        """Stop taking new requests; close once the ones in flight are answered."""
        self.retired = True
        if self.active == 0:
            self.close()

    def close(self) -> None:
        """Close the batcher now: requests already submitted are answered, later ones are refused."""
        import asyncio

        if self.closed is None:
            self.closed = asyncio.get_running_loop().create_task(self.batcher.close())

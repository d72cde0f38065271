"""Prometheus metrics of the service, in a registry of its own (so several services can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUTES = {"/predict", "/feedback", "/health", "/metrics", "/admin/promote", "/admin/rollback", "/docs",
          "/openapi.json"}


class ServiceMetrics:
    """Request counts and latencies per endpoint and status; predictions per model version, arm and class;
    inference batch sizes and times; the version each arm serves."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("headstart_http_requests_total", "HTTP requests by endpoint and status",
                                ["method", "path", "status"], registry=r)
        self.latency = Histogram("headstart_http_request_duration_seconds", "HTTP request latency by endpoint",
                                 ["method", "path"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("headstart_predictions_total", "Predictions by model version, arm and class",
                                   ["model", "version", "arm", "label"], registry=r)
        self.batch_size = Histogram("headstart_inference_batch_size", "Inputs per micro-batch",
                                    ["model", "version"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.batch_seconds = Histogram("headstart_inference_batch_seconds", "Seconds per micro-batch",
                                       ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.serving = Gauge("headstart_serving_version", "Model version served by each arm", ["model", "arm"],
                             registry=r)
        self.shadow_errors = Counter("headstart_shadow_errors_total", "Shadow predictions that failed",
                                     ["model", "version"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: counts every HTTP request by endpoint and status and times it."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            path = scope["path"] if scope["path"] in ROUTES else "other"
            self.metrics.requests.labels(scope["method"], path, str(status[0])).inc()
            self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - start)

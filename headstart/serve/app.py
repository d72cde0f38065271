"""The HTTP service: /predict, /feedback, /health, /metrics and the admin endpoints, for one registered model.

Every answered input is logged (see headstart.serve.log) before its response is sent; a request the service
refuses (4xx) logs nothing. See README, "Registry and serving".
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from headstart.errors import HeadstartError
from headstart.registry import Registry, parse_spec
from headstart.serve import schemas
from headstart.serve.batching import ShuttingDown
from headstart.serve.inputs import BadInput, Item, parse_json, parse_multipart
from headstart.serve.limits import BodyLimit
from headstart.serve.log import PredictionLog, database_url
from headstart.serve.metrics import RequestMetrics, ServiceMetrics
from headstart.serve.models import Arm, load_arm
from headstart.serve.router import Router


@dataclass
class ServeConfig:
    """What `headstart serve` is asked to do (see the CLI options for each field)."""

    model: str
    registry: Path | None = None
    candidate: str | None = None
    mode: str = "ab"
    split: float = 0.1
    db: str | None = None
    runtime: str = "auto"
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_inputs: int = 64
    max_body_mb: float = 10.0
    admin_token_env: str = "HEADSTART_ADMIN_TOKEN"
    seed: int | None = None

    def check(self) -> None:
        """Refuse settings that cannot work, before the service starts: versions, their files and variant, the
        prediction log's database (the models load when it starts)."""
        from headstart.serve.router import MODES

        from headstart.serve.models import choose_variant

        registry = Registry(self.registry)
        name, _ = parse_spec(self.model)
        if self.candidate and parse_spec(self.candidate)[0] != name:
            raise HeadstartError(f"--candidate {self.candidate} must be a version of the served model '{name}' "
                                 f"(e.g. {name}@candidate).")
        for spec in filter(None, (self.model, self.candidate)):
            version = registry.resolve(spec)
            version.verify()
            choose_variant(version, self.runtime)
        PredictionLog(database_url(self.db, registry.root / name / "predictions.sqlite")).close()
        if self.mode not in MODES:
            raise HeadstartError(f"--mode {self.mode}: use ab or shadow.")
        if not 0 <= self.split <= 1:
            raise HeadstartError(f"--split {self.split}: the candidate's share of traffic is between 0 and 1.")
        for name in ("max_batch_size", "max_inputs", "max_body_mb"):
            if getattr(self, name) <= 0:
                raise HeadstartError(f"--{name.replace('_', '-')} must be positive.")


class Service:
    """The state behind the endpoints: registry, router with its arms, prediction log and metrics."""

    def __init__(self, config: ServeConfig, metrics: ServiceMetrics):
        self.config = config
        self.registry = Registry(config.registry)
        self.name, _ = parse_spec(config.model)
        self.metrics = metrics
        self.log = PredictionLog(database_url(config.db, self.registry.root / self.name / "predictions.sqlite"))
        self.db = ThreadPoolExecutor(1, thread_name_prefix="prediction-log")  # one writer: SQLite wants it so
        self.reload_lock = asyncio.Lock()
        self.router: Router | None = None

    async def _arm(self, spec: str) -> Arm:
        return await self._load(await asyncio.to_thread(self.registry.resolve, spec))

    async def _load(self, version) -> Arm:
        c = self.config
        return await load_arm(version, c.runtime, self.metrics, c.max_batch_size, c.max_wait_ms)

    async def start(self) -> None:
        production = await self._arm(self.config.model)
        candidate = await self._arm(self.config.candidate) if self.config.candidate else None
        self.router = Router(production, candidate, self.config.mode, self.config.split, self.config.seed)
        self._gauges()

    async def stop(self) -> None:
        for arm in self.router.arms().values():
            arm.retire()
            arm.close()  # even with requests in flight (a forced shutdown): they are answered or refused
            await arm.closed
        self.db.shutdown(wait=True)
        self.log.close()

    def _gauges(self) -> None:
        self.metrics.serving.clear()
        for role, arm in self.router.arms().items():
            self.metrics.serving.labels(self.name, role).set(arm.number)

    async def in_db(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.db, function, *args)

    async def follow_registry(self) -> None:
        """Serve the registry's production version (and candidate, when one is served) after an admin change:
        the new model loads while the old one answers; then the arms are swapped."""
        targets = {"production": f"{self.name}@production"}
        if self.config.candidate:
            targets["candidate"] = self.config.candidate
        for role, spec in targets.items():
            current = getattr(self.router, role)
            try:
                version = await asyncio.to_thread(self.registry.resolve, spec)
            except HeadstartError:
                if role == "candidate":  # the candidate alias was cleared (promoted): serve production alone
                    self.router.replace(role, None)
                    continue
                raise
            if current is None or current.number != version.number:
                self.router.replace(role, await self._load(version))
        self._gauges()

    def rows(self, items: list[Item], results: list[dict], arm: Arm, role: str, request_id: str,
             latency_ms: float) -> list[dict]:
        created = datetime.now(timezone.utc)
        return [{"id": uuid.uuid4().hex, "created": created, "request_id": request_id, "model": arm.name,
                 "version": arm.number, "arm": role, "runtime": arm.runtime, "input_hash": item.fingerprint,
                 "text_length": item.text_length,
                 "image_width": item.image_size[0] if item.image_size else None,
                 "image_height": item.image_size[1] if item.image_size else None,
                 "label": result["label"], "confidence": result["confidence"],
                 "probabilities": result["probabilities"], "embedding": item.sketch, "latency_ms": latency_ms}
                for item, result in zip(items, results)]

    def health(self) -> dict:
        router = self.router
        arms = {role: {"model": a.name, "version": a.number, "runtime": a.runtime} for role, a in router.arms().items()}
        return {"status": "ok", "modality": router.production.modality, "labels": router.production.labels,
                "production": arms["production"], "candidate": arms.get("candidate"),
                "mode": router.mode if router.candidate else None, "split": router.split if router.candidate else None}

    def count(self, rows: list[dict]) -> None:
        for row in rows:
            self.metrics.predictions.labels(row["model"], str(row["version"]), row["arm"], row["label"]).inc()


async def _shadow(service: Service, arm: Arm, items: list[Item], request_id: str) -> list[dict]:
    """The shadow arm's rows; a failure of the shadow is counted, never passed on to the caller."""
    start = time.perf_counter()
    try:
        results = await arm.predict([item.value for item in items])
    except Exception:
        service.metrics.shadow_errors.labels(arm.name, str(arm.number)).inc()
        return []
    return service.rows(items, results, arm, "shadow", request_id, (time.perf_counter() - start) * 1000)


def create_app(config: ServeConfig) -> FastAPI:
    """The FastAPI application for `config`; the models load when it starts (its lifespan)."""
    config.check()
    service_metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = Service(config, service_metrics)
        await service.start()
        app.state.service = service
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="headstart", version="1", lifespan=lifespan,
                  description=f"Predictions of the registered model {config.model}, every one logged.")
    bearer = HTTPBearer(auto_error=False, description=f"The token in ${config.admin_token_env}.")
    max_bytes = int(config.max_body_mb * 1_000_000)
    bad = {status: {"model": schemas.Error} for status in (400, 413, 415, 422, 503)}

    @app.exception_handler(BadInput)
    async def refuse(_request: Request, exc: BadInput):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        """FastAPI's list of validation errors as one sentence, like every other refusal; a body that is not JSON
        is a 400, as for /predict."""
        errors = exc.errors()
        if any(error["type"] == "json_invalid" for error in errors):
            return JSONResponse({"detail": "The request body is not valid JSON."}, status_code=400)
        problems = "; ".join(f"{'.'.join(str(part) for part in error['loc'][1:]) or 'the body'}: {error['msg']}"
                             for error in errors)
        return JSONResponse({"detail": f"The request is not valid: {problems}."}, status_code=422)

    @app.exception_handler(ShuttingDown)
    async def stopping(_request: Request, exc: ShuttingDown):
        return JSONResponse({"detail": str(exc)}, status_code=503)

    def admin(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        token = os.environ.get(config.admin_token_env)
        if not token:
            raise HTTPException(403, f"Admin endpoints are disabled: start the service with the environment "
                                     f"variable {config.admin_token_env} set to a secret token.")
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(401, "Missing or wrong admin token: send 'Authorization: Bearer <token>'.",
                                headers={"WWW-Authenticate": "Bearer"})

    predict_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schemas.PredictJSON.model_json_schema()},
        "multipart/form-data": {"schema": schemas.PredictMultipart.model_json_schema()}}}}

    @app.post("/predict", response_model=schemas.PredictResponse, responses=bad, openapi_extra=predict_body)
    async def predict(request: Request):
        """Classify texts (JSON `{"texts": [...]}`) or images (JSON `{"images": [base64, ...]}` or multipart
        file uploads). Each input gets a label, class probabilities, a prediction id and the model version."""
        service: Service = request.app.state.service
        start = time.perf_counter()
        modality = service.router.production.modality  # every arm has it (checked by the router)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            items = parse_json(await request.body(), modality, config.max_inputs)
        elif kind == "multipart/form-data":
            items = await parse_multipart(request, modality, config.max_inputs, max_bytes)
        else:
            raise BadInput(415, f"Content-Type {kind or '(none)'} is not accepted: send application/json, or "
                                "multipart/form-data with image files.")
        request_id = uuid.uuid4().hex
        inputs = [item.value for item in items]
        arm, role, shadow = service.router.route()  # no await between routing and holding the arm
        with arm.use():
            if shadow is None:
                results = await arm.predict(inputs)
                shadow_rows = []
            else:
                with shadow.use():
                    results, shadow_rows = await asyncio.gather(arm.predict(inputs),
                                                                _shadow(service, shadow, items, request_id))
            rows = service.rows(items, results, arm, role, request_id, (time.perf_counter() - start) * 1000)
        try:
            await service.in_db(service.log.write_predictions, rows + shadow_rows)
        except Exception as exc:
            raise HTTPException(503, f"The prediction could not be logged ({type(exc).__name__}); try again.")
        service.count(rows + shadow_rows)
        return {"request_id": request_id, "predictions": [
            {"id": row["id"], "label": row["label"], "confidence": row["confidence"],
             "probabilities": row["probabilities"], "model": row["model"], "version": row["version"],
             "arm": row["arm"]} for row in rows]}

    @app.post("/feedback", response_model=schemas.FeedbackResponse,
              responses={404: {"model": schemas.Error}, 422: {"model": schemas.Error}})
    async def feedback(body: schemas.FeedbackRequest, request: Request):
        """Record the true label of an earlier prediction."""
        service: Service = request.app.state.service
        row = await service.in_db(service.log.prediction, body.prediction_id)
        if row is None:
            raise HTTPException(404, f"No prediction with id {body.prediction_id}: send an id returned by /predict.")
        labels = list(row.probabilities)
        if body.label not in labels:
            raise HTTPException(422, f"'{body.label}' is not a label of {row.model}@{row.version} "
                                     f"(labels: {', '.join(labels)}).")
        await service.in_db(service.log.write_feedback, body.prediction_id, body.label)
        return {"prediction_id": row.id, "label": body.label, "predicted": row.label,
                "correct": row.label == body.label, "version": row.version}

    @app.get("/health", response_model=schemas.Health)
    async def health(request: Request):
        """The versions served and how traffic is split."""
        return request.app.state.service.health()

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format."}})
    async def prometheus_metrics():
        """Prometheus metrics: requests, latencies, predictions per class and version, batch sizes."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service_metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def changed(service: Service, change, *args) -> dict:
        """Change the registry's aliases and serve what they name now; if that cannot be loaded, put the aliases
        back, so the registry and the service agree on what production is."""
        async with service.reload_lock:
            before = await asyncio.to_thread(service.registry.aliases, service.name)
            await asyncio.to_thread(change, *args)
            try:
                await service.follow_registry()
            except Exception as exc:
                await asyncio.to_thread(service.registry.restore_aliases, service.name, before)
                await service.follow_registry()
                raise HTTPException(409, f"The new version could not be served ({exc}); the registry's aliases "
                                         "were put back and the service goes on serving the versions it served.")
        return service.health()

    @app.post("/admin/promote", response_model=schemas.Health, dependencies=[Depends(admin)],
              responses={401: {"model": schemas.Error}, 403: {"model": schemas.Error}, 404: {"model": schemas.Error}})
    async def promote(body: schemas.PromoteRequest, request: Request):
        """Promote a version to production or candidate in the registry, and serve it (no request is dropped)."""
        service: Service = request.app.state.service
        try:
            return await changed(service, service.registry.promote, service.name, body.version, body.to)
        except HeadstartError as exc:
            raise HTTPException(404, str(exc))

    @app.post("/admin/rollback", response_model=schemas.Health, dependencies=[Depends(admin)],
              responses={401: {"model": schemas.Error}, 403: {"model": schemas.Error}, 409: {"model": schemas.Error}})
    async def rollback(request: Request):
        """Point production back at the previous production version, and serve it (no request is dropped)."""
        service: Service = request.app.state.service
        try:
            return await changed(service, service.registry.rollback, service.name)
        except HeadstartError as exc:
            raise HTTPException(409, str(exc))

    app.add_middleware(RequestMetrics, metrics=service_metrics)
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    return app

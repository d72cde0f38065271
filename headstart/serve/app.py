"""The HTTP service: /predict, /feedback, /health, /metrics and the admin endpoints, for one registered model.

Every answered input is logged (see headstart.serve.log) before its response is sent; a request the service
refuses (4xx) logs nothing. See README, "Registry and serving".
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import time
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from headstart.errors import HeadstartError
from headstart.registry import ALIASES, Registry, Version, parse_spec
from headstart.serve import schemas
from headstart.serve.batching import ShuttingDown
from headstart.serve.inputs import BadInput, Item, parse_json, parse_multipart
from headstart.serve.limits import BodyLimit
from headstart.serve.log import PredictionLog, database_url, driver_message
from headstart.serve.metrics import RequestMetrics, ServiceMetrics
from headstart.serve.models import Arm, check_pair, load_predictor
from headstart.serve.router import Router

PREDICTION_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as `Service.rows` makes them


@dataclass
class ServeConfig:
    """What `headstart serve` is asked to do (see the CLI options for each field)."""

    model: str
    registry: Path | None = None
    candidate: str | None = None
    mode: str | None = None  # ab unless given
    split: float | None = None  # 0.1 unless given
    db: str | None = None
    runtime: str = "auto"
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_inputs: int = 64
    max_body_mb: float = 10.0
    admin_token_env: str = "HEADSTART_ADMIN_TOKEN"
    seed: int | None = None

    def __post_init__(self):
        """`mode` and `split` say how a candidate is served: refused without one (and `split` in shadow mode, where
        every request runs on both arms); their defaults are filled in here."""
        given = [f"--{name}" for name in ("mode", "split") if getattr(self, name) is not None]
        if given and not self.candidate:
            raise HeadstartError(f"{' and '.join(given)} set{'s' * (len(given) == 1)} how a candidate is served, and "
                                 f"there is none: give --candidate NAME@candidate, or leave "
                                 f"{'it' if len(given) == 1 else 'them'} out.")
        if self.split is not None and self.mode == "shadow":
            raise HeadstartError(f"--split {self.split}: in shadow mode every request runs on both arms. Leave --split "
                                 "out, or use --mode ab.")
        self.mode = "ab" if self.mode is None else self.mode
        self.split = 0.1 if self.split is None else self.split

    def check(self) -> dict[str, Version]:
        """Refuse settings that cannot work, before the service starts: options, versions (a candidate of the same
        model and modality), the prediction log's database. Returns the versions to serve, by role."""
        from headstart.serve.router import MODES

        if self.mode not in MODES:
            raise HeadstartError(f"--mode {self.mode}: use ab or shadow.")
        if not 0 <= self.split <= 1:
            raise HeadstartError(f"--split {self.split}: the candidate's share of traffic is between 0 and 1.")
        for option in ("max_batch_size", "max_inputs", "max_body_mb", "max_wait_ms"):
            value, zero = getattr(self, option), option == "max_wait_ms"  # not waiting is fine; no body is not
            if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
                raise HeadstartError(f"--{option.replace('_', '-')} {value}: give a "
                                     f"{'non-negative' if zero else 'positive'} finite number.")
        registry = Registry(self.registry)
        name, _ = parse_spec(self.model)
        if self.candidate and parse_spec(self.candidate)[0] != name:
            raise HeadstartError(f"--candidate {self.candidate} must be a version of the served model '{name}' "
                                 f"(e.g. {name}@candidate).")
        versions = {role: registry.resolve(spec) for role, spec in (("production", self.model),
                                                                    ("candidate", self.candidate)) if spec}
        check_pair(versions["production"], versions.get("candidate"))
        PredictionLog(self.log_url()).close()
        return versions

    def log_url(self) -> str:
        """The prediction log's database URL: an SQLite file beside the model's versions unless `db` names one."""
        return database_url(self.db, Registry(self.registry).root / parse_spec(self.model)[0] / "predictions.sqlite")


class Service:
    """The state behind the endpoints: registry, router with its arms, prediction log and metrics."""

    def __init__(self, config: ServeConfig, metrics: ServiceMetrics):
        self.config = config
        self.registry = Registry(config.registry)
        self.name, _ = parse_spec(config.model)
        self.metrics = metrics
        self.log = PredictionLog(config.log_url())
        self.db = ThreadPoolExecutor(1, thread_name_prefix="prediction-log")  # one writer: SQLite wants it so
        self.reload_lock = asyncio.Lock()
        self.router: Router | None = None

    def _arm(self, version: Version, predictor, runtime: str) -> Arm:
        return Arm(version, predictor, runtime, self.metrics, self.config.max_batch_size, self.config.max_wait_ms)

    async def _load(self, version: Version) -> Arm:
        """Load a version off the event loop (reading weights takes a while)."""
        return self._arm(version, *await asyncio.to_thread(load_predictor, version, self.config.runtime))

    async def start(self, loaded: dict[str, tuple]) -> None:
        """Serve the (version, predictor, runtime) loaded before the start, by role."""
        arms = {role: self._arm(*value) for role, value in loaded.items()}
        c = self.config
        self.router = Router(arms["production"], arms.get("candidate"), c.mode, c.split, c.seed)
        self._gauges()

    async def stop(self) -> None:
        """Answer or refuse the requests in flight, then close the prediction log once its writes are done."""
        try:
            for arm in self.router.arms().values():
                arm.retire()
                arm.close()  # even with requests in flight (a forced shutdown): they are answered or refused
                await arm.closed
        finally:  # the log is closed even when a second Ctrl-C cancels the wait
            self.db.shutdown(wait=True)
            self.log.close()

    def _gauges(self) -> None:
        self.metrics.serving.clear()
        for role, arm in self.router.arms().items():
            self.metrics.serving.labels(self.name, self.router.label(role)).set(arm.number)

    async def in_db(self, function, *args):
        """Run a prediction log call on the database thread; a database that fails gets the request a 503."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.db, function, *args)
        except Exception as exc:
            logging.getLogger("uvicorn.error").warning("The prediction log failed (%s): %s", type(exc).__name__,
                                                       driver_message(exc))
            raise HTTPException(503, f"The prediction log is unavailable ({type(exc).__name__}); try again.") from None

    def _targets(self, alias: str) -> dict[str, Version | None]:
        """The versions the registry's production and the served candidate reference mean now (None: the
        candidate alias was cleared), checked as a pair, after a change of `alias`. A production arm started on a
        fixed version (--model NAME@3, NAME@latest) keeps it unless production itself changed."""
        follows = alias == "production" or parse_spec(self.config.model)[1] == "production"
        production = self.registry.resolve(f"{self.name}@production") if follows else self.router.production.version
        targets, kept = {"production": production}, None
        if self.config.candidate:
            ref = parse_spec(self.config.candidate)[1]
            cleared = ref in ALIASES and ref not in self.registry.aliases(self.name)["aliases"]
            try:
                targets["candidate"] = None if cleared else self.registry.resolve(self.config.candidate)
            except HeadstartError as exc:
                if self.router.candidate is None:
                    raise
                # its folder removed by hand: the loaded candidate goes on serving, so production can still change
                kept = self.router.candidate.version
                logging.getLogger("uvicorn.error").warning("The candidate arm keeps serving version %s: %s",
                                                           kept.number, exc)
        check_pair(targets["production"], targets.get("candidate", kept))
        return targets

    async def preload(self, alias: str, number: int) -> dict[str, Arm]:
        """{role: arm} with version `number` loaded for the arm that serves `alias` (production, or the candidate
        when the served candidate is that alias); empty when no arm serves it or the arm serves that version."""
        if alias == "production":
            role = "production"
        elif self.config.candidate and parse_spec(self.config.candidate)[1] == alias:
            role = "candidate"
        else:  # no arm serves it: loaded once all the same, so the registry never names a version that cannot load
            version = await asyncio.to_thread(self.registry.version, self.name, number)
            await asyncio.to_thread(load_predictor, version, self.config.runtime)
            return {}
        current = getattr(self.router, role)
        if current is not None and current.number == number:
            return {}
        return {role: await self._load(await asyncio.to_thread(self.registry.version, self.name, number))}

    async def follow_registry(self, alias: str, preloaded: dict[str, Arm] | None = None) -> None:
        """Serve the registry's production version (and candidate, when one is served) after an admin change of
        `alias` (see `_targets`):
        the new models load while the old ones answer (a `preloaded` arm of the right version is used as it is);
        then the arms are swapped, all of them or none. Preloaded arms left unused are retired."""
        preloaded, loaded = dict(preloaded or {}), {}
        try:
            targets = await asyncio.to_thread(self._targets, alias)
            for role, version in targets.items():
                current, ready = getattr(self.router, role), preloaded.get(role)
                if version is not None and (current is None or current.number != version.number):
                    if ready is not None and ready.number == version.number:
                        loaded[role] = preloaded.pop(role)
                    else:  # none preloaded, or another writer changed the aliases since the preload
                        loaded[role] = await self._load(version)
            for role, version in targets.items():
                if version is None or role in loaded:
                    self.router.replace(role, loaded.get(role))
            self._gauges()
            loaded = {}  # served now
        finally:
            for arm in {*preloaded.values(), *loaded.values()}:
                arm.retire()

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
                "mode": router.mode if router.candidate else None,
                "split": router.split if router.candidate and router.mode == "ab" else None}  # shadow: all run both

    def count(self, rows: list[dict]) -> None:
        for row in rows:
            self.metrics.predictions.labels(row["model"], str(row["version"]), row["arm"], row["label"]).inc()


async def _shadow(service: Service, arm: Arm, items: list[Item], request_id: str, start: float) -> list[dict]:
    """The shadow arm's rows, timed from the request's arrival (`start`) as the answering arm's are; a failure of
    the shadow is counted, never passed on to the caller."""
    try:
        results = await arm.predict([item.value for item in items])
    except Exception:
        service.metrics.shadow_errors.labels(arm.name, str(arm.number)).inc()
        return []
    return service.rows(items, results, arm, service.router.label("candidate"), request_id,
                        (time.perf_counter() - start) * 1000)


def create_app(config: ServeConfig) -> FastAPI:
    """The FastAPI application for `config`. Its models load here, so one that does not load is refused before the
    service starts; their micro-batchers start with it (its lifespan)."""
    loaded = {role: (version, *load_predictor(version, config.runtime)) for role, version in config.check().items()}
    service_metrics = ServiceMetrics()
    # the multipart parser logs each malformed body it stops at, a bare line in the service's output: the 400 says it
    logging.getLogger("python_multipart").setLevel(logging.ERROR)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = Service(config, service_metrics)
        await service.start(loaded)
        app.state.service = service
        try:
            yield
        except asyncio.CancelledError:  # a second Ctrl-C: uvicorn exits at once and cancels every task
            pass
        finally:
            with suppress(asyncio.CancelledError):  # a task stop waits for was cancelled: nothing more to wait for
                await service.stop()

    app = FastAPI(title="headstart", version="1", lifespan=lifespan,
                  description=f"Predictions of the registered model {config.model}, every one logged.")
    app.state.serving = {role: (version.spec, runtime) for role, (version, _, runtime) in loaded.items()}
    bearer = HTTPBearer(auto_error=False, description=f"The token in ${config.admin_token_env}.")
    max_bytes = int(config.max_body_mb * 1_000_000)

    def errors(*statuses: int) -> dict:
        return {status: {"model": schemas.Error} for status in statuses}

    @app.exception_handler(BadInput)
    async def refuse(_request: Request, exc: BadInput):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        """FastAPI's list of validation errors as one sentence, like every other refusal; a body that is not JSON
        is a 400, and one sent as another content type (a form, curl -d's default) a 415, as for /predict."""
        errors = exc.errors()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json" and any(error["loc"][:1] == ("body",) for error in errors):
            return JSONResponse({"detail": f"Content-Type {kind or '(none)'} is not accepted: send the body as JSON, "
                                           "with Content-Type: application/json."}, status_code=415)
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

    @app.post("/predict", response_model=schemas.PredictResponse, responses=errors(400, 413, 415, 422, 503),
              openapi_extra=predict_body)
    async def predict(request: Request):
        """Classify texts (JSON `{"texts": [...]}`) or images (JSON `{"images": [base64, ...]}` or multipart
        file uploads). Each input gets a label, class probabilities, a prediction id and the model version."""
        service: Service = request.app.state.service
        start = time.perf_counter()
        modality = service.router.production.modality  # every arm has it (`check_pair`)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            # decoding images takes a while: in a thread, so the service answers other requests meanwhile
            items = await asyncio.to_thread(parse_json, await request.body(), modality, config.max_inputs)
        elif kind == "multipart/form-data":
            items = await parse_multipart(request, modality, config.max_inputs, max_bytes)
        else:
            raise BadInput(415, f"Content-Type {kind or '(none)'} is not accepted: send application/json"
                                + (", or multipart/form-data with image files." if modality == "image" else
                                   ' ({"texts": [...]}).'))
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
                                                                _shadow(service, shadow, items, request_id, start))
            rows = service.rows(items, results, arm, role, request_id, (time.perf_counter() - start) * 1000)
        await service.in_db(service.log.write_predictions, rows + shadow_rows)
        service.count(rows + shadow_rows)
        return {"request_id": request_id, "predictions": [
            {"id": row["id"], "label": row["label"], "confidence": row["confidence"],
             "probabilities": row["probabilities"], "model": row["model"], "version": row["version"],
             "arm": row["arm"]} for row in rows]}

    @app.post("/feedback", response_model=schemas.FeedbackResponse,
              responses=errors(400, 404, 413, 415, 422, 503))
    async def feedback(body: schemas.FeedbackRequest, request: Request):
        """Record the true label of an earlier prediction."""
        service: Service = request.app.state.service
        # ids are 32 hex digits: any other (with a NUL byte, which PostgreSQL refuses) names no prediction
        known = PREDICTION_ID.fullmatch(body.prediction_id)
        row = await service.in_db(service.log.prediction, body.prediction_id) if known else None
        if row is None:
            raise HTTPException(404, f"No prediction with id {body.prediction_id} in the prediction log: send an id "
                                     "returned by /predict (feedback joins its prediction in the log, so it cannot "
                                     "be taken for one logged before the log was rotated).")
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

    async def in_registry(function, *args):
        """A registry call off the event loop: one it refuses is a 409, a file system failure a 503."""
        try:
            return await asyncio.to_thread(function, *args)
        except HeadstartError as exc:
            raise HTTPException(409, str(exc)) from None
        except OSError as exc:
            raise HTTPException(503, f"The registry could not be changed ({exc}); try again.") from None

    async def changed(service: Service, alias: str, target, change) -> dict:
        """Point `alias` at version `target()` with `change()` and serve what the aliases name then. The version
        loads first, while the registry is unchanged: one that cannot be served is a 409 and nothing is written, so
        the registry never names a version the service did not load. A change the registry refuses is a 409; so is
        one whose versions cannot be served after it was written, after the aliases are put back (so the registry
        and the service agree on what production is) unless another writer changed them since."""
        registry, name = service.registry, service.name
        async with service.reload_lock:
            number = await in_registry(target)
            try:
                preloaded = await service.preload(alias, number)
            except Exception as exc:
                raise HTTPException(409, f"The new version could not be served ({exc}); the registry's aliases were "
                                         "not changed, and the service goes on serving the versions it served.") \
                    from None
            try:
                before, after = await in_registry(registry.change_aliases, name, change)
            except BaseException:
                for arm in preloaded.values():
                    arm.retire()
                raise
            try:
                await service.follow_registry(alias, preloaded)
            except Exception as exc:
                restored = await asyncio.to_thread(registry.restore_aliases, name, before, after)
                what = ("the registry's aliases were put back" if restored else "the registry's aliases were changed "
                        "again meanwhile by another writer, and are left as that writer set them")
                raise HTTPException(409, f"The new version could not be served ({exc}); {what}, and the service "
                                         "goes on serving the versions it served.") from None
        return service.health()

    @app.post("/admin/promote", response_model=schemas.Health, dependencies=[Depends(admin)],
              responses=errors(400, 401, 403, 404, 409, 413, 415, 422))
    async def promote(body: schemas.PromoteRequest, request: Request):
        """Promote a version to production or candidate in the registry, and serve it (no request is dropped)."""
        service: Service = request.app.state.service
        registry, name = service.registry, service.name
        numbers = await asyncio.to_thread(registry.numbers, name)
        if body.version not in numbers:
            raise HTTPException(404, f"{name} has no version {body.version} (versions: "
                                     f"{', '.join(map(str, numbers))}).")
        return await changed(service, body.to, lambda: body.version,
                             lambda: registry.promote(name, body.version, body.to))

    @app.post("/admin/rollback", response_model=schemas.Health, dependencies=[Depends(admin)],
              responses=errors(401, 403, 409))
    async def rollback(request: Request):
        """Point production back at the previous production version, and serve it (no request is dropped)."""
        service: Service = request.app.state.service
        registry, name = service.registry, service.name
        return await changed(service, "production", lambda: registry.rollback_target(name),
                             lambda: registry.rollback(name))

    # the metrics wrap the body limit, so a body refused for its declared length is counted too
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    app.add_middleware(RequestMetrics, metrics=service_metrics)
    return app

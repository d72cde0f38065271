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


@pytest.fixture(scope="session")
def postgres_url():
    if not BINARIES:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql")
    bin_dir = Path(BINARIES[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="headstart-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
    data, port = root / "data", _free_port()
    subprocess.run(_as_postgres_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                      "-E", "UTF8"]), check=True, capture_output=True)
    subprocess.run(_as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"),
                                      "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_predictions_and_feedback_are_logged_in_postgresql(registry, pngs, postgres_url):  # noqa: F811
    with client(registry, db=postgres_url) as api:
        predictions = api.post("/predict", json={"images": [b64(x) for x in pngs[:3]]}).json()["predictions"]
        first = predictions[0]
        assert api.post("/feedback", json={"prediction_id": first["id"], "label": "digit2"}).status_code == 200
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

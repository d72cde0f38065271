"""Load test of `headstart serve` on loopback: N requests at concurrency C, with micro-batching on and off.

For each setting a fresh `headstart serve` process logs to a fresh SQLite file; the test checks that no request
got a 5xx and that every answered input was logged exactly once (rows counted, prediction ids matched), and
reports p50 / p99 latency and throughput. Writes bench/results/serve_load.json and prints a markdown table.

    python bench/serve_load.py bbc@production --registry ~/.headstart/registry
    python bench/serve_load.py digits@1 --registry /tmp/reg --requests 500 --concurrency 8 --inputs img_folder/

Inputs: the test split of the version's source run (default; its folder must still be there), or --inputs
(files, folders, tables, as `headstart predict` reads them). Needs the `bench` extra (httpx) and a version in a
registry: `headstart compress RUN` (for the int8 variant --runtime auto serves), `headstart registry push RUN
--name bbc --registry REG`, `headstart registry promote bbc 1 --to production --registry REG`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "serve_load.json"
SETTINGS = {"batching on": ["--max-batch-size", "32", "--max-wait-ms", "5"], "batching off": ["--max-batch-size", "1"]}


def payloads(version, inputs: list[str], text_column: str | None) -> list[dict]:
    """One JSON body per input of the source run's test split, or of `inputs`."""
    from headstart.inputs import gather_inputs

    modality = version.meta["modality"]
    if inputs:
        items, _ = gather_inputs(inputs, modality, text_column)
    else:
        from headstart.evaluate.examples import run_parts
        from headstart.run import Run

        run_dir = Path(version.meta["source"])
        _, parts = run_parts(run_dir, Run(run_dir).config.data, version.meta["labels"], [])
        items = list(parts["test"]["input"])
    if modality == "text":
        return [{"texts": [text]} for text in items]
    return [{"images": [base64.b64encode(Path(path).read_bytes()).decode()]} for path in items]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, bodies: list[dict], requests: int, concurrency: int) -> tuple[list[float], list[int], list]:
    import httpx

    latencies, statuses, ids = [], [], []
    counter = iter(range(requests))

    async def worker(client):
        for i in counter:
            start = time.perf_counter()
            reply = await client.post("/predict", json=bodies[i % len(bodies)])
            latencies.append(time.perf_counter() - start)
            statuses.append(reply.status_code)
            if reply.status_code == 200:
                ids.extend(p["id"] for p in reply.json()["predictions"])

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, statuses, ids


def run_setting(spec: str, registry: Path, flags: list[str], bodies: list[dict], args) -> dict:
    import httpx
    from sqlalchemy import select

    from headstart.serve.log import PredictionLog, PredictionRow

    folder = Path(tempfile.mkdtemp(prefix="serve-load-"))
    db, port = f"sqlite:///{folder / 'predictions.sqlite'}", free_port()
    command = [sys.executable, "-m", "headstart.cli", "serve", "--model", spec, "--registry", str(registry),
               "--port", str(port), "--db", db, "--runtime", args.runtime, *flags]
    server = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the service did not start: {' '.join(command)}")
                time.sleep(0.5)
        _, _, warm_ids = asyncio.run(load(url, bodies, min(200, args.requests), args.concurrency))  # warm-up
        log = PredictionLog(db)
        start = time.perf_counter()
        latencies, statuses, ids = asyncio.run(load(url, bodies, args.requests, args.concurrency))
        seconds = time.perf_counter() - start
        with log.engine.connect() as connection:
            logged = [row[0] for row in connection.execute(select(PredictionRow.id))]
        log.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    ms = np.array(latencies) * 1000
    return {"requests": args.requests, "concurrency": args.concurrency, "runtime": health["production"]["runtime"],
            "version": health["production"]["version"], "status_counts": {str(s): statuses.count(s) for s in
                                                                          sorted(set(statuses))},
            "server_errors": sum(s >= 500 for s in statuses), "rows_logged": len(logged) - len(warm_ids),
            "logged_exactly_once": len(logged) == len(set(logged)) == len(warm_ids) + len(ids)
            and set(logged) == set(warm_ids) | set(ids),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "throughput_per_s": args.requests / seconds, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="registered model: NAME@production, NAME@3, ...")
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runtime", default="auto", help="auto, torch or a variant name (as `headstart serve`)")
    parser.add_argument("--inputs", nargs="*", default=[], help="inputs instead of the source run's test split")
    parser.add_argument("--text-column", help="column of texts in a table input (default: text)")
    parser.add_argument("--only", choices=list(SETTINGS), default=None, help="run one setting only")
    args = parser.parse_args()

    from headstart.registry import Registry

    registry = Registry(args.registry)
    version = registry.resolve(args.model)
    bodies = payloads(version, args.inputs, args.text_column)
    results = {"model": version.spec, "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}, "settings": {}}
    for name, flags in SETTINGS.items():
        if args.only in (None, name):
            results["settings"][name] = run_setting(args.model, registry.root, flags, bodies, args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"\n{version.spec}, {args.requests} requests at concurrency {args.concurrency}, loopback\n")
    print("| setting | runtime | p50 ms | p99 ms | requests/s | 5xx | rows logged | logged once |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results["settings"].items():
        print(f"| {name} | {r['runtime']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['throughput_per_s']:.0f} | "
              f"{r['server_errors']} | {r['rows_logged']} | {'yes' if r['logged_exactly_once'] else 'NO'} |")
    if any(r["server_errors"] or not r["logged_exactly_once"] for r in results["settings"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()

"""`headstart serve`: the HTTP service for a registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from headstart.cli.app import app, console
from headstart.cli.registry import REGISTRY_OPTION
from headstart.errors import HeadstartError


@app.command()
def serve(
    model: str = typer.Option(..., "--model", help="Registered model to serve: NAME@production, NAME@3, NAME@latest."),
    registry: Optional[Path] = REGISTRY_OPTION,
    candidate: Optional[str] = typer.Option(None, help="A second version of the same model, e.g. NAME@candidate, "
                                                       "for A/B or shadow comparison."),
    mode: Optional[str] = typer.Option(None, help="With --candidate: ab (the default: the candidate answers --split "
                                                  "of the requests) or shadow (production answers; the candidate "
                                                  "also runs and is logged)."),
    split: Optional[float] = typer.Option(None, help="Share of requests the candidate answers in ab mode (0 to 1; "
                                                     "default 0.1)."),
    db: Optional[str] = typer.Option(None, help="Prediction log database URL: sqlite:///PATH or "
                                                "postgresql://USER:PASSWORD@HOST:PORT/DB. Default: SQLite file "
                                                "<registry>/<name>/predictions.sqlite."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes the service to the network."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    runtime: str = typer.Option("auto", help="auto (the fastest accepted ONNX Runtime variant, else PyTorch), "
                                             "torch, or the name of an accepted variant such as int8-dynamic or bf16."),
    max_batch_size: int = typer.Option(32, help="Most inputs in one micro-batch; 1 turns micro-batching off."),
    max_wait_ms: float = typer.Option(5.0, help="Longest a request waits for others to join its batch."),
    max_inputs: int = typer.Option(64, help="Most inputs in one request."),
    max_body_mb: float = typer.Option(10.0, help="Largest request body in MB."),
    admin_token_env: str = typer.Option("HEADSTART_ADMIN_TOKEN", help="Environment variable holding the bearer "
                                                                      "token of /admin/*; unset disables them."),
) -> None:
    """Serve a registered model over HTTP (FastAPI): /predict, /feedback, /health, /metrics, /admin/*."""
    import uvicorn

    from headstart.serve import ServeConfig, create_app
    from headstart.serve.log import shown_url

    config = ServeConfig(model=model, registry=registry, candidate=candidate, mode=mode, split=split, db=db,
                         runtime=runtime, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                         max_inputs=max_inputs, max_body_mb=max_body_mb, admin_token_env=admin_token_env)
    _check_port(host, port)
    service = create_app(config)  # refuses settings that cannot work before saying anything is served
    arms = {role: f"{spec} ({runtime})" for role, (spec, runtime) in service.state.serving.items()}
    both = "" if candidate is None else f" with candidate {arms['candidate']} " + (
        "in its shadow" if config.mode == "shadow" else f"answering {config.split:.0%} of requests")
    console.print(f"Serving {arms['production']}{both} on http://{host}:{port} (API: http://{host}:{port}/docs); "
                  f"predictions logged to {shown_url(config.log_url())}", markup=False, soft_wrap=True)
    uvicorn.run(service, host=host, port=port, log_level="warning")


def _check_port(host: str, port: int) -> None:
    """Refuse an address that cannot be bound (a host that does not resolve or is not this machine's, a port in use
    or not allowed) before anything is loaded or announced."""
    import errno
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]  # ::1 and :: are IPv6
    except socket.gaierror as exc:
        raise HeadstartError(f"--host {host}: the name does not resolve ({exc.strerror}). Give an address or name of "
                             "this machine, e.g. 127.0.0.1 (or 0.0.0.0 for every interface).") from None
    try:
        socket.create_server((host, port), family=family).close()  # with SO_REUSEADDR, as uvicorn binds
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise HeadstartError(f"--host {host}: not an address of this machine ({exc.strerror}). Give one of its "
                                 "addresses, e.g. 127.0.0.1 (or 0.0.0.0 for every interface).") from None
        raise HeadstartError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Another program may be using "
                             "the port: give another --port (or stop that program).") from None

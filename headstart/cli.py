"""The `headstart` command line. Heavy libraries are imported inside commands, so help and config errors are fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from headstart.errors import HeadstartError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune pretrained models on small labelled datasets, the way the best practitioners do.")
console = Console()


@app.command()
def fit(
    config: Optional[Path] = typer.Argument(None, help="YAML run config (see README, 'The run config')."),
    set_: List[str] = typer.Option([], "--set", help="Override a config field: --set train.max_epochs=3 (repeatable)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder from its last checkpoint."),
    overwrite: bool = typer.Option(False, help="Replace an existing run folder of the same name."),
) -> None:
    """Train a model: head first, then gradual unfreezing; writes runs/<name>/ with the best model."""
    from headstart.train.fit import fit as run_fit, is_worker

    run = run_fit(config, set_, resume=resume, overwrite=overwrite)
    if is_worker():
        return  # a DDP worker process: the first process reports
    results = run.results
    table = Table(title=f"{run.config.name}: test metrics (best epoch {results['best_epoch']})")
    for key in ("test_acc", "test_f1", "test_loss"):
        table.add_column(key)
    table.add_row(*(f"{results['test'][k]:.4f}" for k in ("test_acc", "test_f1", "test_loss")))
    console.print(table)
    console.print(f"Run folder: {run.path}   model: {run.model_dir}")


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., help="A model folder (runs/<name>/model) or a run folder."),
    inputs: List[str] = typer.Argument(..., help="Image files or folders; or texts, .txt files, CSV / JSONL tables."),
    text_column: str = typer.Option("text", help="Column holding the texts in CSV / JSONL inputs."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per input."),
    top: int = typer.Option(3, help="How many classes to show per input."),
) -> None:
    """Predict labels with probabilities for images or texts."""
    from headstart.predict import check_images, gather_inputs, load

    if (model_dir / "model" / "config.json").is_file():
        model_dir = model_dir / "model"
    predictor = load(model_dir)
    items, names = gather_inputs(inputs, predictor.modality, text_column)
    if predictor.modality == "image":
        check_images(items)
    if not items:
        raise HeadstartError("No inputs found: give image files, a folder of images, or texts.")
    results = predictor.predict(items)
    if as_json:
        for name, result in zip(names, results):
            print(json.dumps({"input": name, **result}))
        return
    table = Table(show_header=True)
    table.add_column("input")
    table.add_column("label")
    table.add_column("probabilities")
    for name, result in zip(names, results):
        ranked = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])[:top]
        table.add_row(name, result["label"], "  ".join(f"{k} {v:.3f}" for k, v in ranked))
    console.print(table)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `headstart fit` (runs/<name>)."),
    data: Optional[str] = typer.Option(None, help="Evaluate on another data source (bundled name, folder or table, "
                                                  "read with the run's column settings) instead of the test split."),
    slice_by: List[str] = typer.Option([], "--slice-by", help="A metadata column to report metrics per value of "
                                                             "(repeatable), besides evaluate.slice_by."),
    out: Optional[Path] = typer.Option(None, help="Folder for report.html and metrics.json. Default: the run folder, "
                                                  "or <run>/evaluations/<source name> with --data."),
    set_: List[str] = typer.Option([], "--set", help="Override an evaluate setting (--set evaluate.bootstrap=200), or "
                                                     "say how to read --data (--set data.image_column=path). Repeatable."),
) -> None:
    """Evaluate a run's best model: report.html and metrics.json with metrics, slices, baselines, robustness, latency."""
    from headstart.evaluate import evaluate_run, output_dir, summary_rows

    if not (run_dir / "config.yaml").is_file():
        raise HeadstartError(f"{run_dir} is not a run folder (no config.yaml in it). Give the folder written by "
                             "`headstart fit`, e.g. runs/<name>.")
    metrics = evaluate_run(run_dir, data=data, slice_by=slice_by, output=out, overrides=set_)
    table = Table(title=f"{metrics['run']}: {metrics['data']['scope']} of {metrics['data']['source']} "
                        f"({metrics['data']['examples']} examples)")
    for column in ("metric", "value", "95% CI"):
        table.add_column(column)
    for row in summary_rows(metrics):
        table.add_row(*row)
    console.print(table)
    folder = output_dir(run_dir, data, out)
    console.print(f"Report: {folder / 'report.html'}   metrics: {folder / 'metrics.json'}")


@app.command()
def compress(
    path: Path = typer.Argument(..., help="A run folder (runs/<name>) or a model folder (runs/<name>/model)."),
    method: str = typer.Option("auto", help="auto, dynamic, static, qat or bf16 (see README, 'Compression')."),
    budget: float = typer.Option(1.0, help="Most accuracy a variant may lose, in points; a variant that loses more "
                                           "is marked rejected."),
    data: Optional[str] = typer.Option(None, help="Labelled test data (bundled name, folder or table) instead of "
                                                  "the run's test split; required for a model folder without its run."),
    calibration: Optional[str] = typer.Option(None, help="Labelled calibration data instead of the run's "
                                                         "validation split."),
    set_: List[str] = typer.Option([], "--set", help="Say how to read --data / --calibration: --set "
                                                     "data.image_column=path (repeatable)."),
    latency: bool = typer.Option(True, help="Time every variant (batch 1 and batch 32, each in a fresh process)."),
    force_calibration: bool = typer.Option(False, help="Use a calibration set that fails the checks (one class, "
                                                       "too few examples); the report marks it broken."),
    qat_epochs: int = typer.Option(2, help="Epochs of quantization-aware training."),
    qat_lr: float = typer.Option(2e-5, help="Learning rate of quantization-aware training."),
) -> None:
    """Compress a model: ONNX, bf16 and int8 variants, each compared with the full model on the test split."""
    import yaml

    from headstart.compress import compress as run_compress
    from headstart.compress.report import TERMINAL_COLUMNS, rows

    settings = {}
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("data.") or key.count(".") != 1:
            raise HeadstartError(f"--set '{item}' must look like data.key=value, e.g. --set data.image_column=path")
        settings[key[5:]] = yaml.safe_load(value)
    metrics = run_compress(path, method=method, budget=budget, data=data, calibration_data=calibration,
                           data_settings=settings, latency=latency, force_calibration=force_calibration,
                           qat_epochs=qat_epochs, qat_lr=qat_lr)
    table = Table(title=f"Compression: {metrics['data']['scope']} of {metrics['data']['source']} "
                        f"({metrics['data']['examples']} examples), budget {budget:g} points")
    for column in TERMINAL_COLUMNS:
        table.add_column(column)
    for row in rows(metrics):
        table.add_row(*row)
    console.print(table)
    folder = Path(metrics["model"]) / "variants"
    console.print(f"Variants: {folder}   report: {folder / 'report.html'}   metrics: {folder / 'metrics.json'}")



registry_app = typer.Typer(no_args_is_help=True, help="Versioned models: push, list, show, diff, promote, rollback.")
app.add_typer(registry_app, name="registry")
REGISTRY_OPTION = typer.Option(None, "--registry", help="Registry folder. Default: $HEADSTART_REGISTRY or "
                                                        "~/.headstart/registry.")


def _registry(path: Optional[Path]):
    from headstart.registry import Registry

    return Registry(path)


def _version_line(version, aliases: dict) -> list[str]:
    marks = [alias for alias, number in aliases.items() if number == version.number]
    test = version.meta["metrics"].get("test.test_acc")
    return [str(version.number), ", ".join(marks), version.meta["created"], str(version.meta["parent"] or ""),
            "" if test is None else f"{test:.4f}", ", ".join(v["name"] for v in version.meta["variants"]),
            version.meta["source"]]


@registry_app.command("push")
def registry_push(
    run_dir: Path = typer.Argument(..., help="A finished run folder (runs/<name>)."),
    name: str = typer.Option(..., "--name", help="Model name in the registry (letters, digits, . _ -)."),
    parent: Optional[int] = typer.Option(None, help="Version this one derives from. Default: the production version."),
    registry: Optional[Path] = REGISTRY_OPTION,
) -> None:
    """Register a run's model as a new immutable version."""
    version = _registry(registry).push(run_dir, name, parent=parent)
    console.print(f"Registered {version.spec} ({version.path}). Promote it with "
                  f"`headstart registry promote {name} {version.number} --to production`.")


@registry_app.command("list")
def registry_list(registry: Optional[Path] = REGISTRY_OPTION) -> None:
    """Every registered model with its versions and aliases."""
    reg = _registry(registry)
    table = Table(title=f"Registry {reg.root}")
    for column in ("model", "versions", "production", "candidate", "latest created"):
        table.add_column(column)
    for name in reg.names():
        numbers, aliases = reg.numbers(name), reg.aliases(name)["aliases"]
        table.add_row(name, str(len(numbers)), str(aliases.get("production", "")), str(aliases.get("candidate", "")),
                      reg.version(name, numbers[-1]).meta["created"])
    console.print(table)


@registry_app.command("show")
def registry_show(
    spec: str = typer.Argument(..., help="NAME (all versions), or NAME@VERSION / NAME@production / NAME@latest."),
    registry: Optional[Path] = REGISTRY_OPTION,
) -> None:
    """A model's versions, or one version's details (labels, preprocessing, data fingerprint, metrics)."""
    reg = _registry(registry)
    if "@" in spec:
        version = reg.resolve(spec)
        print(json.dumps({k: v for k, v in version.meta.items() if k != "files"}, indent=2))
        return
    aliases = reg.aliases(spec)["aliases"]
    table = Table(title=spec)
    for column in ("version", "aliases", "created", "parent", "test acc", "variants", "source run"):
        table.add_column(column)
    for version in reg.versions(spec):
        table.add_row(*_version_line(version, aliases))
    if not table.rows:
        reg.resolve(spec + "@latest")  # explains that there is no such model
    console.print(table)


@registry_app.command("diff")
def registry_diff(
    name: str = typer.Argument(..., help="Model name."),
    a: str = typer.Argument(..., help="First version: a number, 'latest' or an alias."),
    b: str = typer.Argument(..., help="Second version."),
    registry: Optional[Path] = REGISTRY_OPTION,
) -> None:
    """Metrics of two versions side by side."""
    reg = _registry(registry)
    va, vb = reg.resolve(f"{name}@{a}"), reg.resolve(f"{name}@{b}")
    table = Table(title=f"{name}: version {va.number} against {vb.number}")
    for column in ("metric", f"v{va.number}", f"v{vb.number}", "change"):
        table.add_column(column)
    for key, x, y in reg.diff(name, a, b):
        change = "" if x is None or y is None else f"{y - x:+.4f}"
        table.add_row(key, "" if x is None else f"{x:.4f}", "" if y is None else f"{y:.4f}", change)
    console.print(table)


@registry_app.command("promote")
def registry_promote(
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Argument(..., help="Version number to promote."),
    to: str = typer.Option("production", "--to", help="production or candidate."),
    registry: Optional[Path] = REGISTRY_OPTION,
) -> None:
    """Point the production or candidate alias at a version."""
    promoted = _registry(registry).promote(name, version, to)
    console.print(f"{promoted.spec} is now {to}.")


@registry_app.command("rollback")
def registry_rollback(
    name: str = typer.Argument(..., help="Model name."),
    registry: Optional[Path] = REGISTRY_OPTION,
) -> None:
    """Point production back at the previous production version."""
    version = _registry(registry).rollback(name)
    console.print(f"{name}@production is now version {version.number}.")


@app.command()
def serve(
    model: str = typer.Option(..., "--model", help="Registered model to serve: NAME@production, NAME@3, NAME@latest."),
    registry: Optional[Path] = REGISTRY_OPTION,
    candidate: Optional[str] = typer.Option(None, help="A second version of the same model, e.g. NAME@candidate, "
                                                       "for A/B or shadow comparison."),
    mode: str = typer.Option("ab", help="With --candidate: ab (the candidate answers --split of the requests) or "
                                        "shadow (production answers; the candidate also runs and is logged)."),
    split: float = typer.Option(0.1, help="Share of requests the candidate answers in ab mode (0 to 1)."),
    db: Optional[str] = typer.Option(None, help="Prediction log database URL: sqlite:///PATH or "
                                                "postgresql://USER:PASSWORD@HOST:PORT/DB. Default: SQLite file "
                                                "<registry>/<name>/predictions.sqlite."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes the service to the network."),
    port: int = typer.Option(8000, help="TCP port."),
    runtime: str = typer.Option("auto", help="auto (the fastest accepted ONNX Runtime variant, else PyTorch), "
                                             "torch, or a variant name such as int8-dynamic."),
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

    config = ServeConfig(model=model, registry=registry, candidate=candidate, mode=mode, split=split, db=db,
                         runtime=runtime, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                         max_inputs=max_inputs, max_body_mb=max_body_mb, admin_token_env=admin_token_env)
    console.print(f"Serving {model} on http://{host}:{port} (API: http://{host}:{port}/docs)")
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")

def main() -> None:
    try:
        app()
    except HeadstartError as exc:
        Console(stderr=True).print(f"[bold red]Error:[/] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("Interrupted. A run continues from its last checkpoint with "
                                   "`headstart fit --resume runs/<name>`.")
        sys.exit(130)


if __name__ == "__main__":
    main()

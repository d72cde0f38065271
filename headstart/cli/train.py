"""`headstart fit`, `predict` and `evaluate`: train a model, use it, judge it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from headstart.cli.app import app, console, on_interrupt
from headstart.errors import HeadstartError


@app.command()
def fit(
    config: Optional[Path] = typer.Argument(None, help="YAML run config (see README, 'The run config')."),
    set_: List[str] = typer.Option([], "--set", help="Override a config field: --set train.max_epochs=3 (repeatable)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder from its last checkpoint."),
    overwrite: bool = typer.Option(False, help="Replace an existing run folder of the same name."),
) -> None:
    """Train a model: head first, then gradual unfreezing; writes runs/<name>/ with the best model."""
    from headstart.train.fit import fit as run_fit
    from headstart.train.processes import is_worker

    with on_interrupt():  # fit says what the interrupt left behind
        run = run_fit(config, set_, resume=resume, overwrite=overwrite)
    if is_worker():
        return  # a DDP worker process: the first process reports
    results = run.results
    # a line, not the table's title, which would wrap to the width of three columns
    console.print(f"{run.config.name}: test metrics (best epoch {results['best_epoch']})", markup=False)
    table = Table()
    for key in ("test_acc", "test_f1", "test_loss"):
        table.add_column(key)
    table.add_row(*(f"{results['test'][k]:.4f}" for k in ("test_acc", "test_f1", "test_loss")))
    console.print(table)
    console.print(f"Run folder: {run.path}   model: {run.model_dir}", markup=False)


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., help="A model folder (runs/<name>/model) or a run folder."),
    inputs: List[str] = typer.Argument(..., help="Image files, folders or tables of image paths; or texts, .txt "
                                                  "files or folders of them, CSV / JSONL / JSON / Parquet tables."),
    text_column: Optional[str] = typer.Option(None, help="Column holding the texts in table inputs (default: text)."),
    image_column: Optional[str] = typer.Option(None, help="Column holding image paths in table inputs (relative "
                                                          "ones from the table's folder); left out, the one column "
                                                          "of image file names."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per input."),
    top: int = typer.Option(3, min=1, help="How many classes to show per input."),
) -> None:
    """Predict labels with probabilities for images or texts."""
    from headstart.errors import short
    from headstart.inputs import gather_inputs
    from headstart.predict import load

    predictor = load(model_dir)
    items, names = gather_inputs(inputs, predictor.modality, text_column, image_column)
    if not items:
        raise HeadstartError(f"No inputs found in {', '.join(inputs)}: give image files, a folder of images, texts, "
                             "or a table with rows.")
    results = predictor.predict(items, progress=True)
    if as_json:
        for name, result in zip(names, results):
            print(json.dumps({"input": name, **result}))
        return
    table = Table(show_header=True)
    table.add_column("input")
    table.add_column("label")
    table.add_column("probabilities")
    for item, name, result in zip(items, names, results):
        ranked = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])[:top]
        shown = short(name) if predictor.modality == "text" and name == item else name  # a text argument's start
        table.add_row(*map(escape, (shown, result["label"], "  ".join(f"{k} {v:.3f}" for k, v in ranked))))
    console.print(table)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `headstart fit` (runs/<name>)."),
    data: Optional[str] = typer.Option(None, help="Evaluate on another data source (bundled name, folder or table, "
                                                  "read with the run's column settings) instead of the test split."),
    slice_by: List[str] = typer.Option([], "--slice-by", help="A metadata column to report metrics per value of "
                                                             "(repeatable), besides evaluate.slice_by."),
    out: Optional[str] = typer.Option(None, help="Folder for report.html and metrics.json. Default: the run folder, "
                                                 "or <run>/evaluations/<source name> with --data."),
    set_: List[str] = typer.Option([], "--set", help="Override an evaluate setting (--set evaluate.bootstrap=200), or "
                                                     "say how to read --data (--set data.image_column=path). Repeatable."),
) -> None:
    """Evaluate a run's best model: report.html and metrics.json with metrics, slices, baselines, robustness, latency."""
    from headstart.evaluate import evaluate_run, output_dir, summary_rows

    with on_interrupt("The earlier report.html and metrics.json, if any, are as they were."):
        metrics = evaluate_run(run_dir, data=data, slice_by=slice_by, output=out, overrides=set_)
    table = Table(title=escape(f"{metrics['run']}: {metrics['data']['scope']} of {metrics['data']['source']} "
                               f"({metrics['data']['examples']} examples)"))
    for column in ("metric", "value", "95% CI"):
        table.add_column(column)
    for row in summary_rows(metrics):
        table.add_row(*map(escape, row))  # slice values as the data holds them
    console.print(table)
    folder = output_dir(run_dir, data, Path(out) if out else None)
    console.print(f"Report: {folder / 'report.html'}   metrics: {folder / 'metrics.json'}", markup=False)

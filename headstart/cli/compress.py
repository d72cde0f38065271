"""`headstart compress`: int8, bf16 and ONNX variants, compared with the full model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from headstart.cli.app import app, console, on_interrupt
from headstart.errors import HeadstartError


@app.command()
def compress(
    path: Path = typer.Argument(..., help="A run folder (runs/<name>) or a model folder (runs/<name>/model)."),
    method: str = typer.Option("auto", help="auto, dynamic, static, qat or bf16 (see README, 'Compress')."),
    budget: float = typer.Option(1.0, help="Most accuracy a variant may lose, in points; a variant that loses more "
                                           "is marked rejected."),
    data: Optional[str] = typer.Option(None, help="Labelled test data (bundled name, folder or table) instead of "
                                                  "the run's test split; required for a model folder without its run."),
    calibration: Optional[str] = typer.Option(None, help="Labelled calibration data instead of the run's "
                                                         "validation split."),
    set_: List[str] = typer.Option([], "--set", help="Say how to read --data / --calibration: --set "
                                                     "data.image_column=path (repeatable)."),
    latency: bool = typer.Option(True, help="Time every variant (batch 1 and 32 inputs, each in a fresh process)."),
    force_calibration: bool = typer.Option(False, help="Use a calibration set that fails the checks (one class, "
                                                       "too few examples); the report marks it broken."),
    qat_epochs: int = typer.Option(2, help="Epochs of quantization-aware training."),
    qat_lr: float = typer.Option(2e-5, help="Learning rate of quantization-aware training."),
) -> None:
    """Compress a model: ONNX, bf16 and int8 variants, each compared with the full model on the test split."""
    from headstart.compress import compress as run_compress
    from headstart.compress.report import terminal_tables
    from headstart.config import override_value

    settings = {}
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("data.") or key.count(".") != 1:
            raise HeadstartError(f"--set '{item}' must look like data.key=value, e.g. --set data.image_column=path")
        settings[key[5:]] = override_value(item, value)
    with on_interrupt("The model's earlier variants, if any, are as they were: a set is swapped in whole."):
        metrics = run_compress(path, method=method, budget=budget, data=data, calibration_data=calibration,
                               data_settings=settings, latency=latency, force_calibration=force_calibration,
                               qat_epochs=qat_epochs, qat_lr=qat_lr)
    for title, columns, body in terminal_tables(metrics):
        table = Table(title=escape(title))
        table.add_column(columns[0], no_wrap=True)  # a variant's name is never cut
        for column in columns[1:]:
            table.add_column(column, overflow="fold")  # a cell too narrow goes on the next line, never ends in "…"
        for row in body:
            table.add_row(*map(escape, row))
        console.print(table)
    folder = Path(metrics["model"]) / "variants"
    console.print(f"Variants: {folder}   report: {folder / 'report.html'}   metrics: {folder / 'metrics.json'}",
                  markup=False)

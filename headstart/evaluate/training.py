"""The training curves of a run (metrics.csv): losses and validation metrics per epoch, where layer groups were
unfrozen and where the learning rate changed, and the best epoch (results.json)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from headstart.errors import HeadstartError
from headstart.files import read_json_object
from headstart.run import RESULTS_FIX

CURVES = ("train_loss", "val_loss", "val_acc", "val_f1", "lr_head", "trainable_groups")


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def training_history(run_dir: Path) -> dict | None:
    """{"epochs": [...], per-curve lists, "unfreeze_events", "lr_changes", "best_epoch"}; None without a
    metrics.csv holding epochs (none, emptied, or not headstart's)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        if frame.empty or "epoch" not in frame.columns:
            return None
        out = {"epochs": [int(e) for e in frame["epoch"]]}
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError is a ValueError
        raise HeadstartError(f"{path} cannot be read ({' '.join(str(exc).split())}): it is the run's record of its "
                             "epochs, which `headstart fit` writes. Put it back, or delete it to evaluate without "
                             "the training curves.") from None
    for column in CURVES:
        out[column] = [_number(v) for v in frame[column]] if column in frame.columns else []
    results_path = Path(run_dir) / "results.json"
    results = read_json_object(results_path, RESULTS_FIX) if results_path.is_file() else {}
    events = results.get("unfreeze_events")
    if events is None and "unfrozen" in frame.columns:
        events = [{"epoch": int(e), "group": g} for e, u in zip(frame["epoch"], frame["unfrozen"]) for g in u.split()]
    out["unfreeze_events"] = events or []
    rates = out["lr_head"]
    out["lr_changes"] = [{"epoch": out["epochs"][i], "from": rates[i - 1], "to": rates[i]}
                         for i in range(1, len(rates)) if rates[i] is not None and rates[i - 1] is not None
                         and not math.isclose(rates[i], rates[i - 1], rel_tol=1e-9)]
    out["best_epoch"] = results.get("best_epoch")
    return out

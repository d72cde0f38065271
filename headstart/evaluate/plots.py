"""The report's plots, drawn with matplotlib (Agg, no display) and returned as base64 PNG for embedding in HTML.
Each takes plain numbers from metrics.json, so a plot shows exactly what the file holds."""

from __future__ import annotations

import base64
import io

import numpy as np

MODEL_COLOR, BASE_COLOR, BAD_COLOR, MARK_COLOR = "#2563eb", "#9ca3af", "#dc2626", "#f59e0b"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # a bare Figure draws with Agg; pyplot's global state is never touched

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure) -> str:
    from matplotlib.text import Text

    for text in figure.findobj(Text):  # labels and slice values as written: "$" would start math ("$$" fails)
        text.set_parse_math(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode()


def confusion_heatmap(confusion: dict, normalized: bool) -> str:
    labels = confusion["labels"]
    rows = confusion["normalized" if normalized else "counts"]
    # a class without examples has no normalised row: blank, not zeros
    matrix = np.array([[np.nan] * len(labels) if row is None else row for row in rows], dtype=float)
    side = min(12.0, 2.5 + 0.55 * len(labels))
    figure = _figure(side + 1, side)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalized else max(1.0, np.nanmax(matrix)))
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true",
             title="row-normalised (recall on the diagonal)" if normalized else "counts")
    axes.set_xticklabels(labels, rotation=45, ha="right")
    axes.set_yticklabels(labels)
    if len(labels) <= 20:
        top = np.nanmax(matrix) or 1
        for (i, j), value in np.ndenumerate(matrix):
            if np.isnan(value):
                continue
            axes.text(j, i, f"{value:.2f}" if normalized else f"{int(value)}", ha="center", va="center",
                      fontsize=8, color="white" if value > 0.6 * (1 if normalized else top) else "black")
    return _png(figure)


def reliability_diagram(bins: list[dict], ece: float | None) -> str:
    figure = _figure(5, 4.2)
    axes = figure.add_subplot()
    width = bins[0]["upper"] - bins[0]["lower"]
    full = [b for b in bins if b["count"]]
    axes.bar([b["lower"] + width / 2 for b in full], [b["accuracy"] for b in full], width=width * 0.9,
             color=MODEL_COLOR, alpha=0.8, label="accuracy in bin")
    axes.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], "o", color=MARK_COLOR, ms=4,
              label="mean confidence in bin")
    axes.plot([0, 1], [0, 1], "--", color="black", lw=1, label="perfect calibration")
    for b in full:
        axes.text(b["lower"] + width / 2, 0.02, str(b["count"]), ha="center", fontsize=7, color="white")
    title = "reliability" + (f" (ECE {ece:.3f})" if ece is not None else "")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="top-1 confidence", ylabel="accuracy", title=title)
    axes.legend(loc="upper left", fontsize=8)
    return _png(figure)


def roc_curves(points: dict, auc: dict) -> str:
    figure = _figure(5, 4.2)
    axes = figure.add_subplot()
    for label, curve in points.items():
        value = auc.get(label)
        axes.plot(curve["fpr"], curve["tpr"], lw=1.5,
                  label=f"{label} (AUC {value:.3f})" if value is not None else label)
    axes.plot([0, 1], [0, 1], "--", color="gray", lw=1)
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (one-vs-rest)", xlim=(0, 1),
             ylim=(0, 1.01))
    axes.legend(fontsize=7, loc="lower right")
    return _png(figure)


def cost_curve(costs: dict) -> str:
    curve = costs["curve"]
    figure = _figure(6, 3.6)
    axes = figure.add_subplot()
    for name, style in (("validation", ":"), ("test", "-")):
        if any(v is not None for v in curve[name]):
            axes.plot(curve["threshold"], curve[name], style, label=f"{name} examples", color=MODEL_COLOR)
    axes.axvline(0.5, color=BASE_COLOR, lw=1.5, label="default threshold 0.5")
    if "chosen" in costs:
        axes.axvline(costs["chosen"]["threshold"], color=MARK_COLOR, lw=1.5,
                     label=f"chosen on validation: {costs['chosen']['threshold']:.3f}")
    axes.set(xlabel=f"threshold on P({costs['positive_label']})", ylabel="expected cost per example",
             title="expected cost by decision threshold")
    axes.legend(fontsize=8)
    return _png(figure)


def interval_bars(names: list[str], values: list[float], intervals: list, title: str, xlabel: str,
                  highlight: str | None = None, zero_line: bool = False) -> str:
    """Horizontal bars with 95% interval whiskers; `highlight` in red."""
    figure = _figure(6.5, 0.9 + 0.38 * len(names))
    axes = figure.add_subplot()
    y = np.arange(len(names))
    colors = [BAD_COLOR if n == highlight else MODEL_COLOR for n in names]
    axes.barh(y, values, color=colors, alpha=0.85)
    for i, (value, ci) in enumerate(zip(values, intervals)):
        if ci is not None:
            # a percentile interval need not hold the point (one group resampled: both ends round past it)
            axes.errorbar(value, i, xerr=[[max(0.0, value - ci[0])], [max(0.0, ci[1] - value)]], color="black",
                          capsize=3, lw=1)
    if zero_line:
        axes.axvline(0, color="black", lw=0.8)
    axes.set(yticks=y, xlabel=xlabel, title=title)
    axes.set_yticklabels(names, fontsize=8)
    axes.invert_yaxis()
    return _png(figure)


def training_curves(history: dict) -> str:
    from matplotlib.ticker import MaxNLocator

    epochs = history["epochs"]
    figure = _figure(12, 3.6)
    loss, metric, rate = figure.subplots(1, 3)
    for axes, columns, title in ((loss, ("train_loss", "val_loss"), "loss"), (metric, ("val_acc", "val_f1"),
                                 "validation metric"), (rate, ("lr_head",), "head learning rate")):
        for column in columns:
            values = [np.nan if v is None else v for v in history.get(column, [])]
            if values and not all(np.isnan(values)):
                axes.plot(epochs, values, "o-", ms=3, label=column)
        for event in history["unfreeze_events"]:
            axes.axvline(event["epoch"], color=MARK_COLOR, lw=1, ls="--")
        for change in history["lr_changes"]:
            axes.axvline(change["epoch"], color=BAD_COLOR, lw=1, ls=":")
        if history.get("best_epoch") is not None:
            axes.axvline(history["best_epoch"], color="black", lw=1.2, alpha=0.5)
        axes.set(title=title, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(fontsize=7)
    rate.set_yscale("log")
    for event in history["unfreeze_events"]:
        loss.annotate(f"unfreeze {event['group']}", (event["epoch"], 1), xycoords=("data", "axes fraction"),
                      rotation=90, fontsize=7, va="top", ha="right", color=MARK_COLOR)
    return _png(figure)

"""The comparison table of a compression: rows for the terminal, and report.html drawn from metrics.json (every
number tagged with its key, as in the evaluation report)."""

from __future__ import annotations

from html import escape
from pathlib import Path

from headstart.evaluate.html import num, page, table

COLUMNS = ["variant", "precision", "accuracy", "drop (points)", "macro-F1", "agreement", "size MB", "smaller",
           "batch 1 p50 ms", "batch 1 p95 ms", "32 inputs /s", "model alone, batch 32 /s", "faster b1", "faster 32",
           "model alone, faster b32", "verdict"]


def _cells(row: dict, name: str) -> list[str]:
    """One row of the HTML table, each number tagged with its key in metrics.json."""
    key = ["variants", name]
    t = row.get("latency") or {}
    timing = [num(t.get(k), key + ["latency", k], d) for k, d in
              (("batch1_p50_ms", 1), ("batch1_p95_ms", 1), ("batch32_throughput_per_s", 1),
               ("batch32_model_throughput_per_s", 1), ("speedup_batch1", 2), ("speedup_batch32", 2),
               ("speedup_model_batch32", 2))] if t else ["not timed"] * 7
    return [escape(name), escape(row["precision"]), num(row["accuracy"], key + ["accuracy"], 4),
            num(row["accuracy_drop"], key + ["accuracy_drop"], 2), num(row["macro_f1"], key + ["macro_f1"], 4),
            num(row["agreement"], key + ["agreement"], 4), num(row["size_mb"], key + ["size_mb"], 2),
            num(row["size_ratio"], key + ["size_ratio"], 2), *timing,
            "accepted" if row["accepted"] else "rejected"]


def terminal_tables(metrics: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The comparison for the terminal, as (title, columns, rows) of plain strings: accuracy, then size and speed;
    each table reads at 80 columns."""
    data, variants = metrics["data"], metrics["variants"]
    accuracy = [[name, f"{r['accuracy']:.4f}", f"{r['accuracy_drop']:+.2f}", f"{r['macro_f1']:.4f}",
                 f"{r['agreement']:.4f}", "accepted" if r["accepted"] else "REJECTED"] for name, r in variants.items()]
    speed = []
    for name, r in variants.items():
        t = r.get("latency")
        timing = [f"{t['batch1_p50_ms']:.1f} / {t['batch1_p95_ms']:.1f} ({t['speedup_batch1']:.2f})",
                  f"{t['batch32_throughput_per_s']:.1f} ({t['speedup_batch32']:.2f})",
                  f"{t['batch32_model_throughput_per_s']:.1f} ({t['speedup_model_batch32']:.2f})"
                  ] if t else ["not timed"] * 3
        speed.append([name, f"{r['size_mb']:.2f} ({r['size_ratio']:.2f})", *timing])
    seen = f", {data['seen_in_training']} trained or validated on" if data.get("seen_in_training") else ""
    return [(f"Compression: {data['scope']} of {data['source']} ({data['examples']} examples{seen}), budget "
             f"{metrics['settings']['budget_points']:g} points",
             ["variant", "accuracy", "drop (points)", "macro-F1", "agreement", "verdict"], accuracy),
            ("Size and speed (x: against fp32-pytorch)",
             ["variant", "MB (x smaller)", "batch 1 ms p50 / p95 (x faster)", "32 inputs /s (x faster)",
              "model alone, batch 32 /s (x faster)"], speed)]


def _sensitivity(int8: dict | None) -> str:
    search = (int8 or {}).get("search")
    if not search or not search.get("sensitivity"):
        return ""
    body = [[escape(r["group"]), num(r["accuracy_drop"], ["int8", "search", "sensitivity", i, "accuracy_drop"], 2),
             num(r["agreement"], ["int8", "search", "sensitivity", i, "agreement"])]
            for i, r in enumerate(search["sensitivity"])]
    steps = "".join(f"<li>{escape(', '.join(s['float_groups']))} in float: validation accuracy drop "
                    f"{num(s['accuracy_drop'], ['int8', 'search', 'steps', i, 'accuracy_drop'], 2)} points</li>"
                    for i, s in enumerate(search["steps"]))
    return ("<h2>Sensitivity (validation split)</h2><p>Each layer group quantized alone, everything else in float; "
            "most costly first.</p>" + table(["layer group", "accuracy drop (points)", "agreement"], body)
            + (f"<p><code>auto</code> kept groups in float, most sensitive first:</p><ul>{steps}</ul>"
               if steps else ""))


def _without_run_data(data: dict) -> str:
    why, seen = data.get("without_run_data"), data.get("seen_in_training")
    return ((f" The run's own splits could not be read, so only --data and --calibration were used (no "
             f"quantization-aware training): {escape(why)}" if why else "")
            + (f" <span class='bad'>{num(seen, ['data', 'seen_in_training'])} of the examples are inputs the run "
               "trained or validated on: accuracies on them are optimistic.</span>" if seen else ""))


def _calibration(int8: dict | None) -> str:
    cal = (int8 or {}).get("calibration")
    if not cal:
        return ""
    counts = ", ".join(f"{escape(k)} {v}" for k, v in cal["class_counts"].items())
    warning = (f"<p class='bad'>Broken calibration set, used because it was forced: "
               f"{escape('; '.join(cal['problems']))}.</p>" if cal["problems"] else "")
    title, use = (("Calibration", "") if int8["kind"] == "static" else
                  ("Validation set of the search", " Dynamic int8 calibrates nothing: these examples only decide which "
                                                   "layer groups stay in float."))
    return (f"<h2>{title}</h2><p>{num(cal['examples'], ['int8', 'calibration', 'examples'])} examples of "
            f"{escape(cal['source'])} ({counts}).{use}</p>{warning}")


def write(metrics: dict, path: Path) -> Path:
    """report.html for the metrics of a compression."""
    data, settings = metrics["data"], metrics["settings"]
    names = list(metrics["variants"])
    body = table(COLUMNS, [_cells(row, name) for name, row in metrics["variants"].items()],
                 ["" if metrics["variants"][n]["accepted"] else "worst" for n in names], left=2)
    verdicts = "".join(f"<li><b>{escape(n)}</b> ({escape(r['method'])}): {escape(r['verdict'])}"
                       + (f" Kept in float: {escape(', '.join(r['float_groups']))}." if r.get("float_groups") else "")
                       + "</li>" for n, r in metrics["variants"].items())
    html = (f"<h1>Compression of {escape(metrics['model'])}</h1><p class='muted'>{escape(data['scope'])} of "
            f"<b>{escape(str(data['source']))}</b>: {num(data['examples'], ['data', 'examples'])} examples. Budget: "
            f"{num(settings['budget_points'], ['settings', 'budget_points'], 2)} points of {settings['headline']}; "
            f"drops, agreement, size and speed-ups are against the fp32 PyTorch model. '32 inputs' runs them as "
            f"served, in each variant's own batches (latency.batch32_batch_size in metrics.json). Rejected variants "
            f"are not offered for serving unless forced.{_without_run_data(data)}</p>{body}"
            f"<ul class='verdicts'>{verdicts}</ul>"
            f"{_calibration(metrics.get('int8'))}{_sensitivity(metrics.get('int8'))}")
    Path(path).write_text(page(f"Compression of {metrics['model']}", html))
    return Path(path)

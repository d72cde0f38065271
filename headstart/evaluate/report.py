"""report.html: one self-contained page (plots embedded as PNG) drawn from the metrics dict of metrics.json."""

from __future__ import annotations

import os
from html import escape

from headstart.evaluate import plots
from headstart.evaluate.html import ci, fmt, image, num, page, table, verdict, with_ci
from headstart.evaluate.summary import BASELINE_NAMES, costliest_perturbation

HEADLINE_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1", "roc_auc": "ROC-AUC",
                  "ece": "calibration error (ECE)"}


FEW_GROUPS = 20  # fewer resampled groups than this, and percentile intervals fall short of their coverage


def _header(m: dict) -> str:
    d, s = m["data"], m["settings"]
    positive = f" Positive class: <b>{escape(d['positive_label'])}</b>." if d["positive_label"] else ""
    skipped = (f" {d['skipped']} examples without a label, a text or a readable image were skipped." if d["skipped"]
               else "")
    if d.get("seen_in_training"):
        skipped += (f" <span class='bad'>{num(d['seen_in_training'], ['data', 'seen_in_training'])} of them are "
                    "inputs the run trained or validated on, so the scores are optimistic.</span>")
    if d.get("without_run_data"):
        skipped += (f" The run's own train and validation examples could not be read, so the baselines and the "
                    f"threshold chosen on validation are left out, and <span class='bad'>whether these examples "
                    f"include some the run trained or validated on is not known</span>: "
                    f"{escape(d['without_run_data'])}")
    unit = "groups (data.group_column)" if s["bootstrap_unit"] == "group" else "examples"
    if s["bootstrap_unit"] == "group" and (d.get("groups") or 0) < FEW_GROUPS:
        unit += (f" (<span class='bad'>only {d['groups']} groups: the intervals are rough, and narrower than they "
                 "should be</span>)")
    return (f"<h1>Evaluation of {escape(m['run'])}</h1><p class='muted'>{escape(d['scope'])} of "
            f"<b>{escape(str(d['source']))}</b>: {num(d['examples'], ['data', 'examples'])} {escape(d['modality'])} "
            f"examples, classes {escape(', '.join(d['labels']))}.{positive}{skipped} Intervals: 95% percentile "
            f"bootstrap over {num(s['bootstrap'], ['settings', 'bootstrap'])} resamples of the {unit} (seed "
            f"{s['seed']}).</p>")


def _cards(m: dict) -> str:
    o = m["overall"]
    cards = []
    for name, title in HEADLINE_NAMES.items():
        note = (f"95% CI {ci(o.get(name + '_ci'), ['overall', name + '_ci'])}" if name != "ece" else
                f"by chance if calibrated: up to {num(o['calibration']['ece_by_chance'], ['overall', 'calibration', 'ece_by_chance'])}")
        cards.append(f"<div class='card'><div class='c'>{title}</div><div class='v'>{num(o[name], ['overall', name])}"
                     f"</div><div class='c'>{note}</div></div>")
    for name in ("log_loss", "brier"):
        cards.append(f"<div class='card'><div class='c'>{name.replace('_', ' ')}</div>"
                     f"<div class='v'>{num(o[name], ['overall', name])}</div></div>")
    return f"<div class='cards'>{''.join(cards)}</div>"


def _gap_verdict(gap: dict | None, settings: dict) -> str:
    """Whether the slices differ: the permutation test's p-value, which allows for the worst and best slices being
    picked as the extremes (an interval of their difference does not)."""
    if gap is None:
        return (f"fewer than two slices have {settings['min_slice_size']} examples (evaluate.min_slice_size), so none "
                "is ranked.")
    said = (f"worst <b class='bad'>{escape(gap['worst'])}</b>, accuracy {gap['accuracy']:.4f} below "
            f"{escape(gap['best'])}")
    p = gap["accuracy_p"]
    if p is None:
        why = ("evaluate.bootstrap is 0" if not settings["bootstrap"] else
               "a group of the group column spans several slices, so no shuffle of whole groups keeps their sizes")
        return f"{said} (no permutation test: {why}; whether they differ beyond chance is not known)."
    if p < 0.05:  # shown to 3 significant digits, so that a p under 0.05 never reads as 0.050
        return f"<span class='bad'>{said}; p = {p:.3g}: more than chance gives, the slices differ.</span>"
    return (f"{said}; p = {p:.3g}: slices of these sizes differ this much by chance, so this is not "
            "distinguishable from no difference.")


def _verdicts(m: dict) -> str:
    items = []
    for name, b in (m["baselines"] or {}).items():
        items.append(verdict(b["gain"]["accuracy"], b["gain"]["accuracy_ci"],
                             f"Accuracy gain over {escape(b['description'])}"))
    for column, s in m["slices"].items():
        items.append(f"Slices by <b>{escape(column)}</b>: {_gap_verdict(s['gap'], m['settings'])}")
    if costliest := costliest_perturbation(m):
        name, row = costliest
        items.append(f"Costliest perturbation: <b>{escape(name)}</b> ({escape(row['description'])}), "
                     + verdict(-row["accuracy_drop"], [-row["accuracy_drop_ci"][1], -row["accuracy_drop_ci"][0]]
                               if row["accuracy_drop_ci"] else None, "accuracy change"))
    elif m["robustness"]:
        items.append("No perturbation lowers accuracy on these examples.")
    return f"<ul class='verdicts'>{''.join(f'<li>{i}</li>' for i in items)}</ul>" if items else ""


def _per_class(m: dict) -> str:
    rows = []
    for label, c in m["overall"]["per_class"].items():
        key = ["overall", "per_class", label]
        rows.append([escape(label)] + [num(c[k], key + [k]) for k in ("precision", "recall", "f1", "support", "roc_auc")])
    return "<h2>Per class</h2>" + table(["class", "precision", "recall", "F1", "support", "ROC-AUC (one-vs-rest)"], rows)


def _confusion(m: dict) -> str:
    cm = m["overall"]["confusion_matrix"]
    rows = [[escape(label)] + [num(v, ["overall", "confusion_matrix", "counts", i, j]) for j, v in enumerate(row)]
            for i, (label, row) in enumerate(zip(cm["labels"], cm["counts"]))]
    counts = table(["true \\ predicted"] + cm["labels"], rows)
    return (f"<h2>Confusion matrix</h2><div class='plots'>{image(plots.confusion_heatmap(cm, False), 'confusion counts')}"
            f"{image(plots.confusion_heatmap(cm, True), 'confusion row-normalised')}</div>"
            f"<details><summary>counts</summary>{counts}</details>")


def _calibration(m: dict) -> str:
    o = m["overall"]
    auc = {label: c["roc_auc"] for label, c in o["per_class"].items()}
    rows = [[f"{b['lower']:.1f}-{b['upper']:.1f}", num(b["count"], ["overall", "calibration", "bins", i, "count"]),
             num(b["accuracy"], ["overall", "calibration", "bins", i, "accuracy"]),
             num(b["confidence"], ["overall", "calibration", "bins", i, "confidence"])]
            for i, b in enumerate(o["calibration"]["bins"])]
    chance = o["calibration"]["ece_by_chance"]
    within = "" if chance is None else (" Within what a perfectly calibrated model reaches by chance on this many "
                                        "examples." if o["ece"] <= chance else " More than chance alone explains: "
                                        "the probabilities are miscalibrated.")
    return (f"<h2>ROC and calibration</h2><p>Expected calibration error (ECE) {num(o['ece'], ['overall', 'ece'])}: the "
            "mean gap between confidence and accuracy, over equal-width bins of top-1 confidence, weighted by the "
            f"examples in each. A perfectly calibrated model would reach up to "
            f"{num(chance, ['overall', 'calibration', 'ece_by_chance'])} by chance here (95th percentile, labels drawn "
            f"from its own probabilities).{within}</p><div class='plots'>"
            f"{image(plots.roc_curves(m['roc'], auc), 'ROC curves') if m['roc'] else ''}"
            f"{image(plots.reliability_diagram(o['calibration']['bins'], o['ece']), 'reliability diagram')}</div>"
            f"<details><summary>calibration bins</summary>{table(['confidence', 'examples', 'accuracy', 'mean confidence'], rows)}</details>")


def _costs(m: dict) -> str:
    c = m["costs"]
    out = f"<h2>Costs</h2><p>Costs: {escape(c['given'])}.</p>"
    binary = c["positive_label"] is not None
    names = ["default (argmax)"] + (["chosen on validation"] if "chosen" in c else [])
    rows = []
    for name, key in zip(names, ("default", "chosen")):
        r = c[key]
        rows.append([name, num(r["threshold"], ["costs", key, "threshold"]), with_ci(r, "expected_cost", ["costs", key])]
                    + [num(r.get(k), ["costs", key, k]) for k in ("false_positives", "false_negatives", "precision", "recall")
                       if binary])
    header = ["decision", "threshold", "expected cost per example [95% CI]"]
    if binary:
        header += ["false positives", "false negatives", f"precision ({c['positive_label']})", f"recall ({c['positive_label']})"]
    out += table(header, rows)
    if binary:
        chosen = ("The threshold is chosen on the validation split, then applied here." if "chosen" in c else
                  "No threshold is chosen: there are no validation examples to choose it on.")
        out += (f"<p class='muted'>{chosen} With perfectly calibrated probabilities the best threshold would be "
                f"{num(c['calibrated_optimum'], ['costs', 'calibrated_optimum'])}.</p>"
                + image(plots.cost_curve(c), "expected cost by threshold"))
    return out


def _slices(m: dict) -> str:
    if not m["slices"]:
        return ("<h2>Slices</h2><p class='muted'>No slice columns: name metadata columns with --slice-by or "
                "evaluate.slice_by.</p>")
    out = "<h2>Slices</h2>"
    for column, s in m["slices"].items():
        key = ["slices", column, "slices"]
        rows, classes = [], []
        for value, r in s["slices"].items():
            counts = ", ".join(f"{escape(k)} {v}" for k, v in r["class_counts"].items())
            rows.append([escape(value), num(r["examples"], key + [value, "examples"]), counts,
                         with_ci(r, "accuracy", key + [value]), with_ci(r, "macro_f1", key + [value]),
                         num(r["accuracy_vs_overall"], key + [value, "accuracy_vs_overall"], signed=True)])
            classes.append("worst" if value == s["worst"] else "small" if r["small"] else "")
        gap = s["gap"]
        names = list(s["slices"])
        said = "" if gap is None else (
            f"Gap best ({escape(gap['best'])}) minus worst ({escape(gap['worst'])}): accuracy "
            f"{with_ci(gap, 'accuracy', ['slices', column, 'gap'], signed=True)}, macro-F1 "
            f"{with_ci(gap, 'macro_f1', ['slices', column, 'gap'], signed=True)} (intervals as if the two had been "
            "chosen in advance; " + ("the permutation test above allows for their being the extremes). "
                                     if gap["accuracy_p"] is not None else
                                     "no permutation test allows for their being the extremes: the interval "
                                     "overstates the evidence). "))
        out += (f"<h3>{escape(column)}</h3>" + table(["slice", "examples", "classes", "accuracy [95% CI]",
                                                       "macro-F1 [95% CI]", "accuracy vs overall"], rows, classes)
                + f"<p>{said}Slices under {m['settings']['min_slice_size']} examples are grey and not ranked.</p>"
                + image(plots.interval_bars(names, [s["slices"][n]["accuracy"] for n in names],
                                            [s["slices"][n]["accuracy_ci"] for n in names], f"accuracy by {column}",
                                            "accuracy", highlight=s["worst"]), f"accuracy by {column}"))
    return out


def _baselines(m: dict) -> str:
    if not m["baselines"]:
        why = ("the run's own data could not be read" if m["data"].get("without_run_data")
               else "evaluate.baselines: false")
        return f"<h2>Baselines</h2><p class='muted'>Baselines were not computed ({why}).</p>"
    names = ("accuracy", "macro_f1", "weighted_f1", "roc_auc")
    rows = [["fine-tuned model"] + [with_ci(m["overall"], n, ["overall"]) for n in names] + ["", ""]]
    for name, b in m["baselines"].items():
        rows.append([f"{escape(b['description'])} (C = {num(b['C'], ['baselines', name, 'C'], 3)})"]
                    + [with_ci(b, n, ["baselines", name]) for n in names]
                    + [with_ci(b["gain"], "accuracy", ["baselines", name, "gain"], signed=True),
                       with_ci(b["gain"], "macro_f1", ["baselines", name, "gain"], signed=True)])
    labels = ["fine-tuned"] + [b["description"][:40] for b in m["baselines"].values()]
    sources = [m["overall"]] + list(m["baselines"].values())
    return ("<h2>Baselines (same split; fit on the run's training split, C chosen on its validation split)</h2>"
            + table(["model", "accuracy", "macro-F1", "weighted-F1", "ROC-AUC", "gain in accuracy", "gain in macro-F1"], rows)
            + "<p class='muted'>Gains are the fine-tuned model minus the baseline, with paired bootstrap intervals "
              "(the same resampled examples for both).</p>"
            + "".join(f"<p class='bad'>Left out: {escape(BASELINE_NAMES.get(name, name))}, as {escape(why)}</p>"
                      for name, why in (m.get("baselines_left_out") or {}).items())
            + image(plots.interval_bars(labels, [s["accuracy"] for s in sources], [s.get("accuracy_ci") for s in sources],
                                        "accuracy against baselines", "accuracy"), "baselines"))


def _robustness(m: dict) -> str:
    r = m["robustness"]
    if not r:
        return "<h2>Robustness</h2><p class='muted'>Not measured (evaluate.robustness: false).</p>"
    rows = []
    for name, p in r["perturbations"].items():
        key = ["robustness", "perturbations", name]
        rows.append([escape(name), escape(p["description"]), num(p["accuracy"], key + ["accuracy"]),
                     with_ci(p, "accuracy_drop", key, signed=True), with_ci(p, "macro_f1_drop", key, signed=True),
                     num(p["changed"], key + ["changed"])])
    names = list(r["perturbations"])
    return (f"<h2>Robustness</h2><p>On {num(r['examples'], ['robustness', 'examples'])} of "
            f"{num(r['of'], ['robustness', 'of'])} examples; clean accuracy "
            f"{num(r['clean']['accuracy'], ['robustness', 'clean', 'accuracy'])}. A drop is clean minus perturbed.</p>"
            + table(["perturbation", "what", "accuracy", "accuracy drop [95% CI]", "macro-F1 drop [95% CI]",
                     "predictions changed"], rows, left=2)
            + image(plots.interval_bars(names, [r["perturbations"][n]["accuracy_drop"] for n in names],
                                        [r["perturbations"][n]["accuracy_drop_ci"] for n in names],
                                        "accuracy drop by perturbation", "accuracy drop", zero_line=True), "robustness"))


def _failures(m: dict) -> str:
    from headstart.evaluate.failures import thumbnail

    f = m["failures"]
    rows = [[escape(p["label"]), escape(p["predicted"]), num(p["count"], ["failures", "confused_pairs", i, "count"]),
             num(p["share_of_label"], ["failures", "confused_pairs", i, "share_of_label"])]
            for i, p in enumerate(f["confused_pairs"])]
    out = "<h2>Failures</h2><h3>Most confused pairs</h3>" + (
        table(["true", "predicted", "examples", "share of the true class"], rows, left=2) if rows else "<p>No errors.</p>")
    cards = []
    for i, x in enumerate(f["confident_mistakes"]):
        key = ["failures", "confident_mistakes", i]
        thumb = thumbnail(x["file"]) if "file" in x else None
        picture = image(thumb, x["origin"]) if thumb else ""
        snippet = f"<div class='snippet'>{escape(x['snippet'])}</div>" if "snippet" in x else ""
        cards.append(f"<div class='mistake'>{picture}<b>{escape(x['origin'])}</b><br>label <b>{escape(x['label'])}</b>, "
                     f"predicted <b class='bad'>{escape(x['predicted'])}</b> at {num(x['confidence'], key + ['confidence'])}"
                     f" (p(label) {num(x['probability_of_label'], key + ['probability_of_label'])}){snippet}</div>")
    if cards:
        out += ("<h3>Most confident mistakes</h3><p class='muted'>Check these first: a confident mistake is often a "
                f"wrong label.</p><div class='gallery'>{''.join(cards)}</div>")
    return out


def _latency(m: dict) -> str:
    t = m["latency"]
    if not t:
        return "<h2>Latency and size</h2><p class='muted'>Not measured (evaluate.latency: false).</p>"
    served = f"32 inputs as served, in batches of {t['batch32_batch_size']}, throughput (examples/s)"
    rows = [[label, num(t[k], ["latency", k], digits)] for label, k, digits in (
        ("batch 1, p50 (ms)", "batch1_p50_ms", 2), ("batch 1, p95 (ms)", "batch1_p95_ms", 2),
        (served, "batch32_throughput_per_s", 1),
        ("batch 32, the model alone on a prepared batch (examples/s)", "batch32_model_throughput_per_s", 1),
        ("model folder on disk (MB)", "model_size_mb", 2),
        ("weights (MB)", "weights_size_mb", 2), ("peak memory of the serving process (MB)", "memory_peak_mb", 1),
        ("memory before loading the model (MB)", "memory_before_load_mb", 1), ("load time (s)", "load_seconds", 2))]
    where = ("in a fresh process" if t["fresh_process"]
             else "in the evaluating process (a backbone registered there cannot be rebuilt in another)")
    busy = ""
    if (t["load_average"] or 0) >= (os.cpu_count() or 1):  # other work took the cores: times are upper bounds
        busy = (f"<p class='bad'>The machine was busy while timing (load average {fmt(t['load_average'], 2)} on "
                f"{os.cpu_count()} cores): these times are upper bounds, and may even contradict each other. Time "
                "again on a quiet machine.</p>")
    return ("<h2>Latency and size</h2>" + busy + table(["measure", "value"], rows)
            + f"<p class='muted'>The model as served (headstart.load, Predictor.probabilities, preprocessing included) "
              f"{where} on this machine: {escape(t['machine'])}, {t['threads']} threads, torch {escape(t['torch'])}; "
              f"{t['batch1_runs']} single-example runs, {t['batch32_runs']} runs of 32 inputs. Timings vary with the "
              f"load of the machine (load average {fmt(t['load_average'], 2)} while timing).</p>")


def _training(m: dict) -> str:
    h = m["training"]
    if not h:
        return ""
    events = ", ".join(f"{e['group']} at epoch {e['epoch']}" for e in h["unfreeze_events"]) or "none"
    changes = ", ".join(f"epoch {c['epoch']}: {c['from']:.2g} to {c['to']:.2g}" for c in h["lr_changes"]) or "none"
    return (f"<h2>Training curves</h2><p>Unfrozen: {escape(events)} (orange dashes). Learning-rate changes: "
            f"{escape(changes)} (red dots). Best epoch: {fmt(h['best_epoch'])} (grey).</p>"
            + image(plots.training_curves(h), "training curves"))


def report_html(metrics: dict) -> str:
    """The evaluation report, one self-contained HTML page."""
    body = (_header(metrics) + _cards(metrics) + _verdicts(metrics) + _per_class(metrics) + _confusion(metrics)
            + _calibration(metrics) + _costs(metrics) + _slices(metrics) + _baselines(metrics) + _robustness(metrics)
            + _failures(metrics) + _latency(metrics) + _training(metrics))
    return page(f"headstart evaluation: {metrics['run']}", body)

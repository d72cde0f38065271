"""The short summary table `headstart evaluate` prints: headline metrics, gains, worst slices, costs, latency."""

from __future__ import annotations


BASELINE_NAMES = {"frozen_logreg": "frozen features + logistic regression", "classical": "the classical model"}


def costliest_perturbation(metrics: dict) -> tuple[str, dict] | None:
    """(name, row) of the perturbation that lowers accuracy most; None when none lowers it."""
    if not metrics["robustness"]:
        return None
    name, row = max(metrics["robustness"]["perturbations"].items(), key=lambda kv: kv[1]["accuracy_drop"])
    return (name, row) if row["accuracy_drop"] > 0 else None


def summary_rows(metrics: dict) -> list[tuple[str, str, str]]:
    """(what, value, 95% CI) rows for the short summary table the CLI prints."""

    def f(value, signed=False):
        return "n/a" if value is None else (f"{value:+.4f}" if signed else f"{value:.4f}")

    def interval(value, signed=False):
        return "" if not value else f"[{f(value[0], signed)}, {f(value[1], signed)}]"

    o = metrics["overall"]
    rows = [(name, f(o[name]), interval(o.get(f"{name}_ci"))) for name in ("accuracy", "macro_f1", "weighted_f1",
                                                                          "roc_auc")]
    if metrics["data"].get("seen_in_training"):
        rows.append(("examples the run trained or validated on (optimistic)", str(metrics["data"]["seen_in_training"]),
                     ""))
    elif metrics["data"].get("without_run_data"):  # the run's own data is gone: nothing to compare with
        rows.append(("examples the run trained or validated on", "unknown", ""))
    rows.append(("ece (calibration error)", f(o["ece"]),
                 f"calibrated: <= {f(o['calibration']['ece_by_chance'])} by chance"))
    for name, b in (metrics["baselines"] or {}).items():
        rows.append((f"gain over {BASELINE_NAMES.get(name, name)} (accuracy)", f(b["gain"]["accuracy"], True),
                     interval(b["gain"]["accuracy_ci"], True)))
    for name in metrics.get("baselines_left_out") or {}:
        rows.append((f"gain over {BASELINE_NAMES.get(name, name)} (accuracy)", "left out",
                     "backbone not loadable here"))
    for column, s in metrics["slices"].items():
        if s["worst"] is None:  # fewer than two slices large enough to rank
            rows.append((f"slices by {column}", f"{len(s['slices'])}, too small to rank",
                         f"< 2 of {metrics['settings']['min_slice_size']}+ examples"))
            continue
        worst, p = s["slices"][s["worst"]], s["gap"]["accuracy_p"]
        differs = ("untested" if p is None else f"below the best, p = {p:.2g}" if p < 0.05 else
                   f"no more than chance, p = {p:.2g}")
        rows.append((f"worst slice {column}={s['worst']} (accuracy; {differs})", f(worst["accuracy"]),
                     interval(worst["accuracy_ci"])))
    costs = metrics["costs"]
    if "chosen" in costs:
        rows.append((f"expected cost at threshold {costs['chosen']['threshold']:.3f} (0.5: "
                     f"{f(costs['default']['expected_cost'])})", f(costs["chosen"]["expected_cost"]),
                     interval(costs["chosen"]["expected_cost_ci"])))
    if costliest := costliest_perturbation(metrics):
        name, row = costliest
        rows.append((f"costliest perturbation: {name} (accuracy drop)", f(row["accuracy_drop"], True),
                     interval(row["accuracy_drop_ci"], True)))
    elif metrics["robustness"]:
        rows.append(("costliest perturbation", "none lowers accuracy", ""))
    if metrics["latency"]:
        t = metrics["latency"]
        rows.append(("latency batch 1 p50 / p95 (ms)", f"{t['batch1_p50_ms']:.1f} / {t['batch1_p95_ms']:.1f}", ""))
        rows.append(("throughput, 32 inputs as served (examples/s)", f"{t['batch32_throughput_per_s']:.1f}", ""))
    return rows

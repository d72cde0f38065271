"""`evaluate_run`: score a run's best model on its test split (or on another data source) and write metrics.json
and report.html. Every number of the report comes from the dict written to metrics.json."""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Union

import numpy as np

from headstart.config import EvaluateConfig
from headstart.data.sources import TABLE_SUFFIXES
from headstart.errors import HeadstartError
from headstart.files import remove_temporary, replacing_all, run_lock
from headstart.json_safe import json_safe
from headstart.progress import reporter

SCHEMA = "headstart-evaluation"
VERSION = 1
GAIN_METRICS = ("accuracy", "macro_f1", "weighted_f1", "roc_auc")
CHANCE_DRAWS = 500  # label draws for ece_by_chance, whatever evaluate.bootstrap is: a cheap simulation


def _settings(base: EvaluateConfig, overrides: Union[dict, Iterable[str], None],
              read: dict | None = None) -> tuple[EvaluateConfig, dict]:
    """The run's `evaluate` section with overrides (a dict of evaluate fields, each replaced whole, or
    `evaluate.key=value` strings), and the data settings that say how to read a --data source (`read`, and
    `data.key=value` strings)."""
    from pydantic import ValidationError

    from headstart.config import apply_override, explain

    raw = {"evaluate": base.model_dump(), "data": dict(read or {})}
    if isinstance(overrides, dict):
        raw["evaluate"].update(overrides)
    else:
        for item in overrides or ():
            apply_override(raw, _qualified(item))
    try:
        return EvaluateConfig.model_validate(raw["evaluate"]), raw["data"]
    except ValidationError as exc:
        raise explain(exc, "The evaluate section with the overrides given", ("evaluate",)) from None


def _qualified(item: str) -> str:
    """A `headstart evaluate --set` item as section.field=value (a bare evaluate field gets its section); refused,
    saying why, unless it sets an evaluate.* or data.* field."""
    from headstart.config import RunConfig

    key, equals, _ = item.partition("=")
    parts = key.strip().split(".")
    if equals and parts[0] in EvaluateConfig.model_fields:  # a bare evaluate field: bootstrap=200
        return f"evaluate.{item.strip()}"
    if equals and parts[0] in ("evaluate", "data") and len(parts) > 1:
        return item
    if not equals:
        why = "it has no '='"
    elif parts[0] in ("evaluate", "data"):
        why = f"name a field of it ({parts[0]}.<field>=value)"
    elif parts[0] in RunConfig.model_fields:
        why = f"'{parts[0]}' belongs to the trained run: change it in the run config and fit again"
    else:
        guess = difflib.get_close_matches(parts[0], ["evaluate", "data"], n=1)
        why = f"there is no '{parts[0]}' section" + (f"; did you mean '{guess[0]}'?" if guess else "")
    raise HeadstartError(f"--set '{item}': `headstart evaluate` changes only evaluate.* settings (e.g. --set "
                         "evaluate.bootstrap=200) and the data.* settings that say how to read a --data source (e.g. "
                         f"--set data.image_column=path); {why}.")


def _merged(base: dict, updates: dict) -> dict:
    """`base` with `updates` written over it, nested sections field by field."""
    out = dict(base)
    for key, value in updates.items():
        out[key] = _merged(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def _data_config(config, source: str | None, updates: dict, modality: str):
    """The run's data settings, with `data.*` overrides for reading another source."""
    from pydantic import ValidationError

    from headstart.config import DataConfig, explain

    if updates and source is None:
        raise HeadstartError("--set data.* settings (read= in Python) say how to read a --data source; give --data "
                             "(data=) too.")
    if not updates:
        data = config.data
    else:
        try:
            data = DataConfig.model_validate(_merged(config.data.model_dump(), updates))
        except ValidationError as exc:
            raise explain(exc, "The data section with the --set data.* values (read= in Python)", ("data",)) from None
    suffix = Path(source or "").suffix.lower()
    if source and modality == "image" and data.image_column is None and suffix in TABLE_SUFFIXES:
        raise HeadstartError(f"{source} is a table and the model reads images: name its image-path column with "
                             "--set data.image_column=COLUMN (and the label column with --set data.label_column=COLUMN "
                             "if it is not 'label').")
    return data


def _probabilities(predictor, inputs: list, batch_size: int, progress: bool) -> np.ndarray:
    if not inputs:
        return np.empty((0, len(predictor.labels)))
    proba = predictor.probabilities(inputs, batch_size, progress).double().numpy()
    return proba / proba.sum(1, keepdims=True)  # float32 softmax sums to 1 only within ~1e-7


def _baselines(config, data, y, proba, samples, seed, positive, say, bars: bool,
               groups) -> tuple[dict, dict, dict]:
    """The baselines' scores and gains, the model's bootstrap draws, and {baseline: why} for those left out."""
    from headstart.backbones.registry import build
    from headstart.evaluate import baselines
    from headstart.evaluate.bootstrap import bootstrap, interval, metric_functions
    from headstart.evaluate.metrics import HEADLINE, headline

    fitted, left_out = {}, {}
    try:  # the pretrained weights, which the model folder does not hold: gone with an hf: folder or a module
        backbone = build(config.backbone, config.data)
    except HeadstartError as exc:
        left_out["frozen_logreg"] = f"the pretrained backbone cannot be loaded here: {exc}"
        say(f"baseline left out: frozen backbone + logistic regression ({left_out['frozen_logreg']})")
    else:
        say("baseline: frozen backbone + logistic regression")
        fitted["frozen_logreg"] = baselines.frozen_logreg(config, data, backbone, bars)
    say("baseline: classical model")
    fitted["classical"] = baselines.classical(data)
    probas = {"model": proba, **{name: baseline.proba for name, baseline in fitted.items()}}
    boot = bootstrap(y, probas, metric_functions(GAIN_METRICS, positive), samples, seed, groups) if samples else {}
    out, model_point = {}, headline(y, proba, GAIN_METRICS, positive)
    for name, baseline in fitted.items():
        point = headline(y, probas[name], tuple(HEADLINE), positive)
        row = {"description": baseline.description, "fit_on": "train split of the run", "C": baseline.c,
               "C_chosen_on": "validation split (lowest log loss)", "converged": baseline.converged, **point}
        for metric in GAIN_METRICS:
            row[f"{metric}_ci"] = interval(boot[name][metric]) if boot and point[metric] is not None else None
        row["gain"] = {}
        for metric in GAIN_METRICS:
            defined = model_point[metric] is not None and point[metric] is not None
            row["gain"][metric] = model_point[metric] - point[metric] if defined else None
            row["gain"][f"{metric}_ci"] = interval(boot["model"][metric] - boot[name][metric]) \
                if boot and defined else None
        out[name] = row
    return out, boot.get("model", {}), left_out


def output_dir(run_dir: Path, source: str | None, output: Path | None) -> Path:
    """Where an evaluation writes report.html and metrics.json; `output`, if given, must be a folder or not exist.
    Another source goes to evaluations/<its name>, or <its name>-2, -3, ... when that holds the evaluation of another
    source of the same name (news/a.csv, then archive/a.csv). Refused before the work if it could not be written, or
    if `output` holds the files of another evaluation."""
    source = None if source is None else _absolute(source)
    if output is not None:
        folder = Path(output)
        _refuse_another_evaluation(folder, run_dir, source)
    elif source is None:
        folder = run_dir
    else:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(source.rstrip("/")).stem or source).strip("-") or "data"
        folder, n = run_dir / "evaluations" / name, 2
        while (held := _evaluation_in(folder)) is not None and held[2] not in (None, source):
            folder, n = run_dir / "evaluations" / f"{name}-{n}", n + 1
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise HeadstartError(f"{'--out ' if output is not None else ''}{folder}: {existing} is a file. Give a folder "
                             "for report.html and metrics.json (it is created if it does not exist).")
    if not os.access(existing, os.W_OK):
        raise HeadstartError(f"{existing} is not writable, so report.html and metrics.json could not be written "
                             "there. Give another folder with --out, or make it writable.")
    return folder


def _refuse_another_evaluation(folder: Path, run_dir: Path, source: str | None) -> None:
    """--out may hold an earlier evaluation of this run on this data, which is replaced; not another one, nor another
    run (whose `registry push` would take this evaluation for its own)."""
    if (folder / "config.yaml").is_file() and folder.resolve() != run_dir.resolve():
        raise HeadstartError(f"--out {folder} is another run's folder. Give a new or empty folder, or leave --out out.")
    if not (folder / "metrics.json").is_file():
        return
    from headstart.run import Run

    config = Run(run_dir).config
    found = _evaluation_in(folder)
    if found != (SCHEMA, config.name, source or config.data.source):
        what = (f"the evaluation of run {found[1]} on {found[2]}" if found and found[0] == SCHEMA else
                "a metrics.json that is not an evaluation (`headstart compress` writes one in model/variants)")
        raise HeadstartError(f"--out {folder} already holds {what}, which this evaluation would write over. Give a new "
                             "or empty folder, or the folder of an earlier evaluation of this run on the same data.")


def _absolute(source: str) -> str:
    """A source that is a path, absolute (it is recorded so: it names one source wherever headstart runs); a
    bundled dataset's name as it is."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def _evaluation_in(folder: Path) -> tuple[str | None, str | None, str | None] | None:
    """(schema, run name, data source) of the metrics.json in `folder`; None when it holds none (or an unreadable
    one)."""
    try:
        held = json.loads((folder / "metrics.json").read_text())
        return held.get("schema"), held.get("run"), held["data"]["source"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def evaluate_run(run_dir: Union[str, Path], data: str | None = None, slice_by: Iterable[str] = (),
                 output: Union[str, Path, None] = None, overrides: Union[dict, Iterable[str], None] = None,
                 read: dict | None = None, progress: Union[bool, Callable[[str], None]] = True) -> dict:
    """Evaluate the best model of the run in `run_dir` and write metrics.json and report.html.

    data: another data source (read with the run's column settings) to evaluate on instead of the test split;
    its files go to <run_dir>/evaluations/<source name>/ unless `output` names a folder. slice_by: metadata
    columns to slice by, besides evaluate.slice_by. overrides: evaluate.* settings (a dict, whose fields replace
    the run's, or "key=value" strings, as --set). read: data.* settings that say how to read `data`.
    progress: True prints each step and draws progress bars on stderr; a callable gets the step messages (no
    bars); False is silent. Returns the metrics written to metrics.json. Meanwhile a fit --overwrite or
    --resume of the run, or another evaluation of it, is refused.
    """
    for option, value, fix in (("--data", data, "a bundled dataset name, a folder or a table, or leave --data out to "
                                                "evaluate on the run's test split"),
                               ("--out", output, "a folder, or leave --out out to write into the run folder")):
        if isinstance(value, str) and not value.strip():
            raise HeadstartError(f"{option} is empty: give {fix}.")
    with run_lock(Path(run_dir)):
        return _evaluate_run(run_dir, data, slice_by, output, overrides, read, progress)


def _evaluate_run(run_dir, data, slice_by, output, overrides, read, progress) -> dict:
    from headstart.evaluate import examples
    from headstart.evaluate.bootstrap import bootstrap, metric_functions, with_intervals
    from headstart.evaluate.costs import cost_matrix, cost_report, positive_index
    from headstart.evaluate.failures import confident_mistakes, confused_pairs
    from headstart.evaluate.metrics import CALIBRATION_BINS, ece_by_chance, full_report, roc_points
    from headstart.evaluate.report import report_html
    from headstart.evaluate.slices import slice_report
    from headstart.evaluate.training import training_history
    from headstart.predict import load
    from headstart.run import Run, no_model

    say = reporter("evaluate", progress)
    bars = progress is True
    run = Run(run_dir)
    run_dir, config = run.path, run.config
    settings, data_updates = _settings(config.evaluate, overrides, read)
    data = None if data is None else _absolute(data)
    out_dir = output_dir(run_dir, data, Path(output) if output else None)  # a bad --out is refused before the work
    if not (run.model_dir / "config.json").is_file():
        raise no_model(run_dir)
    predictor = load(run.model_dir)
    labels = predictor.labels
    requested = list(dict.fromkeys([*settings.slice_by, *slice_by]))
    say(f"reading {data or config.data.source}")
    evaluated = examples.load(run_dir, config.data, labels, predictor.modality, requested, data,
                              _data_config(config, data, data_updates, predictor.modality))
    batch, samples, seed = config.train.eval_batch(predictor.modality == "image"), settings.bootstrap, settings.seed
    y, val_y = examples.targets(evaluated.test), examples.targets(evaluated.val)
    positive = positive_index(labels, examples.targets(evaluated.train), settings.positive_label)
    cost_matrix(settings.costs, labels, positive)  # a cost naming an unknown label stops here, before the work

    if evaluated.seen_in_training:
        say(f"{evaluated.seen_in_training} of these examples are inputs the run trained or validated on: the scores "
            "are optimistic")
    say(f"predicting {len(y)} examples ({evaluated.scope})")
    inputs = evaluated.test["input"].tolist()
    proba = _probabilities(predictor, inputs, batch, bars)
    if evaluated.without_run_data:
        say(f"without the run's own data, so no baselines or threshold chosen on validation, and no count of these "
            f"examples the run trained or validated on: {evaluated.without_run_data}")
        val_y, val_proba = val_y[:0], proba[:0]
    else:
        say(f"predicting {len(val_y)} validation examples (for the decision threshold)")
        val_proba = _probabilities(predictor, evaluated.val["input"].tolist(), batch, bars)

    # examples of one group (data.group_column) are not independent: the bootstrap resamples whole groups
    grouped = len(evaluated.test) and evaluated.test["group"].notna().all()
    groups = evaluated.test["group"].to_numpy() if grouped else None
    say(f"bootstrap: {samples} resamples of {'groups' if groups is not None else 'examples'}")
    point = full_report(y, proba, labels, positive)
    point["calibration"]["ece_by_chance"] = ece_by_chance(proba, CHANCE_DRAWS, seed)
    boot = {}
    baselines, left_out = None, {}
    if settings.baselines and not evaluated.without_run_data:
        baselines, model_boot, left_out = _baselines(config, evaluated, y, proba, samples, seed, positive, say, bars,
                                                     groups)
        boot.update(model_boot)
    elif samples:
        boot.update(bootstrap(y, {"model": proba}, metric_functions(GAIN_METRICS, positive), samples, seed,
                              groups)["model"])
    overall = with_intervals(point, boot, GAIN_METRICS)

    say("slices")
    slices = slice_report(evaluated.test, y, proba, labels, evaluated.slice_columns, settings.min_slice_size,
                          samples, seed, groups)
    robustness = None
    if settings.robustness:
        from headstart.evaluate.robustness import robustness_report

        robustness = robustness_report(predictor, evaluated.modality, inputs, y, proba, settings.robustness_examples,
                                       samples, seed, batch, say, groups)
    latency = None
    if settings.latency:
        from headstart.evaluate.latency import measure

        say("latency: timing the served model in a fresh process")
        latency = measure(run.model_dir, inputs)

    metrics = json_safe({
        "schema": SCHEMA, "version": VERSION, "run": config.name,
        "data": {"source": evaluated.source, "scope": evaluated.scope, "examples": int(len(y)),
                 "skipped": evaluated.skipped, "without_run_data": evaluated.without_run_data,
                 "seen_in_training": evaluated.seen_in_training,
                 "groups": None if groups is None else len(set(groups.tolist())),
                 "modality": evaluated.modality, "labels": labels,
                 "class_counts": {label: int((y == c).sum()) for c, label in enumerate(labels)},
                 "positive_label": None if positive is None else labels[positive]},
        "settings": {"bootstrap": samples, "bootstrap_unit": "group" if groups is not None else "example",
                     "confidence": 0.95, "seed": seed, "calibration_bins": CALIBRATION_BINS,
                     "slice_by": evaluated.slice_columns, "min_slice_size": settings.min_slice_size,
                     "robustness_examples": settings.robustness_examples},
        "overall": overall,
        "roc": roc_points(y, proba, labels, positive),
        "costs": cost_report(settings.costs, labels, positive, y, proba, val_y, val_proba, samples, seed, groups),
        "slices": slices,
        "baselines": baselines,
        "baselines_left_out": left_out,
        "robustness": robustness,
        "failures": {"confused_pairs": confused_pairs(y, proba, labels),
                     "confident_mistakes": confident_mistakes(evaluated.test, y, proba, labels, evaluated.modality)},
        "latency": latency,
        "training": training_history(run_dir),
    })
    say("writing the report")
    out_dir.mkdir(parents=True, exist_ok=True)
    html, text = report_html(metrics), json.dumps(metrics, indent=2, allow_nan=False)
    remove_temporary(out_dir, "report.html", "metrics.json")  # its own only: --out may be any folder
    # metrics.json, which `registry push` reads, renamed last
    with replacing_all([out_dir / "report.html", out_dir / "metrics.json"]) as (report, metrics_file):
        report.write(html)
        metrics_file.write(text)
    return metrics

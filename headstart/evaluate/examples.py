"""The examples an evaluation scores: the run's own splits (split.csv joined with the data source), or every
example of another data source; and the metadata columns it slices by."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from headstart.config import RESERVED_COLUMNS, DataConfig
from headstart.data.sources import TABLE_FIELDS, TABLE_SUFFIXES, Examples, read_source
from headstart.data.split import count_seen, input_digest
from headstart.data.validate import visible
from headstart.errors import HeadstartError, first_five
from headstart.progress import warn

# metadata columns sliced by without being asked: the environment or domain an example comes from
ENVIRONMENT_COLUMNS = ("environment", "domain", "env")


@dataclass
class EvalData:
    """Frames with columns input, label, origin, y (class index), then metadata. `test` is what is evaluated."""

    modality: str
    labels: list[str]
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    source: str
    scope: str  # "test split" or "all examples"
    slice_columns: list[str] = field(default_factory=list)
    skipped: int = 0
    # why the run's own train and val examples could not be read (--data only): `train` and `val` then hold only
    # their labels, from split.csv, and the parts that need their inputs are left out
    without_run_data: str | None = None
    # --data only: how many evaluated inputs the run trained or validated on (None when its data could not be read)
    seen_in_training: int | None = None


def _is_table(source: str) -> bool:
    path = Path(source).expanduser()
    return path.is_file() and path.suffix.lower() in TABLE_SUFFIXES


def _read(config: DataConfig, wanted: list[str], option: str = "data.source") -> Examples:
    """Read the source (given as `option`); for a table, also load the wanted slice columns that are not metadata
    columns yet."""
    taken = [c for c in wanted if c in RESERVED_COLUMNS and c not in ("label", "group")]  # those have their own say
    if taken:
        raise HeadstartError(f"--slice-by {taken[0]} (or evaluate.slice_by): headstart names its own columns "
                             f"{', '.join(RESERVED_COLUMNS)}, so a table column of that name cannot be sliced by. "
                             "Rename the column in the table.")
    examples = read_source(config, option)
    missing = [c for c in wanted if c not in examples.frame.columns]
    if missing and _is_table(config.source):
        from headstart.data.sources import read_table

        present = [c for c in missing if c in read_table(Path(config.source).expanduser()).columns]
        if present:
            examples = read_source(config.model_copy(update={"metadata_columns": config.metadata_columns + present}))
    return examples


def slice_columns(examples: Examples, requested: list[str], source: str) -> list[str]:
    """The requested slice columns (checked) plus any environment / domain column the data has."""
    available = list(examples.metadata_columns)
    if examples.frame["group"].notna().any():
        available.append("group")
    for column in requested:
        if column in available:
            continue
        hint = f"Columns you can slice by: {', '.join(available)}." if available else \
            "This data has no metadata columns to slice by."
        if column == "label":
            problem = "the report already gives every label its own row (per class)"
        elif column == "group":
            problem = "the run has no data.group_column, so its examples have no group"
        else:
            problem = f"the data of {source} has no column '{column}'"
            if _is_table(source):
                hint += " Any other column of the table works too."
        raise HeadstartError(f"--slice-by {column} (or evaluate.slice_by): {problem}. {hint} A column named in the "
                             "run's evaluate.slice_by is left out with --set evaluate.slice_by=[] (Python: "
                             "run.evaluate(slice_by=[])).")
    auto = [c for c in available if c.lower() in ENVIRONMENT_COLUMNS and c not in requested]
    return list(dict.fromkeys(requested + auto))


def check_slice_by(config: DataConfig, requested: list[str]) -> None:
    """Refuse `evaluate.slice_by` columns the run's data lacks: before the run trains, not after."""
    if requested:
        slice_columns(_read(config, requested), requested, config.source)


def check_modality(model: str, data: str, source: str, option: str = "--data") -> None:
    """Refuse data of another modality than the model reads (a text model would read image paths as texts)."""
    if data != model:
        hint = " (for a table of image paths, name its column with --set data.image_column=COLUMN)" \
            if model == "image" else ""
        raise HeadstartError(f"The model reads {model}s, but {source} holds {data}s: give {option} labelled "
                             f"{model}s{hint}.")


def _with_targets(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    index = {label: i for i, label in enumerate(labels)}
    return frame.assign(y=frame["label"].map(index).astype(int)).reset_index(drop=True)


def run_parts(run_dir: Path, config: DataConfig, labels: list[str], requested: list[str]) -> tuple[Examples, dict]:
    """The run's train, val and test examples, in split.csv order, with their inputs and metadata."""
    split_path = run_dir / "split.csv"
    if not split_path.is_file():
        raise HeadstartError(f"{run_dir} has no split.csv, so its test split is unknown. Evaluate a run folder "
                             "written by `headstart fit`.")
    split = pd.read_csv(split_path, dtype=str, keep_default_na=False)
    examples = _read(config, requested)
    frame = examples.frame.drop_duplicates("origin").set_index("origin")
    lost = split.loc[~split["origin"].isin(frame.index), "origin"]
    if len(lost):
        raise HeadstartError(f"{len(lost)} examples of {split_path} are no longer in data.source {config.source} "
                             f"(first: {lost.iloc[0]}): the data changed since the run. Evaluate on the data the run "
                             "was trained on, or give the new data with --data.")
    unknown = sorted(set(split["label"]) - set(labels))
    if unknown:
        raise HeadstartError(f"split.csv holds labels the model does not know: {', '.join(unknown)}.")
    _check_same_examples(split, frame.loc[split["origin"]], examples.modality, split_path, config.source)
    if examples.modality == "image":
        from headstart.inputs import check_images

        try:
            check_images(frame.loc[split["origin"], "input"].tolist(), split["origin"].tolist())
        except HeadstartError as exc:
            raise HeadstartError(f"{exc} It is one of the images {run_dir} was trained and tested on, changed since: "
                                 "restore it, or evaluate on other data with --data.") from None
    columns = ["input"] + [c for c in frame.columns if c not in ("input", "label", "exact", "near")]
    parts = {}
    for name in ("train", "val", "test"):
        rows = split[split["split"] == name]
        part = frame.loc[rows["origin"], columns].reset_index().assign(label=rows["label"].to_numpy())
        parts[name] = _with_targets(part, labels)
    return examples, parts


def _check_same_examples(split: pd.DataFrame, now: pd.DataFrame, modality: str, split_path: Path,
                         source: str) -> None:
    """Refuse data whose rows no longer hold the label and input the run had at them (a table edited or re-sorted
    since), and a split.csv whose split sizes differ from those the run trained and tested with."""
    changed = split["label"].to_numpy() != now["label"].to_numpy()
    if "input_sha1" in split.columns:
        changed |= split["input_sha1"].to_numpy() != np.array([input_digest(v, modality) for v in now["input"]])
    if changed.any():
        raise HeadstartError(f"{int(changed.sum())} examples of {split_path} no longer have the label or input they "
                             f"had in data.source {source} (first: {split.loc[changed, 'origin'].iloc[0]}): the data "
                             "was edited or re-ordered since the run, so scoring it would pair inputs with other "
                             "labels. Evaluate on the data the run was trained on, or give the new data with --data.")
    try:
        trained = json.loads((split_path.parent / "results.json").read_text())["examples"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # a run not finished (or its results.json damaged, which reading the run names) has nothing to say
    if not isinstance(trained, dict):
        return
    sizes = split["split"].value_counts().to_dict()
    if any(sizes.get(name, 0) != n for name, n in trained.items()):
        raise HeadstartError(f"{split_path} lists {sizes.get('test', 0)} test examples ({sizes.get('train', 0)} train, "
                             f"{sizes.get('val', 0)} val), but the run trained and tested with {trained.get('test')} "
                             f"({trained.get('train')} train, {trained.get('val')} val): split.csv was changed. Put "
                             "back the file the run wrote.")


def other_source(config: DataConfig, source: str, labels: list[str], requested: list[str], modality: str,
                 option: str = "--data") -> tuple[Examples, pd.DataFrame, int]:
    """Every usable example of another source (given with `option`), read with the run's column settings; data of
    another `modality` than the model's is refused first, then rows without a label, text, image path or (with a
    group column) group are skipped, unknown labels refused, and unreadable images skipped or refused as
    `data.bad_inputs` says."""
    update = {"source": source}
    if Path(source).suffix.lower() not in TABLE_SUFFIXES:  # a folder or bundled dataset: its own columns
        update.update(metadata_columns=[], group_column=None,
                      **{name: DataConfig.model_fields[name].default for name in TABLE_FIELDS})
    examples = _read(config.model_copy(update=update), requested, option)
    check_modality(modality, examples.modality, source, option)
    frame = examples.frame
    labelled = frame["label"].notna() & (frame["label"].astype(str).str.strip() != "")
    has_input = frame["input"].astype(str).map(visible) if examples.modality == "text" else frame["input"] != ""
    no_input = "empty text" if examples.modality == "text" else "no image path"
    # with a group column, a blank group would make the bootstrap resample examples, not groups: skipped as in fit
    grouped = frame["group"].notna() | frame["group"].isna().all()
    no_group = f"no value in the group column '{config.group_column}'"
    why = {origin: "no label" if not label_ok else no_input if not input_ok else no_group
           for origin, label_ok, input_ok, group_ok in zip(frame["origin"], labelled, has_input, grouped)
           if not (label_ok and input_ok and group_ok)}
    frame = frame[labelled & has_input & grouped]
    unknown = sorted(set(frame["label"]) - set(labels))
    if unknown:
        raise HeadstartError(f"{source} holds labels the model was not trained on: {', '.join(map(str, unknown[:10]))}. "
                             f"The model knows: {', '.join(labels)}. Remove those rows or map their labels.")
    if examples.modality == "image":
        from headstart.inputs import check_images, unreadable_images

        if config.bad_inputs == "skip":  # as fit skips them
            unreadable = unreadable_images(frame["input"].tolist())
            why.update({frame["origin"].iat[i]: problem for i, problem in unreadable.items()})
            frame = frame.drop(index=frame.index[list(unreadable)])
        else:
            check_images(frame["input"].tolist(), frame["origin"].tolist())
    listed = first_five([f"{origin} ({problem})" for origin, problem in why.items()])
    if frame.empty:
        raise HeadstartError(f"{source} has no labelled examples to evaluate on"
                             f"{f' ({len(why)} skipped: {listed})' if why else ''}.")
    if why:
        warn(f"Skipped {len(why)} of the {len(why) + len(frame)} examples of {source}: {listed}.")
    frame = frame.drop(columns=[c for c in ("exact", "near") if c in frame.columns])
    return examples, _with_targets(frame, labels), len(why)


def load(run_dir: Path, config: DataConfig, labels: list[str], modality: str, requested: list[str],
         source: str | None = None, source_config: DataConfig | None = None) -> EvalData:
    """The evaluation data: the run's test split, or (with `source`) all of another data source of the model's
    `modality`, read with `source_config` (the run's data settings by default)."""
    skipped, scope, missing = 0, "test split", None
    if source is None:
        examples, parts = run_parts(run_dir, config, labels, requested)
        check_modality(modality, examples.modality, config.source)
    else:
        try:
            parts = run_parts(run_dir, config, labels, requested)[1]
        except HeadstartError as exc:  # moved, changed, or on another machine: the new data can still be scored
            if not (run_dir / "split.csv").is_file():
                raise
            parts, missing = _split_labels(run_dir / "split.csv", labels), str(exc)
        # other_source checks the kind of data before its labels
        examples, parts["test"], skipped = other_source(source_config or config, source, labels, requested, modality)
        scope = "all examples"
    columns = slice_columns(examples, requested, source or config.source)
    if parts["test"].empty:
        raise HeadstartError(f"The test split of {run_dir} is empty: nothing to evaluate.")
    seen = None
    if source is not None and missing is None:
        seen = count_seen(parts["test"]["input"], [*parts["train"]["input"], *parts["val"]["input"]], modality)
    return EvalData(examples.modality, labels, parts["train"], parts["val"], parts["test"], source or config.source,
                    scope, columns, skipped, missing, seen)


def _split_labels(path: Path, labels: list[str]) -> dict[str, pd.DataFrame]:
    """The train and val splits of split.csv, labels only."""
    split = pd.read_csv(path, dtype=str, keep_default_na=False)
    split = split[split["label"].isin(labels)]
    return {name: _with_targets(split.loc[split["split"] == name, ["label"]], labels) for name in ("train", "val")}


def targets(frame: pd.DataFrame) -> np.ndarray:
    return np.array(frame["y"], dtype=np.int64)  # a writable copy

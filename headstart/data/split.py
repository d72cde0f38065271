"""Train / validation / test split: stratified by label, or grouped so no group straddles two splits."""

from __future__ import annotations

import hashlib
import math
import os
from functools import lru_cache
from pathlib import PurePath
from typing import Iterable

import numpy as np
import pandas as pd

from headstart.config import SplitConfig
from headstart.errors import HeadstartError

SPLITS = ("train", "val", "test")


def _part(index: np.ndarray, share: float, strata: pd.Series, seed: int) -> list[np.ndarray]:
    """(rest, part) of `index`, stratified; where either would hold fewer examples than there are classes (a
    fine-grained dataset of a few examples per class), which stratifying cannot do, shuffled instead:
    `_cover_small_classes` then puts every class in every split."""
    from sklearn.model_selection import train_test_split  # lazily: scikit-learn takes a second to import

    size = math.ceil(share * len(index))  # as scikit-learn rounds
    stratify = strata if min(size, len(index) - size) >= strata.nunique() else None
    return train_test_split(index, test_size=share, stratify=stratify, random_state=seed)


def _stratified(labels: pd.Series, config: SplitConfig) -> np.ndarray:
    index = np.arange(len(labels))
    rest, test = _part(index, config.test, labels, config.seed)
    val_share = config.val / (config.train + config.val)
    strata = labels.iloc[rest]
    counts = strata.value_counts()
    if (counts < 2).any():  # the test split took all but one of a small class: stratify the rest by the others
        strata = strata.where(strata.map(counts) >= 2, counts.idxmax())
    train, val = _part(rest, val_share, strata, config.seed)
    split = _assign(len(labels), train, val, test)
    _cover_small_classes(labels.to_numpy(), split)
    return split


def _cover_small_classes(labels: np.ndarray, split: np.ndarray) -> None:
    """Stratified rounding can leave a class of a few examples (3 suffice) out of a split: move one of its examples
    there from the split that holds most of them (the first of train, val, test on a tie), so that every class is
    trained on, validated and tested."""
    for label in pd.unique(labels):
        member = labels == label
        for name in SPLITS:
            counts = {other: int((split[member] == other).sum()) for other in SPLITS if other != name}
            donor = max(counts, key=counts.get)  # the first of the largest: train before val and test
            if not (split[member] == name).any() and counts[donor] > 1:
                split[np.flatnonzero(member & (split == donor))[-1]] = name


def _grouped(groups: pd.Series, config: SplitConfig) -> np.ndarray:
    from sklearn.model_selection import GroupShuffleSplit

    index = np.arange(len(groups))
    outer = GroupShuffleSplit(n_splits=1, test_size=config.test, random_state=config.seed)
    rest, test = next(outer.split(index, groups=groups))
    inner = GroupShuffleSplit(n_splits=1, test_size=config.val / (config.train + config.val), random_state=config.seed)
    train, val = next(inner.split(rest, groups=groups.iloc[rest]))
    return _assign(len(groups), rest[train], rest[val], test)


def _assign(n: int, train, val, test) -> np.ndarray:
    split = np.empty(n, dtype=object)
    split[train], split[val], split[test] = "train", "val", "test"
    return split


def split_frame(frame: pd.DataFrame, config: SplitConfig, grouped: bool) -> pd.DataFrame:
    """A copy of `frame` with a `split` column (train / val / test)."""
    if grouped and frame["group"].isna().all():
        raise HeadstartError("data.group_column is set, but no usable row of the table has a group value in it: "
                             "check the column name, or fill the column in with a group id on each row.")
    if grouped and (groups := frame["group"].nunique()) < 3:
        raise HeadstartError(f"data.group_column holds {groups} distinct group{'s' * (groups != 1)}: a grouped split "
                             "puts whole groups in train, validation and test, so it needs at least 3 (and more for "
                             "shares near data.split). Use a column with more groups, or leave data.group_column "
                             "unset.")
    try:
        split = _grouped(frame["group"], config) if grouped else _stratified(frame["label"], config)
    except ValueError as exc:
        raise HeadstartError(f"Could not split the data with {config.model_dump()}: {exc}. Use more examples per "
                             "class or group, or change data.split.") from None
    out = frame.assign(split=split)
    check_splits(out, "the data has too few examples or groups for data.split")
    return out


def check_splits(frame: pd.DataFrame, why: str) -> None:
    """Every split holds examples, and training sees every class."""
    missing = [name for name in SPLITS if not (frame["split"] == name).any()]
    if missing:
        raise HeadstartError(f"The split left {', '.join(missing)} empty: {why}.")
    unseen = sorted(set(frame["label"]) - set(frame.loc[frame["split"] == "train", "label"]))
    if unseen:
        raise HeadstartError(f"No training example of class {', '.join(unseen)}: {why}. Add examples of it, or "
                             "use a split that is not grouped.")


def input_digest(value: str, modality: str) -> str:
    """A short digest of an example's input, kept in split.csv so that a row of an edited or re-sorted table is not
    taken for the example the run had there: of its text, or of its image's file name (not the whole path, which
    changes with the environment: the bundled images live in site-packages)."""
    shown = PurePath(value).name if modality == "image" else str(value)
    return hashlib.sha1(shown.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def example_key(value: str, modality: str) -> str:
    """What makes two inputs one example: the same text, or the same image file contents (the file however its path
    is spelled, or a copy of it under another name)."""
    if modality != "image":
        return str(value)
    path = os.path.realpath(value)
    try:
        found = os.stat(path)
        return _file_digest(path, found.st_size, found.st_mtime_ns)
    except OSError:  # unreadable (refused or skipped elsewhere): only its path can tell
        return path


@lru_cache(maxsize=1 << 16)
def _file_digest(path: str, size: int, modified: int) -> str:
    """sha1 of a file's bytes, once per path, size and modification time: compress keys the test examples three
    times (its calibration set, its training split and the count of examples seen in training)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


def count_seen(inputs: Iterable[str], seen: Iterable[str], modality: str) -> int:
    """How many of `inputs` are examples of `seen` (a run's training and validation inputs)."""
    keys = {example_key(x, modality) for x in seen}
    return sum(example_key(x, modality) in keys for x in inputs)


def manifest(frame: pd.DataFrame, modality: str) -> pd.DataFrame:
    """Which file or row went to which split, with which label and input: the table saved as split.csv in the run."""
    return frame[["origin", "label", "group", "split"]].assign(
        input_sha1=[input_digest(v, modality) for v in frame["input"]])

"""Leakage check: exact and near duplicates across train, validation and test; and identical inputs labelled
differently, in any splits.

Texts are near duplicates when equal after normalisation; images when their perceptual hashes (256-bit dHash) differ
in at most `NEAR_BITS` bits. A duplicate pair across two splits lets the model be tested on what it trained on.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from headstart.data.split import SPLITS
from headstart.errors import HeadstartError

NEAR_BITS = 2
COLUMNS = ["kind", "origin", "split", "duplicate_of", "duplicate_split", "distance"]
CONFLICT_COLUMNS = ["origin", "label", "split", "same_input_as", "its_label", "its_split"]


def _pairs_by_key(frame: pd.DataFrame, column: str, kind: str) -> list[tuple]:
    pairs = []
    shared = frame[frame.groupby(column, sort=False)["split"].transform("nunique") > 1]
    for _, rows in shared.groupby(column, sort=False):
        first = rows.sort_values("rank").iloc[0]
        for row in rows.itertuples():
            if row.split != first["split"]:
                pairs.append((kind, row.origin, row.split, first["origin"], first["split"], 0))
    return pairs


def _near_image_pairs(frame: pd.DataFrame, exact_keys: set) -> list[tuple]:
    hashes = np.frombuffer(b"".join(frame["near"]), dtype=np.uint8).reshape(len(frame), -1)
    ranks = frame["rank"].to_numpy()
    # each distinct hash once (blank images or video frames share one), with its first row in each split
    distinct, which = np.unique(hashes, axis=0, return_inverse=True)
    first = np.full((len(distinct), len(SPLITS)), len(frame))
    np.minimum.at(first, (which.ravel(), ranks), np.arange(len(frame)))
    # Two hashes at most NEAR_BITS bits apart agree exactly on at least one of NEAR_BITS + 1 byte bands, so only
    # hashes sharing a band are compared: near-linear instead of every example against every earlier one.
    bands = np.array_split(np.arange(hashes.shape[1]), NEAR_BITS + 1)
    sharing = defaultdict(list)
    for band, columns in enumerate(bands):
        for index, key in enumerate(distinct[:, columns]):
            sharing[band, key.tobytes()].append(index)
    pairs = []
    for i in np.flatnonzero(ranks > 0):
        if frame["origin"].iat[i] in exact_keys:
            continue
        near = np.array(sorted({index for band, columns in enumerate(bands)
                                for index in sharing[band, hashes[i, columns].tobytes()]}))
        distance = np.bitwise_count(distinct[near] ^ hashes[i]).sum(axis=1)
        row = first[near, :ranks[i]].min(axis=1)  # each hash's first row in an earlier split
        close = np.flatnonzero((distance <= NEAR_BITS) & (row < len(frame)))
        if len(close):
            best = close[np.lexsort((row[close], distance[close]))[0]]  # the nearest, then the first in the data
            k = row[best]
            pairs.append(("near", frame["origin"].iat[i], frame["split"].iat[i], frame["origin"].iat[k],
                          frame["split"].iat[k], int(distance[best])))
    return pairs


def find_leaks(frame: pd.DataFrame, modality: str) -> pd.DataFrame:
    """One row per example whose exact or near duplicate sits in an earlier split (train < val < test)."""
    frame = frame.assign(rank=frame["split"].map({name: i for i, name in enumerate(SPLITS)}))
    pairs = _pairs_by_key(frame, "exact", "exact")
    exact_origins = {p[1] for p in pairs}
    if modality == "text":
        pairs += [p for p in _pairs_by_key(frame, "near", "near") if p[1] not in exact_origins]
    else:
        hashed = frame[frame["near"].map(len) > 0].reset_index(drop=True)  # flat images have no hash to compare
        pairs += _near_image_pairs(hashed, exact_origins) if len(hashed) else []
    return pd.DataFrame(pairs, columns=COLUMNS)


def find_label_conflicts(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per example whose input is identical to an earlier example's (in the data's order) with another
    label: the model is taught both answers, and a test copy counts one of them wrong."""
    pairs = []
    labelled = frame[frame.groupby("exact", sort=False)["label"].transform("nunique") > 1]
    for _, rows in labelled.groupby("exact", sort=False):
        first = rows.iloc[0]
        pairs += [(row.origin, row.label, row.split, first["origin"], first["label"], first["split"])
                  for row in rows.iloc[1:].itertuples() if row.label != first["label"]]
    return pd.DataFrame(pairs, columns=CONFLICT_COLUMNS)


def handle_leaks(frame: pd.DataFrame, leaks: pd.DataFrame, action: str) -> pd.DataFrame:
    """Apply `data.leakage`: drop the later copies, only report them, or refuse the run."""
    if leaks.empty or action == "report":
        return frame
    if action == "refuse":
        shown = "\n".join(f"- {r.kind}: {r.origin} ({r.split}) duplicates {r.duplicate_of} ({r.duplicate_split})"
                          for r in leaks.head(10).itertuples())
        raise HeadstartError(f"{len(leaks)} examples in validation or test duplicate an example of an earlier split:\n"
                             f"{shown}\nRemove the duplicates from the data, or set data.leakage: drop (drops the "
                             "later copies) or report (keeps them, and the test score will be optimistic).")
    kept = frame[~frame["origin"].isin(set(leaks["origin"]))].reset_index(drop=True)
    lost = [f"{label} from {name}" for name in ("val", "test") for label in
            sorted(set(frame.loc[frame["split"] == name, "label"]) - set(kept.loc[kept["split"] == name, "label"]))]
    if lost:  # the split put every class in every split it could
        raise HeadstartError(f"Dropping the duplicates across splits (data.leakage: drop) would take every example of "
                             f"class {', '.join(lost[:5])}: each is a copy of an earlier split's example, so the class "
                             "could not be validated or tested. Remove the copies from the data (each example once), "
                             "or set data.leakage: report (keeps them, and the test score will be optimistic).")
    return kept

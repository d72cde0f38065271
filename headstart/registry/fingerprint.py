"""Content fingerprints: of a run's data (its split manifest) and of the files of a registered version."""

from __future__ import annotations

import hashlib
from pathlib import Path

from headstart.errors import HeadstartError

REWRITE = "Push a run folder written by `headstart fit`, or run it again."

def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def data_fingerprint(split_csv: Path) -> dict:
    """Which examples, with which labels, went into which split: a hash of the sorted (origin, label, split) rows
    (independent of row order), one of the test rows alone, and the number of examples per split."""
    import pandas as pd

    try:
        table = pd.read_csv(split_csv, keep_default_na=False, dtype=str)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' EmptyDataError and ParserError are ValueErrors
        raise HeadstartError(f"{split_csv} is not a readable CSV file ({exc}). {REWRITE}") from None
    missing = [column for column in ("origin", "label", "split") if column not in table.columns]
    if missing:
        raise HeadstartError(f"{split_csv} has no {', '.join(missing)} column: it is not a split manifest written "
                             f"by `headstart fit`. {REWRITE}")
    rows = sorted("\t".join((r.origin, r.label, r.split)) for r in table[["origin", "label", "split"]].itertuples())
    test = [row for row in rows if row.endswith("\ttest")]
    return {"sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest(),
            "test_sha256": hashlib.sha256("\n".join(test).encode()).hexdigest(),  # what test.* and overall.* score
            "examples": {split: int(n) for split, n in table["split"].value_counts().sort_index().items()},
            "labels": int(table["label"].nunique())}


def folder_digests(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder`."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): file_digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def same_test_data(a: dict, b: dict) -> bool | None:
    """Whether two versions' (version.json) test metrics were measured on the same examples, by the fingerprints of
    their test rows; None when one was pushed before test rows had their own and the whole manifests differ (then
    only the training rows may)."""
    fa, fb = a.get("data") or {}, b.get("data") or {}
    if "test_sha256" in fa and "test_sha256" in fb:
        return fa["test_sha256"] == fb["test_sha256"]
    return True if fa.get("sha256") == fb.get("sha256") else None

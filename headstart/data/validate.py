"""Check every example before training: unreadable images, empty texts, missing or unknown labels.

Each problem names the file or row. Problem rows are skipped or the run is refused (`data.bad_inputs`).
Fingerprints for the leakage check are computed here too, so every image is decoded once.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from headstart.config import DataConfig
from headstart.data.images import DECODE_ERRORS, fingerprint, why_unreadable
from headstart.data.sources import Examples, as_text
from headstart.errors import HeadstartError, first_five, short
from headstart.progress import warn

MIN_PER_CLASS = 3  # one example in each of train, val and test
NUMBER = re.compile(r"[-+]?(\d{1,3}(,\d{3})+(\.\d*)?|\d+([.,]\d*)?|[.,]\d+)([eE][-+]?\d+)?")  # 1,000.5 3.5e2 -.5
# Unicode categories drawing nothing: controls, format characters (zero-width space...), unassigned, separators
INVISIBLE = {"Cc", "Cf", "Cn", "Zs", "Zl", "Zp"}


def normalise_text(text: str) -> str:
    """Compatibility forms folded (NFKC: full-width letters, ligatures), format characters (zero-width space, soft
    hyphen) dropped, case folded, letters and digits only, single spaces: two texts equal after this are near
    duplicates."""
    text = "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf")
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def _image_fingerprints(paths: list[str]) -> list:
    def one(path: str):
        if not path:
            return "no image path given"
        try:
            return fingerprint(path)
        except DECODE_ERRORS as exc:
            return why_unreadable(exc)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(tqdm(pool.map(one, paths), total=len(paths), desc="checking images", unit="img"))


def visible(text: str) -> bool:
    """True if `text` has a character that draws something (stops at the first one): an empty text has none."""
    return any(unicodedata.category(c) not in INVISIBLE for c in text.strip())


def check_examples(examples: Examples, config: DataConfig) -> tuple[Examples, pd.DataFrame]:
    """Return the usable examples (with `exact` and `near` fingerprint columns) and a table of problems."""
    frame = examples.frame.copy()
    problems: dict[int, str] = {}
    allowed = None if config.labels is None else as_text(config.labels)  # read as the data's labels are: 1.0 is 1
    for i, label in enumerate(frame["label"]):
        if label is None or pd.isna(label) or str(label).strip() == "":
            problems[i] = "missing label"
        elif allowed is not None and label not in allowed:
            problems[i] = f"unknown label '{label}' (data.labels allows: {', '.join(config.labels)})"
    classes = pd.unique(frame["label"].drop(index=list(problems)))  # those whose every example is unusable too
    if examples.modality == "text":
        for i, text in enumerate(frame["input"]):
            if not isinstance(text, str):  # a folder's file that is not .txt, or a broken link
                missing = not Path(frame["origin"].iat[i]).exists()
                problems.setdefault(i, "no such file (a broken link)" if missing else
                                    "not a .txt file, in a folder of text files")
            elif not visible(text):
                problems.setdefault(i, "empty text")
        texts = [t if isinstance(t, str) else "" for t in frame["input"]]
        frame["exact"] = [_sha1(t) for t in texts]
        # a text of no letters or digits (":)", an emoji) normalises to nothing: it is compared as written, spaces aside
        frame["near"] = [_sha1(normalise_text(t) or " ".join(t.split())) for t in texts]
    else:
        results = _image_fingerprints(frame["input"].tolist())
        for i, result in enumerate(results):
            if isinstance(result, str):
                path = frame["input"].iat[i]
                problems.setdefault(i, result if path == frame["origin"].iat[i] else f"{result}: {path}")
        frame["exact"] = [r[0] if isinstance(r, tuple) else None for r in results]
        frame["near"] = [r[1] if isinstance(r, tuple) else None for r in results]
    if frame["group"].notna().any():
        for i in np.flatnonzero(frame["group"].isna()):
            problems.setdefault(int(i), f"no value in the group column '{config.group_column}'")
    rows = sorted(problems)
    report = pd.DataFrame({"origin": [frame["origin"].iat[i] for i in rows], "problem": [problems[i] for i in rows]})
    if problems and config.bad_inputs == "refuse":
        shown = "\n".join(f"- {o}: {p}" for o, p in report.head(10).itertuples(index=False))
        more = f"\n(and {len(report) - 10} more)" if len(report) > 10 else ""
        raise HeadstartError(f"{len(report)} of {len(frame)} examples in {config.source} cannot be used:\n{shown}{more}\n"
                             "Fix or remove them, or set data.bad_inputs: skip to train without them.")
    labelled = report.assign(label=[frame["label"].iat[i] for i in rows])  # whose class a skipped example was
    frame = frame.drop(index=list(problems)).reset_index(drop=True)
    if examples.modality == "text":
        _check_texts_are_words(frame["input"], config)
    _warn_of_case_variants(frame, config)
    _check_classes(frame, config, labelled, [*(allowed or []), *classes])
    return Examples(examples.modality, frame, examples.metadata_columns), report


def _check_texts_are_words(texts: pd.Series, config: DataConfig) -> None:
    """Refuse a text column of numbers only (a score, a priority): the wrong column, not texts to classify."""
    texts = texts.str.strip()
    if len(texts) and all(NUMBER.fullmatch(text) for text in texts):
        shown = f"{texts.nunique()} different: {', '.join(map(repr, pd.unique(texts)[:5]))}"
        if Path(config.source).expanduser().is_dir():
            raise HeadstartError(f"The .txt files of {config.source} hold only numbers ({shown}), not words a text "
                                 "model can read: put the texts to classify in them.")
        raise HeadstartError(f"The texts of {config.source} (column '{config.text_column}') are all numbers ({shown}), "
                             "not words a text model can read. Name the column of texts with data.text_column.")


def case_variants(counts: pd.Series) -> list[list[str]]:
    """The values of `counts` (a value_counts) that differ only in case ('Tech', 'tech'), most frequent first."""
    by_key: dict[str, list[str]] = {}
    for value in counts.index:
        by_key.setdefault(str(value).casefold(), []).append(value)
    return [names for names in by_key.values() if len(names) > 1]


def _warn_of_case_variants(frame: pd.DataFrame, config: DataConfig) -> None:
    """Labels, or groups, that differ only in case are told apart: said, as they are more often one written two
    ways ('A' and 'a' may be two classes, so it is not refused). One warning per column, naming three sets."""
    for column, what, effect in (
            ("label", "Labels", "separate classes"),
            ("group", f"Values of the group column '{config.group_column}'",
             "separate groups, whose examples may fall in different splits")):
        counts = frame[column].value_counts()
        variants = case_variants(counts)
        if variants:
            listed = "; ".join(" and ".join(f"'{short(name)}' ({counts[name]})" for name in names)
                               for names in variants[:3])
            more = f"; and {len(variants) - 3} more sets" if len(variants) > 3 else ""
            warn(f"{what} differ only in case ({listed}{more}): they are {effect}. If they are one, write them "
                 f"alike in {config.source}.")


def first_problems(problems: pd.DataFrame, shown: int = 3) -> str:
    """The first problems of a `check_examples` report, as 'origin: problem; ...'."""
    more = "; ..." if len(problems) > shown else ""
    return "; ".join(f"{o}: {p}" for o, p in problems.head(shown).itertuples(index=False)) + more


def _skipped(skipped: pd.DataFrame) -> str:
    """The examples skipped as unusable, which may be why a class is missing or small, for an error message."""
    if not len(skipped):
        return ""
    some = "1 unusable example is" if len(skipped) == 1 else f"{len(skipped)} unusable examples are"
    return f" once {some} skipped ({first_problems(skipped[['origin', 'problem']])})"


def _check_classes(frame: pd.DataFrame, config: DataConfig, skipped: pd.DataFrame, classes: list[str]) -> None:
    """At least two classes, and `MIN_PER_CLASS` usable examples in each of `classes` (data.labels, and the classes
    of the data before unusable examples were skipped), so that none is left out of the model unsaid."""
    counts = frame["label"].value_counts()
    folder = Path(config.source).expanduser().is_dir()  # class folders, not a label column
    if len(counts) < 2:
        only = f"only '{counts.index[0]}'" if len(counts) else "no labelled example"
        after = _skipped(skipped)
        if folder:
            raise HeadstartError(f"The class folders of {config.source} hold {only}{after}: a classifier needs at "
                                 "least two classes. Put each class's files in a folder named after it.")
        fix = ("Fix the problems listed (an image path is read from the table's folder when relative)" if
               len(skipped) and len(skipped) >= len(frame) else "Check data.label_column and the labels in the data")
        raise HeadstartError(f"Column '{config.label_column}' of {config.source} holds {only}{after}: a classifier "
                             f"needs at least two classes. {fix}.")
    counts = counts.reindex(list(dict.fromkeys([*classes, *counts.index])), fill_value=0)
    small = counts[counts < MIN_PER_CLASS]
    if len(small):
        listed = first_five([f"'{short(label)}' ({n})" for label, n in small.items()])
        # a column of mostly distinct values (a text, an ID) is more likely the wrong column than a label
        wrong_column = "" if folder or len(counts) <= len(frame) / 2 else (
            f" Column '{config.label_column}' holds {len(counts)} different values in {len(frame)} examples: check "
            "that data.label_column names the column of labels.")
        after = _skipped(skipped[skipped["label"].isin(small.index)])
        variants = [names for names in case_variants(frame["label"].value_counts()) if set(names) & set(small.index)]
        alike = "".join(f" {', '.join(map(repr, names))} differ only in case: if they are one class, write them "
                        "alike." for names in variants[:3])
        raise HeadstartError(f"Classes {listed} in {config.source} have fewer than {MIN_PER_CLASS} usable examples"
                             f"{after}, too few to appear in train, validation and test. Add examples, or remove "
                             f"the class (from data.labels too, if it is listed there).{alike}{wrong_column}")

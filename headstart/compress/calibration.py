"""The calibration set of static int8: validation examples, checked before use.

Activation ranges come from these examples alone. A set of one class, a handful of examples, or the same example
repeated gives ranges that clip everything else; such a set is refused with the reason (or, forced, used and
reported as broken). Dynamic int8 calibrates nothing: there the set only guides `auto`'s search, and needs only
every class.
"""

from __future__ import annotations

import numpy as np

from headstart.compress.data import Split
from headstart.errors import HeadstartError

MIN_EXAMPLES = 32  # distinct examples
MAX_EXAMPLES = 256  # more adds calibration time, not accuracy
BATCH = 32


def problems(split: Split | None, labels: list[str], calibrates: bool = True) -> list[str]:
    """What is wrong with a calibration set, in words (empty when nothing is). One that `calibrates` (static int8's
    activation ranges) needs `MIN_EXAMPLES` distinct examples; one that only guides `auto`'s search (dynamic int8,
    which calibrates nothing) needs only every class."""
    if split is None or not len(split):
        return ["there is no calibration data"]
    found = []
    distinct = len({str(i) for i in split.inputs})
    if calibrates and distinct < MIN_EXAMPLES:
        found.append(f"it holds {distinct} distinct examples; at least {MIN_EXAMPLES} are needed")
    counts = np.bincount(split.y, minlength=len(labels))
    present = [labels[c] for c in np.flatnonzero(counts)]
    if len(present) == 1:
        found.append(f"every example is of one class ({present[0]})")
    elif len(present) < len(labels):
        missing = [labels[c] for c in np.flatnonzero(counts == 0)]
        found.append(f"it has no example of {', '.join(missing)}")
    return found


def check(split: Split | None, labels: list[str], origin: str, force: bool = False, calibrates: bool = True
          ) -> list[str]:
    """Raise a HeadstartError on a broken calibration set, unless forced; returns the problems found (see
    `problems`)."""
    found = problems(split, labels, calibrates)
    if found and not force:
        if calibrates:
            why = "Its activation ranges would not cover the data the model sees"
            size = f", at least {MIN_EXAMPLES} distinct examples"
        else:
            why, size = "auto's search would judge the int8 cost of each layer group without some classes", ""
        raise HeadstartError(f"The calibration set ({origin}) is not usable: {'; '.join(found)}. {why}. Give a "
                             f"calibration set with examples of every class (--calibration SOURCE{size}), or pass "
                             "--force-calibration to use it anyway (the report marks it broken).")
    return found


def sample(split: Split, seed: int = 0, limit: int = MAX_EXAMPLES) -> Split:
    """At most `limit` examples, seeded, taking the classes in turn so that rare ones are not left out."""
    if len(split) <= limit:
        return split
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(split))
    by_class = [order[split.y[order] == c].tolist() for c in np.unique(split.y)]
    picked = []
    while len(picked) < limit:
        for rows in by_class:
            if rows and len(picked) < limit:
                picked.append(rows.pop())
    picked.sort()
    return Split([split.inputs[i] for i in picked], split.y[picked])


def batches(backbone, split: Split, size: int = BATCH) -> list:
    """Prepared batches of the backbone's inputs."""
    return [backbone.prepare(split.inputs[start:start + size]) for start in range(0, len(split), size)]

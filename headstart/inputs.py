"""The inputs named on a command line (`headstart predict`): texts, .txt files, image files, folders of them and
tables, read as training reads them, with every unreadable one named."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from headstart.data.images import DECODE_ERRORS, open_rgb, shown_path, why_unreadable
from headstart.data.sources import (IMAGE_SUFFIXES, TABLE_SUFFIXES, check_paths_read_as_meant, check_single_values,
                                     image_path_columns, read_table, read_text_file, row_origins, visible_files)
from headstart.data.validate import visible
from headstart.errors import HeadstartError, first_five, short
from headstart.progress import warn


def not_utf8(text: str) -> int | None:
    """Where `text` holds bytes that were not UTF-8 (as Python reads them from a command line), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _table_texts(path: Path, column: str) -> tuple[list[str], list[str]]:
    table = read_table(path, [column])
    if column not in table.columns:
        raise HeadstartError(f"{path} has no column '{column}' (its columns: {', '.join(map(str, table.columns))}). "
                             "Name the text column with --text-column.")
    check_single_values(table, [column], path, str(path))
    texts = ["" if pd.isna(t) else str(t) for t in table[column]]
    return texts, row_origins(path, table.index, str(path))  # as given: two tables may share a name


def _files(folder: Path, suffixes: set[str]) -> list[Path]:
    """The files under `folder` with one of `suffixes`, sorted, hidden ones left out (as training reads folders)."""
    return [p for p in visible_files(folder) if p.suffix.lower() in suffixes]


def _meant_as_path(item: str) -> bool:
    """A text-model argument meant as a file or folder, not a text: one line, not a URL, ending in a suffix predict
    reads (with no spaces, or with a path separator), or, with no spaces, in a separator."""
    separators = ("/", os.sep)
    spaced = any(c.isspace() for c in item)
    return ("\n" not in item and "://" not in item
            and ((Path(item).suffix.lower() in TABLE_SUFFIXES | {".txt"}
                  and (not spaced or any(s in item for s in separators)))
                 or (item.endswith(separators) and not spaced)))


def _text_inputs(item: str, text_column: str) -> tuple[list[str], list[str]]:
    """One argument for a text model -> (texts, names): a folder's .txt files, a .txt file, a table's text column,
    or the argument itself as a text."""
    path, suffix = Path(item), Path(item).suffix.lower()
    # os.path, unlike Path, answers False for a text too long to be a file name instead of raising
    if os.path.isdir(item):
        files = _files(path, {".txt"})
        if not files:
            raise HeadstartError(f"{item} is a folder with no .txt files in it. A text model reads texts, .txt files, "
                                 "folders of them, and CSV / JSONL / JSON / Parquet tables.")
        return [read_text_file(p) for p in files], [str(p) for p in files]
    if os.path.isfile(item) and suffix in TABLE_SUFFIXES:
        return _table_texts(path, text_column)
    if os.path.isfile(item) and suffix == ".txt":
        return [read_text_file(path)], [str(path)]
    if os.path.exists(item):
        problem = "is a file, but not a .txt file or a CSV / JSONL / JSON / Parquet table"
    elif _meant_as_path(item):
        problem = "looks like a file or folder path, but there is no such file or folder"
    else:
        return [item], [item]
    raise HeadstartError(f"{short(item, 300)} {problem}. A text model reads texts, .txt files, folders of them, and "
                         "tables. To classify these words as a text, put them in a .txt file or call "
                         "model.predict([...]) from Python.")


def _table_images(path: Path, column: str | None) -> tuple[list[str], list[str], list[str]]:
    """A table's image paths (relative ones read from the table's folder, as training does), their cells and
    rows."""
    table = read_table(path, [column] if column else [])
    if column is None:
        found = image_path_columns(table)
        if len(found) != 1:
            which = f"columns {', '.join(found)} all hold" if found else "no column holds"
            raise HeadstartError(f"In {path} {which} image file paths (its columns: "
                                 f"{', '.join(map(str, table.columns))}). Name the column with --image-column.")
        column = found[0]
    if column not in table.columns:
        raise HeadstartError(f"{path} has no column '{column}' (its columns: {', '.join(map(str, table.columns))}). "
                             "Name the column of image paths with --image-column.")
    check_single_values(table, [column], path, str(path))
    cells, origins = table[column].tolist(), row_origins(path, table.index, str(path))
    blank = [o for o, cell in zip(origins, cells) if not isinstance(cell, str) or not cell.strip()]
    if blank:
        raise HeadstartError(f"No image path in column '{column}' at {first_five(blank)}: give every row an image "
                             "file.")
    files = [str(path.parent / cell) for cell in cells]
    check_paths_read_as_meant(path, column, cells, files)
    missing = [f"{o} ({cell})" for o, cell, file in zip(origins, cells, files) if not os.path.isfile(file)]
    if missing:
        raise HeadstartError(f"Column '{column}' names image files that do not exist, at {first_five(missing)}. "
                             f"Relative paths are read from the table's folder, {path.resolve().parent}: correct "
                             "them, or leave those rows out.")
    return files, cells, origins


def _image_inputs(item: str, image_column: str | None) -> tuple[list[str], list[str], list[str]]:
    """One argument for an image model -> (paths, names, origins): an image file, a folder's image files, or a
    table's column of image paths (named as the table writes them, from its rows)."""
    if not os.path.exists(item):
        raise HeadstartError(f"{shown_path(item)}: no such image file, folder or table.")
    path = Path(item)
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        return _table_images(path, image_column)
    if not path.is_dir():
        return [str(path)], [str(path)], [str(path)]
    found = visible_files(path)
    files = [str(p) for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise HeadstartError(f"{item} is a folder with no image files in it (PNG, JPEG, BMP, TIFF, WebP or GIF).")
    others = [p.name for p in found if p.suffix.lower() not in IMAGE_SUFFIXES]
    if others:  # training reads every file of a class folder: say which ones are not predicted here
        warn(f"{len(others)} file{'s' * (len(others) > 1)} in {item} left out: no image suffix ({first_five(others)}). "
             "Name them in the command to predict them.")
    return files, files, files


def gather_inputs(items: Iterable[str], modality: str, text_column: str | None = None,
                  image_column: str | None = None) -> tuple[list, list[str]]:
    """CLI arguments -> (inputs, names): image files, folders of them or tables with a column of image paths for
    image models (refused together if some cannot be read); texts, .txt files or folders of them, or CSV / JSONL /
    JSON / Parquet tables with a text column (`text` unless named) for text models."""
    other, given = ("--image-column", image_column) if modality == "text" else ("--text-column", text_column)
    if given is not None:
        option = "--text-column" if modality == "text" else "--image-column"
        raise HeadstartError(f"{other} {given}: this model reads {modality}s, so {other} does not apply. Name the "
                             f"column of {modality}{' path' * (modality == 'image')}s with {option}, or leave it "
                             "out.")
    inputs, names, origins = [], [], []
    for item in items:
        if modality == "text":
            found, found_names = _text_inputs(item, text_column or "text")
        else:
            found, found_names, found_origins = _image_inputs(item, image_column)
            origins += found_origins
        inputs += found
        names += found_names
    if modality == "image":
        check_images(inputs, origins)
    else:
        bad = [name.strip() or repr(name) for text, name in zip(inputs, names) if not visible(text)]
        if bad:
            raise HeadstartError(f"Empty text in {first_five(bad)}: give some text to classify.")
        # the bytes as given, not the escapes Python read them as
        shown = [short(repr(name.encode("utf-8", "surrogateescape"))[2:-1], 60)
                 for text, name in zip(inputs, names) if not_utf8(text) is not None]
        if shown:
            raise HeadstartError(f"Not UTF-8 text: {first_five(shown)}. Give texts as UTF-8 (a terminal set to "
                                 "UTF-8, or the texts in a UTF-8 file).")
    return inputs, names


def unreadable_images(paths: list[str]) -> dict[int, str]:
    """{position: why} of the image files in `paths` that cannot be read."""
    problems = {}
    for i, path in enumerate(paths):
        try:
            open_rgb(path)
        except DECODE_ERRORS as exc:
            problems[i] = why_unreadable(exc)
    return problems


def check_images(paths: list[str], origins: list[str] | None = None) -> None:
    """Raise a clear error naming the image files that cannot be read, by their path and, where it is another,
    their origin (a table's row): the first five, and how many in all."""
    names = [shown_path(path) if origin in (None, path) else f"{origin} ({path})"
             for path, origin in zip(paths, origins or [None] * len(paths))]
    problems = [f"{names[i]}: {why}" for i, why in unreadable_images(paths).items()]
    if problems:
        count = f"{len(problems)} of {len(paths)} images cannot be read: " if len(problems) > 1 else ""
        raise HeadstartError(f"{count}{first_five(problems, '; ')}. Give PNG, JPEG, BMP, TIFF, WebP or GIF files, "
                             "or leave these out.")

"""What `headstart predict` makes of its arguments (headstart/inputs.py, gather_inputs): files, folders and tables
are read, texts are classified as they are, and a path that cannot be read is refused instead of classified."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from headstart.errors import HeadstartError
from headstart.inputs import gather_inputs

TEXTS = ["The central bank raised rates.", "The striker scored twice."]


@pytest.mark.parametrize("suffix, first_row", [(".csv", 2), (".jsonl", 1), (".parquet", 1), (".json", 1)])
def test_tables_give_their_text_column_by_row(tmp_path, suffix, first_row):
    path = tmp_path / f"articles{suffix}"
    table = pd.DataFrame({"body": TEXTS, "id": [1, 2]})
    if suffix == ".csv":
        table.to_csv(path, index=False)
    elif suffix == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_json(path, orient="records", lines=suffix == ".jsonl")
    inputs, names = gather_inputs([str(path)], "text", text_column="body")
    assert inputs == TEXTS
    assert names == [f"{path} row {first_row}", f"{path} row {first_row + 1}"]  # as given: two may share a name


def test_table_cells_are_read_as_the_file_holds_them(tmp_path):
    path = tmp_path / "codes.jsonl"
    path.write_text('{"text": "007", "date": "2021-01-01"}\n{"text": "1.50", "date": "2022-03-04"}\n')
    assert gather_inputs([str(path)], "text")[0] == ["007", "1.50"]  # not 7.0 and 1.5
    assert gather_inputs([str(path)], "text", text_column="date")[0] == ["2021-01-01", "2022-03-04"]


@pytest.mark.parametrize("line, kind", [('{"text": ["a", "b"]}', "list"), ('{"text": {"title": "a"}}', "dict")])
def test_a_cell_that_is_not_one_text_is_named_by_row(tmp_path, line, kind):
    path = tmp_path / "cells.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(HeadstartError, match=f"cells.jsonl row 2: column 'text' holds a {kind}"):
        gather_inputs([str(path)], "text")


def test_an_empty_quoted_cell_of_a_one_column_table_is_an_empty_text_and_a_blank_line_none(tmp_path):
    (tmp_path / "texts.csv").write_text('text\nShares rose\n\n""\nGoal\n')
    with pytest.raises(HeadstartError, match=r"Empty text in \S*texts.csv row 4: give some text"):
        gather_inputs([str(tmp_path / "texts.csv")], "text")  # it was left out, and the output one row short
    (tmp_path / "texts.csv").write_text("text\nShares rose\n\nGoal\n")
    assert gather_inputs([str(tmp_path / "texts.csv")], "text")[0] == ["Shares rose", "Goal"]


def test_a_text_argument_that_is_not_utf8_is_named_as_given():
    with pytest.raises(HeadstartError, match=r"Not UTF-8 text: caf\\xe9 bank\. Give texts as UTF-8"):
        gather_inputs(["Shares rose", "caf\udce9 bank"], "text")  # argv's reading of b"caf\xe9 bank"


def test_csv_rows_with_an_unquoted_comma_are_refused(tmp_path):
    path = tmp_path / "commas.csv"
    path.write_text("text,id\nprices rose, again,1\nrates fell, then rose,2\n")  # pandas made "prices rose" an index
    with pytest.raises(HeadstartError, match=r"commas.csv row 2 \(line 2\) has 3 fields, but the header line names 2 "
                                             r"columns: a text holding a comma must be quoted"):
        gather_inputs([str(path)], "text")


def test_txt_files_and_folders_of_them(tmp_path):
    (tmp_path / "news" / "old").mkdir(parents=True)
    (tmp_path / "news" / "a.txt").write_text(TEXTS[0])
    (tmp_path / "news" / "old" / "b.TXT").write_text(TEXTS[1])
    (tmp_path / "news" / ".draft.txt").write_text("hidden files are left out")
    (tmp_path / "news" / "cover.png").write_bytes(b"not a text")
    inputs, names = gather_inputs([str(tmp_path / "news"), str(tmp_path / "news" / "a.txt")], "text")
    assert inputs == TEXTS + TEXTS[:1]
    assert names == [str(tmp_path / "news" / "a.txt"), str(tmp_path / "news" / "old" / "b.TXT"),
                     str(tmp_path / "news" / "a.txt")]


@pytest.mark.parametrize("text", ["The market fell sharply today.", "see notes.txt", "and/or", "revenue: 5%",
                                  "https://example.com/feed.json", "two lines\nending in data.csv", "x" * 5000,
                                  "I want a refund/"])
def test_texts_are_classified_as_they_are(text):
    inputs, names = gather_inputs([text], "text")
    assert inputs == [text] and names == [text]


@pytest.mark.parametrize("item", ["artz.csv", "missing.txt", "texts.parquet", "rows.JSONL", "somefolder/",
                                  "my data/articles.csv", "x" * 5000 + ".txt"])
def test_a_path_that_does_not_exist_is_refused_not_classified(tmp_path, monkeypatch, item):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HeadstartError) as caught:
        gather_inputs([item], "text")
    message = str(caught.value)
    assert message.startswith(item[:297]) and "looks like a file or folder path, but there is no such" in message
    assert "put them in a .txt file" in message and len(message) < 700


def test_a_folder_without_txt_files_or_a_file_of_another_kind_is_refused(tmp_path):
    (tmp_path / "images" / "ok").mkdir(parents=True)
    (tmp_path / "images" / "ok" / "0.png").write_bytes(b"an image")
    with pytest.raises(HeadstartError, match="ok/ is a folder with no .txt files in it"):
        gather_inputs([f"{tmp_path / 'images' / 'ok'}/"], "text")
    with pytest.raises(HeadstartError, match="0.png is a file, but not a .txt file or a CSV / JSONL / JSON / Parquet "
                                             "table"):
        gather_inputs([str(tmp_path / "images" / "ok" / "0.png")], "text")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HeadstartError, match="empty is a folder with no image files in it"):
        gather_inputs([str(tmp_path / "empty")], "image")


def test_unreadable_tables_are_explained_by_line(tmp_path):
    broken = tmp_path / "badline.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": "cut sho\n{"text": "fine again"}\n')
    with pytest.raises(HeadstartError, match=r"badline.jsonl line 2 is not valid JSON .*Fix or remove that line"):
        gather_inputs([str(broken)], "text")
    latin = tmp_path / "articles.csv"
    latin.write_bytes("text\nprofits rose\ncaf\xe9 chain expands\n".encode("cp1252"))
    with pytest.raises(HeadstartError, match=r"articles.csv is not UTF-8 text: line 3 .*Save the file as UTF-8"):
        gather_inputs([str(latin)], "text")


def test_image_tables_give_their_column_of_paths_from_the_tables_folder(tmp_path):
    from PIL import Image

    (tmp_path / "cells").mkdir()
    for name in ("cells/a.png", "b.png", "m1.png", "m2.png"):
        Image.new("L", (8, 8)).save(tmp_path / name)
    table = pd.DataFrame({"id": [7, 8], "file": ["cells/a.png", str(tmp_path / "b.png")]})
    table.to_csv(tmp_path / "batch.csv", index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the one column of image file names is found; a relative path is read from the table's folder, not the cwd
    inputs, names = gather_inputs([str(tmp_path / "batch.csv")], "image")
    assert inputs == [str(tmp_path / "cells" / "a.png"), str(tmp_path / "b.png")] and names == table["file"].tolist()
    assert gather_inputs([str(tmp_path / "batch.csv")], "image", image_column="file")[0] == inputs

    table.assign(mask=["m1.png", "m2.png"]).to_json(tmp_path / "two.jsonl", orient="records", lines=True)
    with pytest.raises(HeadstartError, match=r"In .*two.jsonl columns file, mask all hold image file paths \(its "
                                             r"columns: id, file, mask\)\. Name the column with --image-column"):
        gather_inputs([str(tmp_path / "two.jsonl")], "image")
    assert gather_inputs([str(tmp_path / "two.jsonl")], "image", image_column="mask")[1] == ["m1.png", "m2.png"]
    with pytest.raises(HeadstartError, match=r"two.jsonl has no column 'path' .*--image-column"):
        gather_inputs([str(tmp_path / "two.jsonl")], "image", image_column="path")

    (tmp_path / "moved.csv").write_text("file,id\nb.png,1\na.png,2\n")
    with pytest.raises(HeadstartError, match=r"Column 'file' names image files that do not exist, at .*moved.csv row 3 "
                                             r"\(a.png\)\. Relative paths are read from the table's folder"):
        gather_inputs([str(tmp_path / "moved.csv")], "image")
    (tmp_path / "gap.csv").write_text("file,id\na.png,1\n,2\nc.png,3\n")
    with pytest.raises(HeadstartError, match=r"No image path in column 'file' at .*gap.csv row 3: give every row"):
        gather_inputs([str(tmp_path / "gap.csv")], "image")
    (tmp_path / "texts.csv").write_text("text\nno images here\n")
    with pytest.raises(HeadstartError, match=r"In .*texts.csv no column holds image file paths"):
        gather_inputs([str(tmp_path / "texts.csv")], "image")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "damaged.csv").write_text("file,id\nb.png,1\nnotes.png,2\n")
    with pytest.raises(HeadstartError, match=r"^.*damaged.csv row 3 \(.*notes.png\): not an image file that can be "
                                             r"decoded\. Give PNG"):
        gather_inputs([str(tmp_path / "damaged.csv")], "image")
    # every argument's unreadable images together, each named as its argument gives it
    with pytest.raises(HeadstartError, match=r"^2 of 4 images cannot be read: .*damaged.csv row 3 \(.*notes.png\): "
                                             r"not an image file that can be decoded; .*notes.png: not an image"):
        gather_inputs([str(tmp_path / "damaged.csv"), str(tmp_path / "b.png"), str(tmp_path / "notes.png")], "image")


def test_the_column_option_of_the_other_modality_is_refused(tmp_path):
    with pytest.raises(HeadstartError, match=r"^--text-column path: this model reads images, so --text-column does "
                                             r"not apply\. Name the column of image paths with --image-column"):
        gather_inputs([str(tmp_path)], "image", text_column="path")
    with pytest.raises(HeadstartError, match=r"^--image-column id: this model reads texts, so --image-column does not "
                                             r"apply\. Name the column of texts with --text-column"):
        gather_inputs(["A text"], "text", image_column="id")


def test_a_blank_image_argument_is_said_to_be_blank():
    with pytest.raises(HeadstartError, match=r"^'' \(an empty path\): no such image file, folder or table\.$"):
        gather_inputs([""], "image")


def test_a_folder_s_files_without_an_image_suffix_are_named_when_left_out(tmp_path, capsys):
    from PIL import Image

    for name in ("a.png", "b.jfif", "c"):
        Image.new("RGB", (8, 8)).save(tmp_path / name, format="PNG" if name != "b.jfif" else "JPEG")
    inputs, _ = gather_inputs([str(tmp_path)], "image")
    assert [Path(p).name for p in inputs] == ["a.png", "b.jfif"]
    said = " ".join(capsys.readouterr().err.split())
    assert f"1 file in {tmp_path} left out: no image suffix (c)." in said


def test_a_blank_path_in_a_json_table_does_not_hide_its_image_column(tmp_path):
    rows = [{"path": str(tmp_path / "a.png"), "label": "x"}, {"path": "", "label": "x"}]
    (tmp_path / "scans.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    with pytest.raises(HeadstartError, match=r"scans.jsonl row 2"):
        gather_inputs([str(tmp_path / "scans.jsonl")], "image")

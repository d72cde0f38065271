"""Reading data sources (bundled datasets, class folders, CSV / JSONL / Parquet tables) and checking every example
before training (headstart/data/sources.py, headstart/data/validate.py)."""

import io
import json
import os
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from headstart.config import DataConfig
from headstart.data.sources import read_source
from headstart.data.validate import check_examples
from headstart.errors import HeadstartError


def read_and_check(source, **fields):
    config = DataConfig(source=str(source), **fields)
    return check_examples(read_source(config), config)


def write_png(path, seed=0):
    """A small noise image: every seed gives a different picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_table(frame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


TEXTS = pd.DataFrame({"text": ["goal in the last minute", "shares fell", "a new striker", "profits rose",
                               "the cup final", "the bank cut rates"],
                      "label": ["sport", "business"] * 3})


@pytest.fixture(scope="module")
def elpv_checked():
    """The whole bundled ELPV set, read and checked once (decodes all 2624 images)."""
    return read_and_check("elpv")


def test_bbc_is_2225_texts_in_5_topics():
    examples, problems = read_and_check("bbc")
    frame = examples.frame
    assert examples.modality == "text" and len(frame) == 2225 and problems.empty
    assert sorted(frame["label"].unique()) == ["business", "entertainment", "politics", "sports", "tech"]
    assert all(isinstance(t, str) and t.strip() for t in frame["input"])
    assert frame["origin"].is_unique
    # the one article that is Latin-1, not UTF-8, keeps its pound sign
    assert "£15.8m signing" in frame.set_index("origin").at["bbc/sports/199.txt", "input"]


def test_elpv_is_2624_solar_cells_labelled_by_defect_probability(elpv_checked):
    examples, problems = elpv_checked
    frame = examples.frame
    assert examples.modality == "image" and len(frame) == 2624 and problems.empty
    assert examples.metadata_columns == ["cell_type", "defect_probability"]
    assert set(frame["cell_type"]) == {"mono", "poly"}
    assert ((frame["label"] == "defect") == (frame["defect_probability"] >= 0.5)).all()
    assert set(frame["label"]) == {"defect", "ok"}
    assert frame["exact"].notna().all() and frame["exact"].is_unique  # every image decoded and fingerprinted


def test_a_folder_of_image_class_folders(tmp_path):
    for i in range(6):
        write_png(tmp_path / ("cat" if i < 3 else "dog") / f"{i}.png", seed=i)
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden files are not examples
    write_png(tmp_path / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png", seed=0)  # nor those of hidden folders
    examples, problems = read_and_check(tmp_path)
    frame = examples.frame
    assert examples.modality == "image" and problems.empty
    assert sorted(zip(frame["origin"], frame["label"])) == [
        (str(tmp_path / label / f"{i}.png"), label) for i, label in enumerate(["cat"] * 3 + ["dog"] * 3)]
    assert frame["exact"].is_unique and frame["near"].notna().all()


def test_a_folder_of_text_class_folders(tmp_path):
    for i, (text, label) in enumerate(TEXTS.itertuples(index=False)):
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / f"{i}.txt").write_text(text)
    examples, problems = read_and_check(tmp_path)
    assert examples.modality == "text" and problems.empty
    assert sorted(zip(examples.frame["input"], examples.frame["label"])) == sorted(TEXTS.itertuples(index=False))
    (tmp_path / "sport" / "desktop.ini").write_text("[.ShellClassInfo]\n")  # what Windows leaves in folders
    examples, problems = read_and_check(tmp_path)
    assert examples.modality == "text" and len(examples.frame) == len(TEXTS)
    assert problems.values.tolist() == [[str(tmp_path / "sport" / "desktop.ini"),
                                         "not a .txt file, in a folder of text files"]]


@pytest.mark.parametrize("suffix, first_row", [(".csv", 2), (".jsonl", 1), (".parquet", 1)])
def test_a_table_of_texts(tmp_path, suffix, first_row):
    path = write_table(TEXTS, tmp_path / f"news{suffix}")
    examples, problems = read_and_check(path)
    frame = examples.frame
    assert examples.modality == "text" and problems.empty
    assert frame["input"].tolist() == TEXTS["text"].tolist() and frame["label"].tolist() == TEXTS["label"].tolist()
    assert frame["origin"].tolist() == [f"news{suffix} row {first_row + i}" for i in range(len(TEXTS))]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_table_of_image_paths_relative_to_the_table(tmp_path, suffix):
    folder = tmp_path / "dataset"  # not the working directory: paths must resolve against the table's folder
    names = [f"images/{i}.png" for i in range(6)]
    for i, name in enumerate(names):
        write_png(folder / name, seed=i)
    table = pd.DataFrame({"file": names, "label": ["cat", "dog"] * 3, "site": list("abcdef")})
    path = write_table(table, folder / f"cells{suffix}")
    examples, problems = read_and_check(path, image_column="file", metadata_columns=["site"])
    assert examples.modality == "image" and problems.empty
    assert examples.frame["input"].tolist() == [str((folder / name).resolve()) for name in names]
    assert examples.frame["site"].tolist() == list("abcdef") and examples.metadata_columns == ["site"]


def test_image_paths_written_from_the_current_folder_or_with_backslashes_are_named(tmp_path, monkeypatch):
    from headstart.inputs import gather_inputs

    names = [f"images/{i}.png" for i in range(6)]
    for i, name in enumerate(names):
        write_png(tmp_path / "dataset" / name, seed=i)
    monkeypatch.chdir(tmp_path)
    table = pd.DataFrame({"file": [f"dataset/{name}" for name in names], "label": ["cat", "dog"] * 3})
    from_here = write_table(table, tmp_path / "dataset" / "cells.csv")
    windows = write_table(table.assign(file=[name.replace("/", "\\") for name in names]),
                          tmp_path / "dataset" / "windows.csv")
    for read in (lambda path: read_and_check(path, image_column="file"),
                 lambda path: gather_inputs([str(path)], "image")):
        with pytest.raises(HeadstartError, match=r"cells.csv names image files from the current folder \(first: "
                                                 r"dataset/images/0.png\), but relative paths in a table are read "
                                                 r"from the table's folder"):
            read(from_here)
        with pytest.raises(HeadstartError, match=r"windows.csv separates folders with \\ \(first: images\\0.png\)"):
            read(windows)


def test_image_paths_are_read_as_written(tmp_path):
    names = ["0001", "0002", "0003", "0010", "0011", "0012"]  # files without a suffix, named by number
    for i, name in enumerate(names):
        write_png(tmp_path / "scan.png", seed=i).rename(tmp_path / name)
    path = tmp_path / "scans.csv"
    path.write_text("file,label\n" + "".join(f"{n},{'ab'[i % 2]}\n" for i, n in enumerate(names)))
    examples, problems = read_and_check(path, image_column="file")
    assert problems.empty and examples.frame["input"].tolist() == [str(tmp_path / n) for n in names]


def test_a_parquet_table_s_named_index_is_a_column(tmp_path):
    path = tmp_path / "news.parquet"
    TEXTS.assign(id=[f"p{i}" for i in range(len(TEXTS))]).set_index("id").to_parquet(path)
    examples, _ = read_and_check(path, group_column="id")
    assert examples.frame["group"].tolist() == [f"p{i}" for i in range(len(TEXTS))]
    assert examples.frame["origin"].iloc[0] == "news.parquet row 1"


@pytest.mark.parametrize("name, content", [("empty.jsonl", ""), ("blank.jsonl", "\n\n"), ("list.json", "[]"),
                                           ("header.csv", "text,label\n")])
def test_a_table_without_rows_is_named_as_empty(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(HeadstartError, match=rf"{name} holds no rows: a table needs one labelled example per row"):
        read_source(DataConfig(source=str(tmp_path / name)))


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("label,text,label\nold,shares fell,new\n")
    with pytest.raises(HeadstartError, match=r"header line of \S*news.csv names a column twice: 'label' \(columns "
                                             r"1, 3\)\. Rename or remove one"):
        read_and_check(path)


def test_a_missing_column_is_named_with_the_available_ones(tmp_path):
    path = write_table(TEXTS, tmp_path / "news.csv")
    with pytest.raises(HeadstartError) as caught:
        read_source(DataConfig(source=str(path), text_column="body"))
    message = str(caught.value)
    assert "'body'" in message and "data.text_column" in message and "text, label" in message


def test_a_corrupt_image_is_skipped_or_refused_by_its_path(tmp_path):
    for i in range(6):
        write_png(tmp_path / ("cat" if i < 3 else "dog") / f"{i}.png", seed=i)
    broken = tmp_path / "dog" / "broken.png"
    broken.write_bytes(b"these bytes are not an image")
    examples, problems = read_and_check(tmp_path, bad_inputs="skip")
    assert problems["origin"].tolist() == [str(broken)]
    assert problems["problem"].iat[0] == "not an image file that can be decoded"
    assert len(examples.frame) == 6 and str(broken) not in examples.frame["origin"].tolist()
    with pytest.raises(HeadstartError, match="cannot be used") as caught:
        read_and_check(tmp_path, bad_inputs="refuse")
    assert str(broken) in str(caught.value)


def bad_rows_csv(tmp_path):
    """Rows 2-7 are fine; row 8 has an empty text, row 9 a label that data.labels does not allow, row 10 a blank
    label."""
    bad = pd.DataFrame({"text": ["", "a weather report", "who knows"], "label": ["sport", "weather", "  "]})
    return write_table(pd.concat([TEXTS, bad]), tmp_path / "news.csv")


def test_empty_texts_and_bad_labels_are_skipped_and_listed_by_row(tmp_path):
    examples, problems = read_and_check(bad_rows_csv(tmp_path), labels=["sport", "business"])
    listed = dict(zip(problems["origin"], problems["problem"]))
    assert sorted(listed) == ["news.csv row 10", "news.csv row 8", "news.csv row 9"]
    assert listed["news.csv row 10"] == "missing label"
    assert listed["news.csv row 8"] == "empty text"
    assert listed["news.csv row 9"].startswith("unknown label 'weather'")
    assert examples.frame["input"].tolist() == TEXTS["text"].tolist()


def test_bad_rows_are_refused_by_row(tmp_path):
    with pytest.raises(HeadstartError) as caught:
        read_and_check(bad_rows_csv(tmp_path), labels=["sport", "business"], bad_inputs="refuse")
    message = str(caught.value)
    assert message.startswith("3 of 9 examples in")
    assert "news.csv row 8: empty text" in message and "news.csv row 9: unknown label 'weather'" in message
    assert "news.csv row 10: missing label" in message


@pytest.mark.parametrize("bad_inputs", ["skip", "refuse"])
def test_a_missing_label_is_skipped_or_refused_by_row(tmp_path, bad_inputs):
    path = write_table(pd.concat([TEXTS, pd.DataFrame({"text": ["no label here"], "label": [None]})]),
                       tmp_path / "news.csv")
    if bad_inputs == "refuse":
        with pytest.raises(HeadstartError, match="news.csv row 8: missing label"):
            read_and_check(path, bad_inputs="refuse")
    else:
        examples, problems = read_and_check(path)
        assert problems.values.tolist() == [["news.csv row 8", "missing label"]]
        assert len(examples.frame) == len(TEXTS)


def test_a_single_class_is_refused(tmp_path):
    path = write_table(TEXTS.assign(label="sport"), tmp_path / "news.csv")
    with pytest.raises(HeadstartError, match="only 'sport'.*at least two classes"):
        read_and_check(path)


def test_a_class_with_fewer_than_three_examples_is_named(tmp_path):
    path = write_table(TEXTS.iloc[:5], tmp_path / "news.csv")  # 3 sport, 2 business
    with pytest.raises(HeadstartError, match=r"'business' \(2\).*fewer than 3"):
        read_and_check(path)


def test_a_label_column_of_distinct_values_is_named_briefly(tmp_path):
    # data.label_column set to the text column: every text is a class of one
    rows = pd.DataFrame({"text": [f"{'word ' * 20}{i}" for i in range(40)], "label": ["a", "b"] * 20})
    with pytest.raises(HeadstartError) as error:
        read_and_check(write_table(rows, tmp_path / "news.csv"), label_column="text")
    message = str(error.value)
    assert "'word word word word word word word wo...' (1), and 35 more in" in message
    assert message.endswith("Column 'text' holds 40 different values in 40 examples: check that data.label_column "
                            "names the column of labels.")
    assert len(message) < 700


def test_a_class_lost_to_skipped_examples_names_them(tmp_path):
    rows = pd.concat([TEXTS.assign(label="sport"), pd.DataFrame({"text": ["  "], "label": ["business"]})])
    with pytest.raises(HeadstartError, match=r"only 'sport' once 1 unusable example is skipped \(\S*news.csv row 8: "
                                             r"empty text\)"):
        read_and_check(write_table(rows, tmp_path / "news.csv"))
    write_png(tmp_path / "folder" / "cat" / "0.png")
    (tmp_path / "folder" / "dog").mkdir()
    (tmp_path / "folder" / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(HeadstartError, match=r"class folders of \S*folder hold only 'cat' once 1 unusable example "
                                             r"is skipped \(\S*broken.png: not an image"):
        read_and_check(tmp_path / "folder")


def test_a_class_with_no_usable_example_is_refused_not_left_out(tmp_path):
    rows = pd.concat([TEXTS, pd.DataFrame({"text": [" ", "\u200b", ""], "label": ["tech"] * 3})])
    with pytest.raises(HeadstartError, match=r"Classes 'tech' \(0\) .* fewer than 3 usable examples once 3 unusable"):
        read_and_check(write_table(rows, tmp_path / "news.csv"))
    rows = pd.concat([rows, pd.DataFrame({"text": ["", "Rain", "Sun"], "label": ["sport", "weather", "weather"]})])
    with pytest.raises(HeadstartError, match=r"Classes 'tech' \(0\), 'weather' \(2\) .* fewer than 3 usable "
                                             r"examples once 3 unusable examples are skipped \(") as caught:
        read_and_check(write_table(rows, tmp_path / "news.csv"))  # the empty sport text is not why
    assert "row 11" not in str(caught.value)
    missing = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": ["x", "y", "y"]})
    with pytest.raises(HeadstartError, match=r"holds no labelled example once 3 unusable examples are skipped .* Fix "
                                             r"the problems listed \(an image path is read from the table's folder"):
        read_and_check(write_table(missing, tmp_path / "scans.csv"), image_column="path")
    for i in range(3):
        write_png(tmp_path / "folder" / "cat" / f"{i}.png", i)
        write_png(tmp_path / "folder" / "dog" / f"{i}.png", 10 + i)
        (tmp_path / "folder" / "fox" / f"{i}.png").parent.mkdir(exist_ok=True)
        (tmp_path / "folder" / "fox" / f"{i}.png").write_bytes(b"not an image")
    with pytest.raises(HeadstartError, match=r"Classes 'fox' \(0\) .* fewer than 3 usable examples"):
        read_and_check(tmp_path / "folder")
    (tmp_path / "folder" / "bird" / ".hidden").mkdir(parents=True)
    with pytest.raises(HeadstartError, match=r"Class folder bird in \S*folder holds no files: a class needs examples"):
        read_and_check(tmp_path / "folder")


def test_a_class_listed_in_data_labels_without_examples_is_refused(tmp_path):
    path = write_table(TEXTS, tmp_path / "news.csv")
    with pytest.raises(HeadstartError, match=r"Classes 'tech' \(0\) .* fewer than 3 usable examples"):
        read_and_check(path, labels=["sport", "business", "tech"])


def test_numbers_of_any_type_are_one_label_and_one_group(tmp_path):
    # JSON: 1, 1.0 and "1" are one class (with the text "1", 1.0 stayed "1.0"); a patient 101 / 101.0 / "101"
    rows = [{"text": f"note {i}", "label": [1, 1.0, "1", 2, 2.0, "2"][i % 6], "patient": [101, 101.0, "101"][i % 3]}
            for i in range(12)]
    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    examples, _ = read_and_check(path, group_column="patient")
    assert set(examples.frame["label"]) == {"1", "2"} and set(examples.frame["group"]) == {"101"}
    decimal = pd.DataFrame({"text": TEXTS["text"], "label": [Decimal("1.0"), Decimal("2.0")] * 3})
    examples, _ = read_and_check(write_table(decimal, tmp_path / "notes.parquet"))
    assert examples.frame["label"].tolist() == ["1", "2"] * 3  # was an AttributeError


def test_data_labels_are_read_as_the_data_s_labels_are(tmp_path):
    floats = write_table(TEXTS.assign(label=["0.0", "1.0"] * 3), tmp_path / "export.csv")  # a float export: 0 and 1
    examples, problems = read_and_check(floats, labels=["0.0", "1.0"])
    assert problems.empty and sorted(set(examples.frame["label"])) == ["0", "1"]
    flags = tmp_path / "flags.jsonl"  # JSON booleans are the words JSON writes, as data.labels gives them
    flags.write_text("".join(json.dumps({"text": t, "label": i % 2 == 0}) + "\n" for i, t in enumerate(TEXTS.text)))
    examples, problems = read_and_check(flags, labels=["true", "false"])
    assert problems.empty and sorted(set(examples.frame["label"])) == ["false", "true"]


def test_labels_and_groups_lose_surrounding_spaces_and_case_variants_are_named(tmp_path, capsys):
    labels = ["tech", "tech ", " tech", "tech", "Tech", "Tech", "Tech", "sport", "sport", "sport"]
    patients = ["p1", "p1 ", " p1", "p2", "p2", "P2", "p3", "p3", "p3", "p3"]
    table = pd.DataFrame({"text": [f"note number {i}" for i in range(10)], "label": labels, "patient": patients})
    examples, _ = read_and_check(write_table(table, tmp_path / "notes.csv"), group_column="patient")
    assert examples.frame["label"].tolist()[:3] == ["tech"] * 3 and examples.frame["group"].tolist()[:3] == ["p1"] * 3
    said = " ".join(capsys.readouterr().err.split())
    assert "Labels differ only in case ('tech' (4) and 'Tech' (3)): they are separate classes." in said
    assert "Values of the group column 'patient' differ only in case ('p2' (2) and 'P2' (1)): they are separate" in said
    ids = table.assign(patient=[f"id{i}" for i in range(5)] + [f"ID{i}" for i in range(5)])
    read_and_check(write_table(ids, tmp_path / "ids.csv"), group_column="patient")
    said = " ".join(capsys.readouterr().err.split())  # one warning per column, naming three sets
    assert said.count("Values of the group column") == 1 and "'ID2' (1); and 2 more sets)" in said
    with pytest.raises(HeadstartError, match=r"Classes 'Tech' \(2\) .* 'tech', 'Tech' differ only in case: if they "
                                             r"are one class, write them alike"):
        read_and_check(write_table(table.drop(index=[5]).assign(patient=None), tmp_path / "fewer.csv"))


def test_class_folder_names_lose_surrounding_spaces_as_labels_do(tmp_path):
    for i, (label, text) in enumerate(zip(["sport ", "business"] * 3, TEXTS["text"])):
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / f"{i}.txt").write_text(text)
    examples, problems = read_and_check(tmp_path, labels=["sport", "business"])
    assert problems.empty and sorted(set(examples.frame["label"])) == ["business", "sport"]


def test_a_text_column_of_numbers_only_is_refused_as_the_wrong_column(tmp_path):
    table = TEXTS.assign(priority=[1, 2, 3, 1, 2, 3])
    with pytest.raises(HeadstartError, match=r"The texts of .*notes.csv \(column 'priority'\) are all numbers \(3 "
                                             r"different: '1', '2', '3'\).*Name the column of texts with "
                                             r"data.text_column"):
        read_and_check(write_table(table, tmp_path / "notes.csv"), text_column="priority")
    with pytest.raises(HeadstartError, match=r"are all numbers \(6 different: '1,000,000', '-.5', '3.5e2', '\+1', "):
        read_and_check(write_table(TEXTS.assign(text=["1,000,000", "-.5", "3.5e2", "+1", "10,000.50", "7 "]),
                                   tmp_path / "amounts.csv"))
    read_and_check(write_table(table.assign(text=["1", "2", "3 goals", "4", "5", "6"]), tmp_path / "some.csv"))
    for i, (label, text) in enumerate(zip(TEXTS["label"], ["12", "7", "3", "4", "1,000", "2"])):
        (tmp_path / "folder" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / label / f"{i}.txt").write_text(text + "\n")
    with pytest.raises(HeadstartError, match=r"The .txt files of .*folder hold only numbers \(6 different: '7', "
                                             r"'4'.*put the texts to classify in them"):
        read_and_check(tmp_path / "folder")


def test_csv_metadata_is_read_as_written(tmp_path):
    table = TEXTS.assign(site=["NA", "EU", "None", "", "NA", "EU"], code=["001", "002", "000", "001", "002", "000"],
                         score=["0.5", "1", "", "2.25", "3", "1e-05"])
    examples, _ = read_and_check(write_table(table, tmp_path / "news.csv"), metadata_columns=["site", "code", "score"])
    frame = examples.frame
    assert frame["site"].fillna("(blank)").tolist() == ["NA", "EU", "None", "(blank)", "NA", "EU"]  # NA: America
    assert frame["code"].tolist() == ["001", "002", "000", "001", "002", "000"]  # codes are not numbers
    assert frame["score"].tolist()[:2] == [0.5, 1.0] and np.isnan(frame["score"].iat[2])  # numbers stay numbers


def test_a_list_in_a_metadata_column_is_named_by_row(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": l, "tags": ["x"] if i == 4 else "x"}) + "\n"
                            for i, (t, l) in enumerate(TEXTS.itertuples(index=False))))
    with pytest.raises(HeadstartError, match="notes.jsonl row 5: column 'tags' holds a list"):
        read_and_check(path, metadata_columns=["tags"])


def test_a_csv_starting_with_a_blank_line_is_explained(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("\n" + TEXTS.to_csv(index=False))
    with pytest.raises(HeadstartError, match="The first line of .*news.csv is blank: a CSV starts with its header"):
        read_and_check(path)
    for content in ["", " \n\n"]:
        path.write_text(content)
        with pytest.raises(HeadstartError, match="news.csv is empty: a CSV starts with a header line naming its "):
            read_and_check(path)


@pytest.mark.parametrize("content, message", [
    ('text,label\n"Shares\nrose",business\n"Goal,sport\nThe match,sport\n',
     r'\S*news.csv row 3 \(line 4\) opens a quote \(\"\) that nothing after it closes'),
    ('text,label\n"Shares\nrose",business\n\nGoal, at last,sport\n',  # a text over two lines, a blank line
     r"\S*news.csv row 4 \(line 5\) has 3 fields, but the header line names 2 columns: a text holding a comma"),
    ("text;label\nShares rose;business\n", r"news.csv looks separated by ';', not commas: its header line "
                                            r"'text;label' reads as a single column"),
    ("text\tlabel\nShares rose\tbusiness\n", "news.csv looks separated by tabs, not commas"),
])
def test_malformed_csv_files_are_explained(tmp_path, content, message):
    (tmp_path / "news.csv").write_text(content)
    with pytest.raises(HeadstartError, match=message):
        read_and_check(tmp_path / "news.csv")


def test_a_folder_without_class_folders_shows_the_layout(tmp_path):
    with pytest.raises(HeadstartError, match=f"class: {tmp_path}/<label>/<file>"):
        read_and_check(tmp_path)


@pytest.mark.parametrize("name", ["news.csv", "news.jsonl"])
def test_a_blank_group_is_reported_by_row(tmp_path, name):
    table = pd.concat([TEXTS, TEXTS], ignore_index=True)
    groups = [{3: None, 4: "", 6: "   "}.get(i, f"g{i}") for i in range(len(table))]  # missing, empty, spaces
    path = write_table(table.assign(group=groups), tmp_path / name)
    examples, problems = read_and_check(path, group_column="group")
    first = 2 if name.endswith(".csv") else 1  # a CSV's first row of data is its line 2
    assert problems.values.tolist() == [[f"{name} row {i + first}", "no value in the group column 'group'"]
                                        for i in (3, 4, 6)]
    assert None not in examples.frame["group"].tolist()


def test_integer_labels_with_a_blank_stay_integers(tmp_path):
    table = pd.DataFrame({"text": [f"text {i}" for i in range(7)], "label": [0, 1, 0, 1, 0, 1, None]})
    examples, problems = read_and_check(write_table(table, tmp_path / "news.csv"))
    assert sorted(set(examples.frame["label"])) == ["0", "1"]
    assert problems.values.tolist() == [["news.csv row 8", "missing label"]]


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    from headstart.data.images import open_rgb

    gradient = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "deep.png")
    pixels = np.asarray(open_rgb(tmp_path / "deep.png"))
    assert pixels.min() == 0 and pixels.max() == 255 and (pixels == 255).mean() < 0.01


def test_arrays_of_other_types_give_the_pixels_a_file_would(tmp_path):
    from headstart.data.images import to_tensor

    dark = np.random.default_rng(0).integers(20, 120, (24, 24, 3)).astype(np.uint8)  # not spanning 0..255
    Image.fromarray(dark).save(tmp_path / "dark.png")
    from_file = to_tensor(str(tmp_path / "dark.png"), 16)
    for array in (dark.astype(np.int64), dark.astype(np.float32) / 255, dark.astype(np.float64) / 255,
                  dark.astype(np.float32)):  # floats of 0..255 too, as `astype` gives them
        assert torch.equal(to_tensor(array, 16), from_file), array.dtype
    wide = (dark.astype(np.uint16) - 20) * 600  # 16-bit grey values: scaled over their range, as 16-bit files are
    assert to_tensor(wide[..., 0], 24).max() == 255 and to_tensor(wide[..., 0], 24).min() == 0
    # 16-bit colour: the high byte of each value, as Pillow reads a 16-bit colour PNG; 8-bit values as they are
    assert torch.equal(to_tensor(wide, 24), torch.from_numpy((wide >> 8).astype(np.uint8)).permute(2, 0, 1))
    assert torch.equal(to_tensor(dark.astype(np.uint16), 16), from_file)
    rounded = dark.astype(np.float32) / 255
    rounded[0, 0, 0] = 1.0000001  # a resampled image's rounding error: still an image of 0..1
    assert torch.equal(to_tensor(np.clip(rounded, 0, 1), 24), to_tensor(rounded, 24))
    Image.fromarray(dark[..., 0].astype(np.uint16)).save(tmp_path / "dark16.png")  # a dark 16-bit file, and its
    assert torch.equal(to_tensor(dark[..., 0].astype(np.uint16), 24), to_tensor(tmp_path / "dark16.png", 24))  # array


def test_transparent_pixels_are_composited_on_white_whatever_colour_they_hide(tmp_path):
    from headstart.data.images import open_rgb

    shape = np.zeros((16, 16), np.uint8)
    shape[4:12, 4:12] = 255
    under_black, under_white = np.zeros((16, 16, 4), np.uint8), np.full((16, 16, 4), 255, np.uint8)
    for pixels in (under_black, under_white):
        pixels[..., :3][shape > 0] = 40  # a dark square, opaque; elsewhere transparent over black or white
        pixels[..., 3] = shape
    Image.fromarray(under_black).save(tmp_path / "a.png")
    Image.fromarray(under_white).save(tmp_path / "b.png")
    seen = [np.asarray(open_rgb(source)) for source in (tmp_path / "a.png", tmp_path / "b.png", under_black,
                                                         Image.fromarray(under_white), (tmp_path / "a.png").read_bytes())]
    assert all(np.array_equal(pixels, seen[0]) for pixels in seen)  # the picture a viewer shows, whatever is hidden
    assert seen[0][0, 0].tolist() == [255, 255, 255] and seen[0][8, 8].tolist() == [40, 40, 40]
    Image.fromarray(shape, "L").convert("LA").save(tmp_path / "grey.png")
    assert np.asarray(open_rgb(tmp_path / "grey.png")).shape == (16, 16, 3)


def test_empty_and_oversized_image_files_are_named_with_what_to_do(tmp_path, monkeypatch):
    from headstart.data.images import DECODE_ERRORS, open_rgb, why_unreadable

    (tmp_path / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 pixels: over twice the limit, refused as a bomb
    said = []
    for path in (tmp_path / "empty.jpg", tmp_path / "big.png"):
        with pytest.raises(DECODE_ERRORS) as caught:
            open_rgb(path)
        said.append(why_unreadable(caught.value))
    assert said[0] == "an empty file (0 bytes)"
    assert said[1].startswith("too large to decode safely (") and said[1].endswith("downscale it below 0 million pixels")


def test_folders_behind_symbolic_links_are_read_and_a_broken_link_is_named(tmp_path):
    for i in range(4):
        write_png(tmp_path / "data" / "a" / f"{i}.png", seed=i)
        write_png(tmp_path / "more" / f"{i}.png", seed=10 + i)
    (tmp_path / "data" / "b").mkdir()
    (tmp_path / "data" / "b" / "linked").symlink_to(tmp_path / "more", target_is_directory=True)
    (tmp_path / "more" / "loop").symlink_to(tmp_path / "more", target_is_directory=True)  # read once
    (tmp_path / "data" / "a" / "gone.png").symlink_to(tmp_path / "nothere.png")
    os.mkfifo(tmp_path / "data" / "a" / "pipe.png")  # not a file: reading it would wait for ever
    examples, problems = read_and_check(tmp_path / "data")
    assert (examples.frame["label"] == "b").sum() == 4 and len(examples.frame) == 8
    assert problems.values.tolist() == [[str(tmp_path / "data" / "a" / "gone.png"), "no such image file"]]
    for i, (label, text) in enumerate(zip(TEXTS["label"], TEXTS["text"])):
        (tmp_path / "texts" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "texts" / label / f"{i}.txt").write_text(text)
    (tmp_path / "texts" / "sport" / "gone.txt").symlink_to(tmp_path / "nothere.txt")
    examples, problems = read_and_check(tmp_path / "texts")
    assert len(examples.frame) == 6
    assert problems.values.tolist() == [[str(tmp_path / "texts" / "sport" / "gone.txt"), "no such file (a broken link)"]]


def test_array_layouts_are_read_or_refused_by_their_shape():
    from headstart.backbones.image import ImageBackbone

    grey = np.random.default_rng(0).integers(0, 256, (24, 24)).astype(np.uint8)
    backbone = ImageBackbone(16, (0.5,) * 3, (0.25,) * 3)

    def pixels(image):
        return backbone.prepare([image])["pixels"][0]

    assert torch.equal(pixels(grey[..., None]), pixels(grey))  # (H, W, 1): one grey channel
    assert torch.equal(pixels(grey > 127), pixels(np.where(grey > 127, 255, 0).astype(np.uint8)))  # True is white
    for bad, why in [(np.stack([grey] * 3), r"not of shape \(3, 24, 24\) \(a channels-first array"),
                     (np.zeros((0, 24, 3)), r"not of shape \(0, 24, 3\)"),
                     (np.full((24, 24), np.nan), "non-finite values"),
                     (torch.zeros(24, 24, 3), r"An input \(Tensor\) .* a Tensor is not an image input")]:
        with pytest.raises(HeadstartError, match=why):
            pixels(bad)


def test_photos_are_read_upright_by_their_exif_orientation(tmp_path):
    from headstart.data.images import fingerprint, to_tensor

    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the viewer turns the stored pixels 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    Image.fromarray(np.rot90(pixels, -1).copy()).save(tmp_path / "upright.jpg", quality=95)
    turned = to_tensor(tmp_path / "phone.jpg", 30)
    assert turned[0, :10].float().mean() > 200 and turned[0, -10:].float().mean() < 50  # the band is now on top
    assert (turned.int() - to_tensor(tmp_path / "upright.jpg", 30).int()).abs().max() < 30  # JPEG's rounding
    assert to_tensor((tmp_path / "phone.jpg").read_bytes(), 30).equal(turned)
    with Image.open(tmp_path / "phone.jpg") as opened:  # a PIL image of the file: as the path
        assert to_tensor(opened, 30).equal(turned)
    assert fingerprint(str(tmp_path / "phone.jpg"))[1] == fingerprint(str(tmp_path / "upright.jpg"))[1]
    # a damaged tag elsewhere in the EXIF block (the camera make's ASCII re-tagged as a rational): still upright
    exif[0x010F] = "cam"
    stored = io.BytesIO()
    Image.fromarray(pixels).save(stored, "JPEG", exif=exif, quality=95)
    damaged = stored.getvalue().replace(b"\x01\x0f\x00\x02", b"\x01\x1e\x00\x02", 1)
    assert damaged != stored.getvalue() and to_tensor(damaged, 30).equal(to_tensor(stored.getvalue(), 30))


def test_csv_labels_and_texts_are_read_as_written_and_rows_keep_their_numbers(tmp_path):
    lines = ["text,label,site", "goal in the last minute,NA,1", "shares fell,007,2", "", "a new striker,7,3",
             "NA,NA,4", "profits rose,,5", "the cup final,007,6", "the bank cut rates,7,7", "rates rose,NA,8",
             "a late winner,007,9", "a home win,7,10"]
    (tmp_path / "news.csv").write_text("\n".join(lines) + "\n")
    examples, problems = read_and_check(tmp_path / "news.csv", metadata_columns=["site"])
    frame = examples.frame
    # 'NA' is a label and a text, '007' and '7' are two labels; only the blank cell is missing
    assert sorted(set(frame["label"])) == ["007", "7", "NA"] and "NA" in frame["input"].tolist()
    assert problems.values.tolist() == [["news.csv row 7", "missing label"]]  # file line 7: the blank line counts
    assert frame.loc[frame["input"] == "a new striker", "origin"].item() == "news.csv row 5"
    assert frame["site"].dtype.kind in "if" and frame["site"].tolist()[:3] == [1, 2, 3]  # numbers, for slices


def test_parquet_and_json_rows_are_numbered_as_they_come_and_jsonl_by_line(tmp_path):
    frame = pd.DataFrame({"text": [f"story number {i}" for i in range(6)], "label": ["a", "b"] * 3})
    frame.index = ["x", "y", "x", "z", "w", "v"]  # an index saved with the table: repeated, and not numbers
    frame.to_parquet(tmp_path / "news.parquet")
    examples, _ = read_and_check(tmp_path / "news.parquet")
    assert examples.frame["origin"].tolist() == [f"news.parquet row {i}" for i in range(1, 7)]
    (tmp_path / "news.jsonl").write_text('{"text": "first story", "label": "a"}\n\n'
                                         '{"text": "second story", "label": "b"}\n')
    examples = read_source(DataConfig(source=str(tmp_path / "news.jsonl")))
    assert examples.frame["origin"].tolist() == ["news.jsonl row 1", "news.jsonl row 3"]  # the blank line counts


@pytest.mark.parametrize("row, column", [('{"text": ["a", "list"], "label": "a"}', "text"),
                                         ('{"text": "a story", "label": {"name": "a"}}', "label")])
def test_a_list_or_object_in_a_cell_is_named_by_row(tmp_path, row, column):
    (tmp_path / "news.jsonl").write_text('{"text": "first story", "label": "a"}\n' + row + "\n")
    with pytest.raises(HeadstartError, match=f"news.jsonl row 2: column '{column}' holds a (list|dict) .* not a "
                                             "single value"):
        read_source(DataConfig(source=str(tmp_path / "news.jsonl")))


def test_a_metadata_column_may_not_take_a_name_headstart_uses():
    with pytest.raises(ValueError, match="group: headstart names its own columns"):
        DataConfig(source="x.csv", metadata_columns=["site", "group"])


def test_a_malformed_jsonl_line_is_named_by_its_line_number(tmp_path):
    path = write_table(TEXTS, tmp_path / "news.jsonl")
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:15]  # truncated mid-object, as a copy cut short leaves it
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HeadstartError) as caught:
        read_source(DataConfig(source=str(path)))
    message = str(caught.value)
    assert f"{path} line 4 is not valid JSON" in message and "Fix or remove that line" in message
    path.write_text("\n".join(lines[:3] + ['["a list", "not an object"]']) + "\n")
    with pytest.raises(HeadstartError, match="line 4 is not a JSON object"):
        read_source(DataConfig(source=str(path)))


@pytest.mark.parametrize("encoding, line, byte", [("cp1252", 3, "0xe9"), ("utf-16", 1, "0xff")])
def test_a_table_that_is_not_utf8_is_refused_with_its_line(tmp_path, encoding, line, byte):
    path = tmp_path / "news.csv"
    path.write_bytes("text,label\nshares fell,business\ncafé owners protest,business\n".encode(encoding))
    with pytest.raises(HeadstartError) as caught:
        read_source(DataConfig(source=str(path)))
    message = str(caught.value)
    assert f"{path} is not UTF-8 text" in message and f"line {line} has the byte {byte}" in message
    assert "Save the file as UTF-8" in message
    assert ("UTF-16" in message) == (encoding == "utf-16")


def test_a_utf8_table_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "news.csv"
    path.write_bytes(TEXTS.to_csv(index=False).encode("utf-8-sig"))  # what Excel's "CSV UTF-8" writes
    examples, problems = read_and_check(path)
    assert problems.empty and examples.frame["input"].tolist() == TEXTS["text"].tolist()


def test_a_text_file_that_is_not_utf8_is_refused_by_its_path(tmp_path):
    for i, (text, label) in enumerate(TEXTS.itertuples(index=False)):
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / f"{i}.txt").write_text(text)
    latin = tmp_path / "business" / "latin.txt"
    latin.write_bytes("Profits\nrose 5% at the caf\xe9 chain".encode("cp1252"))
    with pytest.raises(HeadstartError, match=f"{latin} is not UTF-8 text: line 2 has the byte 0xe9"):
        read_source(DataConfig(source=str(tmp_path)))


def test_an_image_table_without_image_column_says_to_set_it(tmp_path):
    names = [f"images/{i}.png" for i in range(6)]
    for i, name in enumerate(names):
        write_png(tmp_path / name, seed=i)
    path = write_table(pd.DataFrame({"file": names, "label": ["cat", "dog"] * 3}), tmp_path / "cells.csv")
    with pytest.raises(HeadstartError) as caught:
        read_source(DataConfig(source=str(path)))
    message = str(caught.value)
    assert "Column 'file' of" in message and "holds image file paths" in message
    assert "data.image_column: file" in message
    with pytest.raises(HeadstartError, match="Column 'file' of .* holds image file paths"):
        read_source(DataConfig(source=str(path), text_column="file"))  # image paths are not texts
    examples = read_source(DataConfig(source=str(path), image_column="file"))
    assert examples.modality == "image"


def test_a_missing_text_column_also_points_to_image_column(tmp_path):
    path = write_table(TEXTS.rename(columns={"text": "body"}), tmp_path / "news.csv")
    with pytest.raises(HeadstartError, match=r"Set data.text_column to one of them \(or data.image_column"):
        read_source(DataConfig(source=str(path)))


def test_metadata_columns_a_folder_or_bundled_dataset_lacks_are_refused(tmp_path):
    for i, (text, label) in enumerate(TEXTS.itertuples(index=False)):
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / f"{i}.txt").write_text(text)
    with pytest.raises(HeadstartError, match=f"names site, but the folder {tmp_path} has no such column"):
        read_source(DataConfig(source=str(tmp_path), metadata_columns=["site"]))
    with pytest.raises(HeadstartError, match="'bbc' has no such column .its metadata columns: none"):
        read_source(DataConfig(source="bbc", metadata_columns=["outlet"]))
    with pytest.raises(HeadstartError, match="its metadata columns: cell_type, defect_probability"):
        read_source(DataConfig(source="elpv", metadata_columns=["panel"]))
    elpv = read_source(DataConfig(source="elpv", metadata_columns=["cell_type"]))  # what elpv carries is fine
    assert elpv.metadata_columns == ["cell_type", "defect_probability"]


def test_a_large_photo_is_opened_without_pillow_s_warning():
    import io
    import warnings

    from headstart.data.images import open_file

    buffer = io.BytesIO()
    Image.new("1", (10_000, 9_500)).save(buffer, format="PNG")  # 95 million pixels: over Pillow's 89 million
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_file(buffer.getvalue()).size == (10_000, 9_500)


def test_a_file_beside_the_class_folders_is_named_as_left_out(tmp_path, capsys):
    for i in range(3):
        write_png(tmp_path / "folder" / "cat" / f"{i}.png", i)
        write_png(tmp_path / "folder" / "dog" / f"{i}.png", 10 + i)
    write_png(tmp_path / "folder" / "stray.png", 20)
    (tmp_path / "folder" / "notes.md").write_text("about the data")  # not an example: not named
    examples, _ = read_and_check(tmp_path / "folder")
    assert len(examples.frame) == 6
    said = " ".join(capsys.readouterr().err.split())
    assert "1 file at the top of" in said and "left out, being in no class folder: stray.png. Move each" in said
    assert "notes.md" not in said

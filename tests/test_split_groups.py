"""data.group_column where there are no groups to split by (a class folder, a bundled dataset, a blank column):
one clear error, not a comparison of None with None."""

import pandas as pd
import pytest

from headstart.config import DataConfig
from headstart.data.prepare import prepare_data
from headstart.errors import HeadstartError


def text_folder(root):
    for label in ("sport", "business"):
        for i in range(20):
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / f"{i}.txt").write_text(f"{label} story number {i} " * 3)
    return root


def blank_group_table(path):
    rows = [{"text": f"{label} story number {i}", "label": label, "patient": None}
            for label in ("sport", "business") for i in range(20)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("source, error", [
    pytest.param(lambda tmp: text_folder(tmp / "stories"), "the folder .*stories has no group column", id="folder"),
    pytest.param(lambda tmp: "bbc", "the bundled dataset 'bbc' has no group column", id="bundled"),
    pytest.param(lambda tmp: blank_group_table(tmp / "notes.csv"), "no usable row of the table has a group value",
                 id="blank-column"),
])
def test_a_group_column_without_any_group_is_explained(tmp_path, source, error):
    config = DataConfig(source=str(source(tmp_path)), group_column="patient")
    with pytest.raises(HeadstartError, match=error):
        prepare_data(config, tmp_path, write=False)


@pytest.mark.parametrize("field, value", [("label_column", "topic"), ("text_column", "body"),
                                          ("image_column", "path")])
def test_table_columns_set_for_a_folder_or_bundled_dataset_are_refused(tmp_path, field, value):
    folder = str(text_folder(tmp_path / "stories"))
    for source, what in [(folder, "the folder .*stories"), ("bbc", "the bundled dataset 'bbc'")]:
        with pytest.raises(HeadstartError, match=f"data.{field} is '{value}', but {what} is not a table: .* Leave "
                                                 f"data.{field} out"):
            prepare_data(DataConfig(source=source, **{field: value}), tmp_path, write=False)


@pytest.mark.parametrize("patients", [1, 2])
def test_too_few_groups_for_three_splits_are_named(tmp_path, patients):
    rows = [{"text": f"{label} story number {i}", "label": label, "patient": f"p{i % patients}"}
            for label in ("sport", "business") for i in range(20)]
    pd.DataFrame(rows).to_csv(tmp_path / "notes.csv", index=False)
    config = DataConfig(source=str(tmp_path / "notes.csv"), group_column="patient")
    with pytest.raises(HeadstartError, match=f"data.group_column holds {patients} distinct group.*needs at least 3"):
        prepare_data(config, tmp_path, write=False)

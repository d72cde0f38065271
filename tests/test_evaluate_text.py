"""`headstart evaluate` on a text run: MiniLM on 60 BBC News articles (feature extraction, one short epoch)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import headstart
from headstart.config import DataConfig
from headstart.data.sources import read_source
from tests.test_evaluate_run import tuned_on_validation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def news_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("news")
    frame = read_source(DataConfig(source="bbc")).frame.groupby("label").sample(12, random_state=0)
    table = pd.DataFrame({"text": frame["input"], "label": frame["label"],
                          "outlet": ["wire" if i % 3 else "web" for i in range(len(frame))]})
    table.to_csv(folder / "news.csv", index=False)
    return headstart.fit({"name": "news", "data": {"source": str(folder / "news.csv"), "max_length": 32,
                                                   "metadata_columns": ["outlet"]},
                          "backbone": "minilm", "strategy": {"name": "feature_extraction"},
                          "train": {"max_epochs": 1, "batch_size": 16, "lr": 0.01},
                          "evaluate": {"after_fit": False}, "output": str(folder / "runs")})


@pytest.fixture(scope="module")
def news_metrics(news_run):
    return news_run.evaluate(slice_by=["outlet"], bootstrap=200, latency=False)


def test_text_report_has_text_perturbations_snippets_and_slices(news_run, news_metrics):
    assert news_metrics["data"]["modality"] == "text"
    assert set(news_metrics["robustness"]["perturbations"]) == {"typos", "lowercase", "uppercase", "truncate_half",
                                                                "first_sentence"}
    # all-MiniLM-L6-v2 lower-cases its input: changing the case cannot change a prediction
    assert news_metrics["robustness"]["perturbations"]["lowercase"]["changed"] == 0
    assert set(news_metrics["slices"]["outlet"]["slices"]) == {"web", "wire"}
    for mistake in news_metrics["failures"]["confident_mistakes"]:
        assert mistake["origin"].startswith("news.csv row ") and mistake["snippet"]
    assert news_metrics["overall"]["accuracy"] == pytest.approx(news_run.test_metrics["test_acc"], abs=1e-6)
    html = (news_run.path / "report.html").read_text()
    assert "TF-IDF + logistic regression" in html and "<h3>outlet</h3>" in html


def test_text_baselines_match_an_independent_scikit_learn_computation(news_run, news_metrics):
    import torch
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from headstart.backbones.registry import build

    table = pd.read_csv(news_run.config.data.source)
    split = news_run.split
    rows = {name: [int(o.rsplit(" ", 1)[1]) - 2 for o in split.loc[split["split"] == name, "origin"]]
            for name in ("train", "val", "test")}
    c, accuracy = tuned_on_validation(
        lambda c: make_pipeline(TfidfVectorizer(sublinear_tf=True), LogisticRegression(C=c, max_iter=5000)),
        {name: table["text"].iloc[r] for name, r in rows.items()},
        {name: table["label"].iloc[r] for name, r in rows.items()})
    classical = news_metrics["baselines"]["classical"]
    assert classical["description"] == "TF-IDF + logistic regression"
    assert classical["C"] == c and classical["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    backbone = build("minilm", news_run.config.data).eval()  # the pretrained encoder, as the run started from it
    texts = {name: table["text"].iloc[r].tolist() for name, r in rows.items()}
    with torch.inference_mode():
        features = {name: backbone(**backbone.prepare(x)).numpy() for name, x in texts.items()}
    c, accuracy = tuned_on_validation(
        lambda c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)), features,
        {name: table["label"].iloc[r] for name, r in rows.items()})
    frozen = news_metrics["baselines"]["frozen_logreg"]
    assert frozen["C"] == c and frozen["accuracy"] == pytest.approx(accuracy, abs=0.02)
    assert frozen["gain"]["accuracy"] == pytest.approx(news_metrics["overall"]["accuracy"] - frozen["accuracy"])
    assert np.isfinite(frozen["gain"]["accuracy_ci"]).all()


def test_a_loaded_text_model_runs_32_texts_a_batch(news_run, forward_sizes):
    model = headstart.load(news_run.model_dir)
    texts = read_source(DataConfig(source="bbc")).frame["input"].head(40).tolist()
    assert model.batch_size == 32
    by_32, by_40 = model.probabilities(texts), model.probabilities(texts, batch_size=40)
    assert forward_sizes == [32, 8, 40]
    assert by_32.shape == (40, 5) and np.allclose(by_32.numpy(), by_40.numpy(), atol=1e-5)


def test_a_loaded_text_model_refuses_what_is_not_a_text_and_opens_from_its_run_folder(news_run):
    model = headstart.load(news_run.path)  # the run folder: its model/ is opened
    assert model.folder == news_run.model_dir
    for texts, message in [(["Shares rose", ""], "Input 1 is an empty text"),
                           (["\u200b \n"], "Input 0 is an empty text"),  # a zero-width space draws nothing
                           ([None], "Input 0 is a NoneType, not a text"),
                           (["caf\udce9"], "Input 0 holds bytes that are not UTF-8 text"),  # argv's reading of b"\xe9"
                           ("Shares rose", r"Give a list of inputs, e.g. predict\(\['Shares rose'\]\), not a single str"),
                           # a DataFrame was read as its column names, one per batch of rows
                           (pd.DataFrame({"text": ["Shares rose"] * 40}), r"not a DataFrame: .*predict\(df\['text'\]\)"),
                           (np.array([["Shares rose"], ["Goal"]]), r"not a 2-D array: array.ravel\(\).tolist\(\)"),
                           ({"Shares rose": 1}, "Give a list of inputs, not a dict: the predictions come in the order"),
                           ({"Shares rose"}, "Give a list of inputs, not a set"), (None, "not a NoneType")]:
        with pytest.raises(headstart.HeadstartError, match=message):
            model.predict(texts)
    with pytest.raises(headstart.HeadstartError, match="batch_size must be a whole number of 1 or more, not 2.0"):
        model.predict(["Shares rose"], batch_size=2.0)
    # any ordered iterable is a list of inputs: a generator, a Series, a tuple
    expected = model.predict(["Shares rose", "Goal"])
    assert model.predict(t for t in ["Shares rose", "Goal"]) == expected
    assert model.predict(pd.Series(["Shares rose", "Goal"], index=[7, 3])) == expected


def test_a_text_a_perturbation_leaves_empty_stays_as_it_was():
    from headstart.evaluate.perturb import apply

    text = "\u200b \u200b \u200b \u200b shares rose sharply"  # its first half of the words draws nothing
    assert apply("truncate_half", "text", [text], seed=0) == [text]
    assert apply("truncate_half", "text", ["one two three four"], seed=0) == ["one two"]


def test_rows_of_another_source_without_visible_text_are_skipped(tmp_path):
    from headstart.evaluate.examples import other_source

    table = tmp_path / "new.csv"
    table.write_text("text,label\nShares rose,business\n\u200b,business\nThe striker scored,sport\n",
                     encoding="utf-8")
    _, frame, skipped = other_source(DataConfig(source=str(table)), str(table), ["business", "sport"], [], "text")
    assert frame["input"].tolist() == ["Shares rose", "The striker scored"] and skipped == 1


def test_a_run_whose_hf_folder_is_gone_is_evaluated_without_its_frozen_baseline(tmp_path, capsys):
    from tests.test_compress_quantize import tiny_bert_folder, topic_texts

    bert = tiny_bert_folder(tmp_path / "bert")
    texts, labels = topic_texts(12)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(tmp_path / "notes.csv", index=False)
    run = headstart.fit({"name": "notes", "data": {"source": str(tmp_path / "notes.csv"), "max_length": 16},
                         "backbone": f"hf:{bert}", "strategy": {"name": "feature_extraction"},
                         "train": {"max_epochs": 1, "lr": 0.01}, "evaluate": {"after_fit": False},
                         "output": str(tmp_path / "runs")})
    new = pd.DataFrame({"text": texts[:6] + ["  ", "a vote in parliament"], "label": labels[:6] + ["sport", None]})
    new.to_csv(tmp_path / "new.csv", index=False)
    bert.rename(tmp_path / "elsewhere")  # the pretrained encoder is not on this machine; the model folder is whole
    capsys.readouterr()
    metrics = run.evaluate(str(tmp_path / "new.csv"), bootstrap=20, latency=False, robustness=False)
    assert "cannot be loaded here" in metrics["baselines_left_out"]["frozen_logreg"]
    assert list(metrics["baselines"]) == ["classical"] and metrics["data"]["skipped"] == 2
    said = " ".join(capsys.readouterr().err.split())
    assert "Skipped 2 of the 8 examples of" in said and "new.csv row 8 (empty text), new.csv row 9 (no label)" in said
    report = (run.path / "evaluations" / "new" / "report.html").read_text()
    assert "Left out: frozen features + logistic regression, as the pretrained backbone cannot be loaded" in report

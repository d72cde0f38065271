"""The evaluation maths on hand-made predictions: metrics against scikit-learn, calibration, bootstrap coverage,
costs and thresholds, slices, perturbations and failures. No model is trained here."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from headstart.config import CostConfig
from headstart.errors import HeadstartError
from headstart.evaluate import costs, failures, metrics, perturb
from headstart.evaluate.bootstrap import bootstrap, interval, metric_functions, resamples
from headstart.evaluate.slices import slice_report, slice_values

LABELS = ["cat", "dog", "fox"]


def _predictions(n: int = 120, k: int = 3, seed: int = 0, skill: float = 2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, proba


def test_headline_metrics_match_scikit_learn():
    y, proba = _predictions()
    predicted = proba.argmax(1)
    report = metrics.full_report(y, proba, LABELS, positive=None)
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert report["macro_f1"] == pytest.approx(skm.f1_score(y, predicted, average="macro"))
    assert report["weighted_f1"] == pytest.approx(skm.f1_score(y, predicted, average="weighted"))
    assert report["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"))
    assert report["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, predicted)
    for c, label in enumerate(LABELS):
        row = report["per_class"][label]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[c], recall[c], f1[c], support[c]))
        assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(y == c, proba[:, c]))
    assert report["confusion_matrix"]["counts"] == skm.confusion_matrix(y, predicted).tolist()
    assert np.allclose(report["confusion_matrix"]["normalized"], skm.confusion_matrix(y, predicted, normalize="true"))


def test_binary_auc_uses_the_positive_class():
    y = np.array([0, 0, 1, 1, 0, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    proba = np.stack([1 - p1, p1], 1)
    assert metrics.roc_auc(y, proba, positive=1) == pytest.approx(skm.roc_auc_score(y, p1))
    assert metrics.roc_auc(y, proba, positive=0) == pytest.approx(skm.roc_auc_score(y == 0, 1 - p1))
    assert metrics.roc_auc(np.zeros(6, int), proba, positive=1) is None  # one class only: undefined, not an error


def test_calibration_error_and_bins_agree_with_a_hand_computation():
    y, proba = _predictions(n=400, seed=3, skill=1.0)
    confidence, correct = proba.max(1), proba.argmax(1) == y
    edges = np.linspace(0, 1, 11)
    expected = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        member = (confidence >= low) & (confidence < high)
        if member.any():
            expected += member.mean() * abs(correct[member].mean() - confidence[member].mean())
    assert metrics.expected_calibration_error(y, proba) == pytest.approx(expected, abs=1e-9)
    bins = metrics.calibration_bins(y, proba)
    assert sum(b["count"] for b in bins) == len(y)
    from_bins = sum(b["count"] / len(y) * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    assert from_bins == pytest.approx(expected, abs=1e-9)


def test_a_confidence_of_exactly_one_counts_in_the_last_of_the_ten_bins():
    # 6 of 10 predictions saturated at 1.0 (all right), 4 at 0.95 of which 3 are right
    proba = np.array([[1.0, 0.0]] * 6 + [[0.95, 0.05]] * 4)
    y = np.array([0] * 9 + [1])
    bins = metrics.calibration_bins(y, proba)
    assert len(bins) == 10 and bins[-1]["count"] == 10
    expected = abs(9 / 10 - (6 * 1.0 + 4 * 0.95) / 10)  # one bin: |accuracy - mean confidence|
    assert metrics.expected_calibration_error(y, proba) == pytest.approx(expected)


def test_the_confusion_row_of_a_class_without_examples_is_none():
    proba = np.eye(3)[[0, 0, 1, 1, 1]]
    matrix = metrics.confusion(np.array([0, 0, 1, 1, 0]), proba, ["a", "b", "c"])
    assert np.allclose(matrix["normalized"][0], [2 / 3, 1 / 3, 0]) and matrix["normalized"][1] == [0.0, 1.0, 0.0]
    assert matrix["normalized"][2] is None


def test_bootstrap_intervals_cover_a_known_accuracy():
    """Accuracy of a model that is right with probability 0.8 on 200 examples: the 95% interval should hold 0.8
    in about 95% of repeated experiments."""
    accuracy = {"accuracy": lambda y, p: float((p.argmax(1) == y).mean())}  # cheap, so that 300 experiments run fast
    rng = np.random.default_rng(0)
    covered = 0
    experiments = 300
    for experiment in range(experiments):
        y = np.zeros(200, int)
        right = rng.random(200) < 0.8
        proba = np.where(right[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
        values = bootstrap(y, {"m": proba}, accuracy, samples=500, seed=experiment)["m"]["accuracy"]
        low, high = interval(values)
        covered += low <= 0.8 <= high
    assert 0.90 <= covered / experiments <= 0.985


def test_grouped_examples_are_resampled_by_group_and_their_intervals_cover():
    """20 groups of 20 examples, each group with its own accuracy (0.8 on average): resampling examples one by one
    ignores that a group's examples go together, and its intervals miss 0.8 far more often than 5%."""
    accuracy = {"accuracy": lambda y, p: float((p.argmax(1) == y).mean())}
    rng = np.random.default_rng(1)
    groups = np.repeat([f"g{i}" for i in range(20)], 20)
    covered = {"example": 0, "group": 0}
    experiments = 150
    for experiment in range(experiments):
        right = rng.random(400) < np.repeat(rng.beta(4, 1, 20), 20)  # beta(4, 1): mean 0.8
        proba = np.where(right[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
        for unit, by in (("example", None), ("group", groups)):
            values = bootstrap(np.zeros(400, int), {"m": proba}, accuracy, 300, experiment, by)["m"]["accuracy"]
            low, high = interval(values)
            covered[unit] += low <= 0.8 <= high
    assert covered["group"] / experiments >= 0.88 and covered["example"] / experiments < 0.8
    for index in resamples(400, 5, 0, groups):  # each resample is 20 groups drawn whole, with replacement
        counts = np.bincount(index, minlength=400).reshape(20, 20)  # (group, member): times drawn
        assert (counts == counts[:, :1]).all() and counts[:, 0].sum() == 20


def test_paired_bootstrap_covers_a_known_gain():
    rng = np.random.default_rng(1)
    accuracy = {"accuracy": lambda y, p: float((p.argmax(1) == y).mean())}
    covered, experiments = 0, 200
    for experiment in range(experiments):
        y = np.zeros(300, int)
        a = np.where((rng.random(300) < 0.85)[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
        b = np.where((rng.random(300) < 0.75)[:, None], [[0.9, 0.1]], [[0.1, 0.9]])
        values = bootstrap(y, {"a": a, "b": b}, accuracy, samples=400, seed=experiment)
        low, high = interval(values["a"]["accuracy"] - values["b"]["accuracy"])
        covered += low <= 0.10 <= high
    assert 0.89 <= covered / experiments <= 0.99


def test_bootstrap_is_seeded_and_equals_scikit_learn_on_every_resample():
    y, proba = _predictions(n=12, k=4, seed=6, skill=0.5)  # small: classes go missing from resamples
    functions = metric_functions(["accuracy", "macro_f1", "weighted_f1", "roc_auc"])
    first = bootstrap(y, {"m": proba}, functions, samples=150, seed=4)["m"]
    again = bootstrap(y, {"m": proba}, functions, samples=150, seed=4)["m"]
    assert all(np.array_equal(first[k], again[k], equal_nan=True) for k in first)
    for i, index in enumerate(np.random.default_rng(4).integers(0, 12, (150, 12))):
        truth, predicted = y[index], proba[index].argmax(1)
        assert first["accuracy"][i] == pytest.approx(skm.accuracy_score(truth, predicted), abs=1e-6)
        assert first["macro_f1"][i] == pytest.approx(skm.f1_score(truth, predicted, average="macro"), abs=1e-6)
        assert first["weighted_f1"][i] == pytest.approx(skm.f1_score(truth, predicted, average="weighted"), abs=1e-6)
        if len(np.unique(truth)) == 4:
            assert first["roc_auc"][i] == pytest.approx(skm.roc_auc_score(truth, proba[index], multi_class="ovr"))
        else:
            assert np.isnan(first["roc_auc"][i])
    assert interval(np.full(10, np.nan)) is None


def test_threshold_minimises_validation_cost_and_reports_test_cost():
    rng = np.random.default_rng(2)
    labels = ["defect", "ok"]
    val_y, test_y = rng.integers(0, 2, 300), rng.integers(0, 2, 200)

    def scores(y):  # P(defect): higher for defects
        return np.clip(np.where(y == 0, rng.normal(0.65, 0.2, len(y)), rng.normal(0.35, 0.2, len(y))), 0, 1)

    val_p, test_p = scores(val_y), scores(test_y)
    val_proba, test_proba = np.stack([val_p, 1 - val_p], 1), np.stack([test_p, 1 - test_p], 1)
    config = CostConfig(false_negative=10, false_positive=1)
    report = costs.cost_report(config, labels, 0, test_y, test_proba, val_y, val_proba, samples=100, seed=0)
    chosen = report["chosen"]["threshold"]

    def cost(y, p, t):  # brute force with scikit-learn's confusion matrix; positive = defect (index 0)
        tn, fp, fn, tp = skm.confusion_matrix(y == 0, p >= t, labels=[False, True]).ravel()
        return (10 * fn + fp) / len(y)

    grid = np.linspace(0, 1, 1001)
    assert cost(val_y, val_p, chosen) <= min(cost(val_y, val_p, t) for t in grid) + 1e-12
    assert report["chosen"]["expected_cost"] == pytest.approx(cost(test_y, test_p, chosen))
    assert report["default"]["expected_cost"] == pytest.approx(cost(test_y, test_p, 0.5))
    assert chosen < 0.5  # missing a defect costs 10x: flag defects more readily
    assert report["calibrated_optimum"] == pytest.approx(1 / 11)
    flagged = test_p >= 0.5
    assert report["default"]["precision"] == pytest.approx(skm.precision_score(test_y == 0, flagged))
    assert report["default"]["recall"] == pytest.approx(skm.recall_score(test_y == 0, flagged))
    # undefined, as in per_class: null, not 0 (no defect predicted; no defect in the data)
    never = costs.cost_report(config, labels, 0, test_y, np.tile([0.1, 0.9], (200, 1)), val_y, val_proba, 0, 0)
    assert never["default"]["precision"] is None and never["default"]["recall"] == 0.0
    absent = costs.cost_report(config, labels, 0, np.ones(200, int), test_proba, val_y, val_proba, 0, 0)
    assert absent["default"]["recall"] is None and absent["default"]["precision"] == 0.0
    assert report["chosen"]["expected_cost_ci"][0] <= report["chosen"]["expected_cost"] <= report["chosen"]["expected_cost_ci"][1]


def test_costs_are_checked_against_the_labels():
    with pytest.raises(HeadstartError, match="per_class names wolf"):
        costs.cost_matrix(CostConfig(per_class={"wolf": 3}), LABELS, None)
    with pytest.raises(HeadstartError, match="binary tasks"):
        costs.cost_matrix(CostConfig(false_positive=2), LABELS, None)
    matrix, _ = costs.cost_matrix(CostConfig(per_class={"dog": 5}), LABELS, None)
    assert matrix.tolist() == [[0, 1, 1], [5, 0, 5], [1, 1, 0]]
    assert costs.positive_index(["defect", "ok"], np.array([0, 1, 1, 1]), None) == 0  # the rarer class
    with pytest.raises(HeadstartError, match="not a label"):
        costs.positive_index(["defect", "ok"], np.array([0, 1]), "broken")


def test_every_slice_is_reported_and_the_worst_is_named():
    y, proba = _predictions(n=200, seed=5)
    proba[100:190] = proba[100:190][:, ::-1]  # the model fails on most of "poly"
    frame = pd.DataFrame({"cell": ["mono"] * 100 + ["poly"] * 95 + ["rare"] * 5})
    report = slice_report(frame, y, proba, LABELS, ["cell"], min_size=10, samples=200, seed=0)["cell"]
    assert set(report["slices"]) == {"mono", "poly", "rare"}
    assert report["worst"] == "poly" and report["best"] == "mono"  # "rare" is too small to be ranked, still shown
    mono = report["slices"]["mono"]
    assert mono["accuracy"] == pytest.approx(skm.accuracy_score(y[:100], proba[:100].argmax(1)))
    assert report["slices"]["rare"]["small"] and report["slices"]["rare"]["examples"] == 5
    gap = report["gap"]
    assert gap["accuracy"] == pytest.approx(mono["accuracy"] - report["slices"]["poly"]["accuracy"])
    assert gap["accuracy_ci"][0] > 0 and gap["accuracy_p"] < 0.01  # a real gap


def test_slices_that_differ_by_chance_are_not_called_different():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"site": np.repeat(list("ABCDEFGH"), 100)})
    p_values = []
    for seed in range(40):  # 8 slices of one model that is right 80% of the time everywhere
        y = rng.integers(0, 2, 800)
        predicted = np.where(rng.random(800) < 0.8, y, 1 - y)
        gap = slice_report(frame, y, np.eye(2)[predicted], ["a", "b"], ["site"], 10, 200, seed)["site"]["gap"]
        p_values.append(gap["accuracy_p"])
    # best minus worst of 8 is never 0, but chance alone gives it: the test says so about as often as it should
    assert np.mean(np.array(p_values) < 0.05) <= 0.1


def test_no_slice_is_ranked_when_none_is_large_enough():
    y, proba = _predictions(n=12, seed=1)
    frame = pd.DataFrame({"cell": ["mono"] * 6 + ["poly"] * 6})
    report = slice_report(frame, y, proba, LABELS, ["cell"], min_size=10, samples=50, seed=0)["cell"]
    assert set(report["slices"]) == {"mono", "poly"} and all(s["small"] for s in report["slices"].values())
    assert report["worst"] is None and report["best"] is None and report["gap"] is None


def test_one_slice_large_enough_is_not_ranked_against_itself():
    y, proba = _predictions(n=40, seed=1)
    for cells in (["mono"] * 40, ["mono"] * 35 + ["poly"] * 5):  # one value, or one slice and a small one
        report = slice_report(pd.DataFrame({"cell": cells}), y, proba, LABELS, ["cell"], 10, 50, 0)["cell"]
        assert report["worst"] is None and report["gap"] is None and report["slices"]["mono"]["accuracy_ci"]


def test_numeric_slices_are_cut_into_quartiles_named_by_their_values_in_order():
    values = slice_values(pd.Series(np.arange(17, dtype=float)))
    assert values.cat.categories.tolist() == ["0 to 4", "5 to 8", "9 to 12", "13 to 16", "(missing)"]
    assert values.value_counts(sort=False).tolist() == [5, 4, 4, 4, 0]
    # most examples share one value: its quartile edges coincide, and it still closes a slice of its own
    skewed = slice_values(pd.Series([0.0] * 50 + list(range(1, 12)) + [None]))
    assert skewed.value_counts(sort=False).to_dict() == {"0": 50, "1 to 11": 11, "(missing)": 1}
    assert slice_values(pd.Series([1.0, 1 / 3, 0.0, None])).tolist() == ["1", "0.3333", "0", "(missing)"]
    assert slice_values(pd.Series(["poly", "mono"])).cat.categories.tolist() == ["mono", "poly", "(missing)"]
    # distinct values keep distinct names: site codes in full, close values with the digits that tell them apart
    assert slice_values(pd.Series([10001, 10002, 10003, 10004])).cat.categories.tolist()[:4] == [
        "10001", "10002", "10003", "10004"]
    assert slice_values(pd.Series([0.12341, 0.12342, 0.5])).tolist() == ["0.12341", "0.12342", "0.5"]
    ids = [1234567890123456789 + i for i in range(4)]  # 64-bit ids: beyond a float's digits
    assert slice_values(pd.Series(ids)).cat.categories.tolist()[:4] == [str(i) for i in ids]
    assert slice_values(pd.Series([0.3, 0.30000000000000004])).tolist() == ["0.3", "0.30000000000000004"]
    # a nullable integer column (Parquet written by pandas) holds pandas' NA
    assert slice_values(pd.Series([1, None, 2], dtype="Int64").astype(object)).tolist() == ["1", "(missing)", "2"]


def test_per_class_scores_of_a_class_absent_from_the_data_are_null():
    y = np.array([0, 0, 0])
    proba = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.7, 0.0]])
    scores = metrics.per_class(y, proba, ["a", "b", "c"])
    assert scores["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3,
                           "roc_auc": None}
    assert scores["b"]["precision"] == 0.0 and scores["b"]["recall"] is None  # predicted once, never true
    assert scores["c"]["precision"] is None and scores["c"]["f1"] is None and scores["c"]["support"] == 0


def test_perturbations_are_deterministic_and_change_the_input(tmp_path):
    from PIL import Image

    path = tmp_path / "cell.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(path)
    for name in perturb.IMAGE:
        first, again = perturb.apply(name, "image", [str(path)], seed=0), perturb.apply(name, "image", [str(path)], seed=0)
        assert np.array_equal(np.asarray(first[0]), np.asarray(again[0])), name
        original = np.asarray(Image.open(path).convert("RGB"))
        assert first[0].size != original.shape[:2] or not np.array_equal(np.asarray(first[0]), original), name
    text = "The quarterly results surprised analysts. Shares rose sharply in early trading today"
    for name in perturb.TEXT:
        assert perturb.apply(name, "text", [text], seed=1) == perturb.apply(name, "text", [text], seed=1)
        assert perturb.apply(name, "text", [text], seed=1)[0] != text, name
    assert perturb.first_sentence(text, random.Random(0)) == "The quarterly results surprised analysts."


def test_confident_mistakes_come_first_with_their_origin():
    y = np.array([0, 1, 2, 0])
    proba = np.array([[0.1, 0.9, 0.0], [0.2, 0.7, 0.1], [0.6, 0.2, 0.2], [0.99, 0.005, 0.005]])
    frame = pd.DataFrame({"origin": ["a.csv row 2", "a.csv row 3", "a.csv row 4", "a.csv row 5"],
                          "input": ["w " * 200, "x", "y", "z"]})
    mistakes = failures.confident_mistakes(frame, y, proba, LABELS, "text")
    assert [m["origin"] for m in mistakes] == ["a.csv row 2", "a.csv row 4"]
    assert mistakes[0]["confidence"] == 0.9 and mistakes[0]["predicted"] == "dog" and mistakes[0]["label"] == "cat"
    assert len(mistakes[0]["snippet"]) <= failures.SNIPPET
    pairs = failures.confused_pairs(y, proba, LABELS)
    assert {(p["label"], p["predicted"], p["count"]) for p in pairs} == {("cat", "dog", 1), ("fox", "cat", 1)}


def test_calibration_error_by_chance_separates_calibrated_from_overconfident_models():
    rng = np.random.default_rng(8)
    proba = rng.dirichlet(np.ones(3) * 0.7, 400)
    calibrated_y = (rng.random((400, 1)) > proba.cumsum(1)).sum(1).clip(max=2)  # labels drawn from the probabilities
    chance = metrics.ece_by_chance(proba, samples=200, seed=0)
    assert metrics.expected_calibration_error(calibrated_y, proba) <= chance
    sharpened = proba ** 3 / (proba ** 3).sum(1, keepdims=True)  # the same model, overconfident
    assert metrics.expected_calibration_error(calibrated_y, sharpened) > metrics.ece_by_chance(sharpened, 200, 0)


def test_baselines_choose_their_regularisation_on_validation():
    from sklearn.metrics import log_loss

    from headstart.evaluate.baselines import C_GRID, _logreg, fit_tuned

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 50))
    y = (x[:, :3].sum(1) + rng.normal(size=600) > 0).astype(int) + (x[:, 3] > 1.2)  # 3 classes
    train, val = (x[:200], y[:200]), (x[200:400], y[200:400])
    losses = {c: log_loss(val[1], _logreg(c).fit(*train).predict_proba(val[0])) for c in C_GRID}
    tuned = fit_tuned(_logreg, train, val, x[400:], 3, "test")
    assert tuned.c == min(losses, key=losses.get) != 1.0 and tuned.converged
    assert tuned.proba.shape == (200, 3) and np.allclose(tuned.proba.sum(1), 1)
    # a validation split holding one class only still scores every C; with no validation example, C = 1
    assert fit_tuned(_logreg, train, (val[0][val[1] == 0], val[1][val[1] == 0]), x[400:], 3, "").c in C_GRID
    assert fit_tuned(_logreg, train, (val[0][:0], val[1][:0]), x[400:], 3, "").c == 1.0


def test_labels_with_dollar_signs_are_drawn_as_written():
    import base64
    import io

    from PIL import Image

    from headstart.evaluate import plots

    labels = ["$", "$$", "$$$"]  # price tiers: matplotlib would read "$...$" as math and fail on "$$"
    drawn = [plots.confusion_heatmap({"labels": labels, "counts": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}, False),
             plots.roc_curves({label: {"fpr": [0, 1], "tpr": [0, 1]} for label in labels}, {"$": 0.5}),
             plots.interval_bars(["site=US$ 5-$10", "$$"], [0.8, 0.9], [[0.7, 0.9], [0.85, 0.95]], "slices",
                                 "accuracy")]
    for png in drawn:
        assert Image.open(io.BytesIO(base64.b64decode(png))).format == "PNG"


def test_a_slice_of_one_group_has_no_interval_and_is_drawn_without_one():
    from headstart.evaluate import plots

    # slicing by group: each slice is one group, which the group bootstrap would draw every time, giving the point
    # as its "interval"; the gap between two such slices has none either
    y, proba = np.array([0, 0, 1, 0, 1, 1]), np.array([[.9, .1], [.2, .8], [.1, .9], [.8, .2], [.7, .3], [.4, .6]])
    groups = np.array(["g1"] * 3 + ["g2"] * 3)
    report = slice_report(pd.DataFrame({"group": groups}), y, proba, ["a", "b"], ["group"], 1, 50, 0, groups)["group"]
    slices = report["slices"]
    assert slices["g1"]["accuracy"] == pytest.approx(2 / 3) and slices["g1"]["accuracy_ci"] is None
    assert report["gap"]["accuracy_ci"] is None and slices["g2"]["accuracy_ci"] is None
    assert plots.interval_bars(list(slices), [s["accuracy"] for s in slices.values()],
                               [s["accuracy_ci"] for s in slices.values()], "slices", "accuracy")


def test_grouped_slices_that_differ_by_chance_are_not_called_different():
    """Groups of correlated examples (each with its own accuracy), two sites alike: shuffling single examples would
    call the sites different about a third of the time; shuffling whole groups about as often as it should."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 20)
    frame = pd.DataFrame({"site": np.where(groups < 10, "A", "B")})
    p_values = []
    for seed in range(40):
        accuracy = rng.uniform(0.4, 1.0, 20)[groups]
        y = rng.integers(0, 2, len(groups))
        predicted = np.where(rng.random(len(groups)) < accuracy, y, 1 - y)
        gap = slice_report(frame, y, np.eye(2)[predicted], ["a", "b"], ["site"], 10, 200, seed, groups)["site"]["gap"]
        p_values.append(gap["accuracy_p"])
    assert np.mean(np.array(p_values) < 0.05) <= 0.1


def test_no_permutation_test_when_a_group_spans_slices():
    y, proba = _predictions(n=40, seed=2)
    groups = np.repeat(np.arange(10), 4)
    frame = pd.DataFrame({"camera": ["a", "b"] * 20})  # every group has examples of both cameras
    gap = slice_report(frame, y, proba, LABELS, ["camera"], 5, 50, 0, groups)["camera"]["gap"]
    assert gap["accuracy_p"] is None and gap["accuracy_ci"] is not None


def test_the_summary_and_report_say_whether_the_worst_slice_differs_beyond_chance():
    from headstart.evaluate.report import _gap_verdict
    from headstart.evaluate.summary import summary_rows

    y, proba = _predictions(n=40, seed=2)
    groups = np.repeat(np.arange(10), 4)
    spanning = slice_report(pd.DataFrame({"camera": ["a", "b"] * 20}), y, proba, LABELS, ["camera"], 5, 50, 0,
                            groups)
    alike = slice_report(pd.DataFrame({"camera": ["a", "b"] * 20}), y, proba, LABELS, ["camera"], 5, 200, 0)
    settings = {"min_slice_size": 5, "bootstrap": 50}
    assert "a group of the group column spans several slices" in _gap_verdict(spanning["camera"]["gap"], settings)
    assert "evaluate.bootstrap is 0" in _gap_verdict(spanning["camera"]["gap"], {**settings, "bootstrap": 0})
    small = slice_report(pd.DataFrame({"camera": ["a", "b"] * 20}), y, proba, LABELS, ["camera"], 50, 200, 0)
    overall = {name: 0.5 for name in ("accuracy", "macro_f1", "weighted_f1", "roc_auc", "ece")}
    for slices, said in ((spanning, "worst slice camera=a (accuracy; untested)"),
                         (alike, "(accuracy; no more than chance, p = "), (small, "slices by camera")):
        metrics = {"overall": {**overall, "calibration": {"ece_by_chance": 0.1}}, "data": {}, "baselines": None,
                   "slices": slices, "costs": {}, "robustness": None, "latency": None,
                   "settings": {"min_slice_size": 50}}
        assert any(said in row[0] for row in summary_rows(metrics)), summary_rows(metrics)
    assert ("slices by camera", "2, too small to rank", "< 2 of 50+ examples") in summary_rows(metrics)


def test_no_perturbation_is_called_costliest_when_none_lowers_accuracy():
    from headstart.evaluate.summary import costliest_perturbation

    rows = {"blur": {"accuracy_drop": 0.0}, "noise": {"accuracy_drop": -0.01}}
    assert costliest_perturbation({"robustness": {"perturbations": rows}}) is None
    rows["jpeg"] = {"accuracy_drop": 0.02}
    assert costliest_perturbation({"robustness": {"perturbations": rows}})[0] == "jpeg"
    assert costliest_perturbation({"robustness": None}) is None


@pytest.mark.parametrize("text", ["", "a,b\n1,2\n"])
def test_a_metrics_csv_without_epochs_gives_no_training_curves(tmp_path, text):
    from headstart.evaluate.training import training_history

    (tmp_path / "metrics.csv").write_text(text)
    assert training_history(tmp_path) is None


def test_latency_timed_on_a_busy_machine_is_said_to_be_an_upper_bound(monkeypatch):
    import os

    from headstart.evaluate.report import _latency

    timing = {"batch1_p50_ms": 1.0, "batch1_p95_ms": 2.0, "batch32_throughput_per_s": 100.0,
              "batch32_model_throughput_per_s": 90.0, "batch32_batch_size": 8, "model_size_mb": 1.0,
              "weights_size_mb": 1.0, "memory_peak_mb": 10.0, "memory_before_load_mb": 5.0, "load_seconds": 0.1,
              "fresh_process": True, "machine": "x86_64", "threads": 2, "torch": "2", "batch1_runs": 50,
              "batch32_runs": 10}
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert "The machine was busy while timing (load average 2.50 on 2 cores)" in _latency(
        {"latency": {**timing, "load_average": 2.5}})
    assert "busy" not in _latency({"latency": {**timing, "load_average": 0.4}})

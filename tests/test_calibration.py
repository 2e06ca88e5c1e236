"""Calibration, the bootstrap interval, label budgets and evaluation progress, checked
against hand-computed cases and the libraries that define them."""
import io

import numpy as np
import pytest
import torch
from rich.console import Console

from fmctl.evaluate.bootstrap import Statistics, confidence_interval, mean
from fmctl.evaluate.calibration import ConfidenceBins, TemperatureFit
from fmctl.tasks.classification import ClassificationMetrics


def test_ece_by_hand():
    """15 bins (m-1)/15 < p <= m/15. Confidences 0.95, 0.95 (one right) fall in bin 15,
    0.65 x3 (two right) in bin 10, 0.3 (right) in bin 5:
    ECE = 2/6 |0.5 - 0.95| + 3/6 |2/3 - 0.65| + 1/6 |1 - 0.3| = 0.15 + 0.008333 + 0.116667."""
    bins = ConfidenceBins(15)
    bins.add([0.95, 0.95, 0.65], [1, 0, 1])
    bins.add([0.65, 0.65, 0.3], [1, 0, 1])  # in two batches: the counts add up
    assert bins.ece() == pytest.approx(0.275, abs=1e-9)
    table = bins.table()
    assert [row["count"] for row in table if row["count"]] == [1, 3, 2]
    assert table[14]["accuracy"] == 0.5 and table[14]["confidence"] == pytest.approx(0.95)
    assert table[0]["accuracy"] is None


def test_ece_agrees_with_torchmetrics_and_keeps_no_probability_matrix():
    """The metrics' ECE equals torchmetrics' MulticlassCalibrationError (15 bins, l1) on
    random logits, and what the metrics keep per example is k <= 10 numbers, not C."""
    from torchmetrics.classification import MulticlassCalibrationError

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(600, 40, generator=gen) * 3
    labels = torch.randint(0, 40, (600,), generator=gen)
    metrics = ClassificationMetrics([f"c{i}" for i in range(40)], bins=15)
    for start in range(0, 600, 64):
        metrics.update(logits[start:start + 64], {"labels": labels[start:start + 64]}, None)
    expected = MulticlassCalibrationError(num_classes=40, n_bins=15, norm="l1")(logits.softmax(-1), labels)
    assert metrics.report()["ece"] == pytest.approx(float(expected), abs=1e-6)
    assert {tuple(t.shape[1:]) for t in metrics.top_probs} == {(10,)}


def _over_confident(n: int, scale: float, seed: int):
    """Labels drawn from softmax(z), logits reported as scale * z: a model `scale` times
    too sure of itself, whose ideal temperature is `scale`."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 5, generator=gen) * 1.5
    labels = torch.multinomial(z.softmax(-1), 1, generator=gen)[:, 0]
    return z * scale, labels


def test_temperature_scaling_recovers_the_overconfidence_and_lowers_ece():
    logits, labels = _over_confident(4000, 4.0, seed=1)
    fit = TemperatureFit()
    for start in range(0, 4000, 500):
        fit.update(logits[start:start + 500], {"labels": labels[start:start + 500]}, None)
    temperature = fit.temperature()
    assert temperature == pytest.approx(4.0, rel=0.08)
    # the refined minimum is a true minimum of the NLL (checked directly on the logits)
    nll = lambda t: torch.nn.functional.cross_entropy(logits / t, labels).item()  # noqa: E731
    assert nll(temperature) <= min(nll(temperature * 1.02), nll(temperature / 1.02))
    assert fit.summary()["nll_after"] < fit.summary()["nll_before"]

    test_logits, test_labels = _over_confident(3000, 4.0, seed=2)
    metrics = ClassificationMetrics([str(i) for i in range(5)], temperature=temperature, bins=15)
    metrics.update(test_logits, {"labels": test_labels}, None)
    report = metrics.report()
    assert report["ece"] > 0.15                       # over-confident before
    assert report["ece_temperature_scaled"] < 0.04    # calibrated after
    assert report["accuracy"] == pytest.approx(float((test_logits.argmax(-1) == test_labels).float().mean()))


def test_bootstrap_interval_is_seeded_and_matches_the_binomial_width():
    correct = (np.random.default_rng(3).random(2000) < 0.8).astype(float)
    stats = Statistics("accuracy", [correct], mean)
    first = confidence_interval(stats, 1000, 0.95, seed=0)
    assert first == confidence_interval(stats, 1000, 0.95, seed=0)
    assert first != confidence_interval(stats, 1000, 0.95, seed=1)
    p = correct.mean()
    half = 1.96 * np.sqrt(p * (1 - p) / len(correct))  # normal approximation: 0.0175
    assert first["low"] < p < first["high"]
    assert first["high"] - first["low"] == pytest.approx(2 * half, rel=0.15)
    assert confidence_interval(Statistics("accuracy", [correct[:1]], mean), 1000, 0.95, 0) is None


def test_label_budget_is_per_class_nested_and_seeded():
    from fmctl.data.budget import apply_budget, budget_order

    labels = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    rows = list(range(len(labels)))
    pick = lambda budget, seed: apply_budget(rows, budget, seed, lambda r: labels[r])  # noqa: E731
    small, large = pick(50, 0), pick(200, 0)
    assert set(small) <= set(large)                          # nested
    counts = {c: sum(labels[r] == c for r in large) for c in "abc"}
    assert counts == {"a": 120, "b": 60, "c": 20}            # in proportion
    assert pick(50, 0) == small and pick(50, 1) != small     # seeded
    assert {labels[r] for r in pick(3, 5)} == {"a", "b", "c"}  # every class from the first rows on
    warnings = []
    assert apply_budget(rows, 5000, 0, lambda r: labels[r], warnings) == rows
    assert "more than the 1000 training examples" in warnings[0]
    assert sorted(budget_order([0.5, 1.5, None], 0)) == [0, 1, 2]  # no classes: a plain shuffle
    from fmctl.errors import DataError

    with pytest.raises(DataError, match="cannot cover the 3 classes"):
        pick(2, 0)


def test_eval_progress_logs_rate_and_eta(monkeypatch):
    from fmctl.loop import eval_progress

    monkeypatch.setattr(eval_progress, "LOG_EVERY_S", 0.0)
    out = io.StringIO()
    progress = eval_progress.EvalProgress(4, Console(file=out, width=200), "auto", "eval test")
    for _ in range(4):
        progress.advance(32)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("eval test 1/4 batches (32 examples)") and "examples/s" in lines[0]
    assert "eta" in lines[0]
    assert lines[-1].startswith("eval test: 128 examples in")
    quiet = io.StringIO()
    short = eval_progress.EvalProgress(4, Console(file=quiet), "auto")  # LOG_EVERY_S is 0 here too
    short.mode = "off"
    short.advance(1)
    short.close()
    assert quiet.getvalue() == ""


def test_eval_progress_bar_on_a_terminal():
    from fmctl.loop.eval_progress import EvalProgress

    out = io.StringIO()
    with EvalProgress(3, Console(file=out, force_terminal=True, width=120), "auto", "eval test") as progress:
        for _ in range(3):
            progress.advance(10)
    assert "eval test" in out.getvalue() and "examples/s" in out.getvalue()


def test_regression_and_multilabel_give_bootstrap_statistics_of_their_main_metric():
    """The statistic on the whole sample is the reported metric (MSE; micro F1 as sklearn)."""
    from fmctl.tasks.multilabel_classification import MultilabelMetrics
    from fmctl.tasks.regression import RegressionMetrics

    regression = RegressionMetrics()
    regression.update(torch.tensor([1.0, 2.0, 4.0, 0.5]), {"labels": torch.tensor([1.5, 2.0, 3.0, 0.0])}, None)
    stats = regression.bootstrap_statistics()
    assert stats.metric == "mse" and float(stats.statistic(*stats.columns)) == pytest.approx(
        regression.compute()["mse"])
    multilabel = MultilabelMetrics(["a", "b", "c"], 0.5)
    logits = torch.tensor([[3.0, -3.0, 3.0], [-3.0, -3.0, -3.0], [3.0, 3.0, -3.0], [-3.0, 3.0, 3.0]])
    multilabel.update(logits, {"labels": torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [1.0, 1.0, 0], [0, 1.0, 1.0]])}, None)
    stats = multilabel.bootstrap_statistics()
    assert stats.metric == "micro_f1"
    assert float(stats.statistic(*[np.asarray(c, dtype=float) for c in stats.columns])) == pytest.approx(
        multilabel.compute()["micro_f1"])
    interval = confidence_interval(stats, 200, 0.9, seed=0)
    assert 0 <= interval["low"] <= multilabel.compute()["micro_f1"] <= interval["high"] <= 1

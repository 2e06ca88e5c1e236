"""Regression and multi-label classification end to end: metrics that beat trivial
baselines, eval files, and model/ reloading in AutoModelForSequenceClassification with
the problem type and label names that make transformers score it the same way."""
import json
import os
import statistics

import pytest
from rich.console import Console

from fmctl import pipeline
from fmctl.config.saved_runs import load_run_config
from fmctl.errors import DataError
from tests.helpers import finetune, read_jsonl
from tests.task_data import TINY, write_multilabel_csv, write_scores_csv

STEPS = ["trainer.batch_size=16", "optim.lr=3e-3", "data.max_length=32", "trainer.log_every=10"]
QUIET = Console(file=open(os.devnull, "w"))


def evaluate(run_dir, overrides=()):
    raw, run = load_run_config(run_dir, list(overrides))
    return pipeline.evaluate_run(run_dir, run, raw, console=QUIET)


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    root = tmp_path_factory.mktemp("regression")
    train, test = write_scores_csv(root / "train.csv", 600, seed=1), write_scores_csv(root / "test.csv", 150, seed=2)
    result = finetune("regression_csv", [f"data.train={train}", f"data.test={test}", "data.text_column=review",
                                         "data.label_column=score", *TINY, *STEPS, "trainer.max_steps=200",
                                         "trainer.eval_every=100", "optim.lr=1e-3"], root / "run")
    return result, evaluate(result.run_dir), test


def test_regression_beats_predicting_the_mean(regression):
    result, report, _ = regression
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")
    labels = [r["label"] for r in rows]
    variance = statistics.pvariance(labels)  # the MSE of always predicting the mean
    assert report["mse"] < 0.25 * variance, (report, variance)
    assert report["pearson"] > 0.9 and report["spearman"] > 0.9
    assert report["num_examples"] == 150 and report["rmse"] == pytest.approx(report["mse"] ** 0.5)
    assert result.metrics["test/mse"] == pytest.approx(report["mse"], rel=1e-5)
    mse = sum((r["prediction"] - r["label"]) ** 2 for r in rows) / len(rows)
    assert mse == pytest.approx(report["mse"], rel=1e-4)  # the metric is what the predictions file says
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["task"] == "regression" and "val/mse" in manifest["metrics"]


def test_regression_on_a_price_scale_learns_as_on_a_unit_scale(regression, tmp_path):
    """Labels in the hundreds of thousands (house prices): the head trains on standardised
    labels, so the run is the unit-scale run up to the affine map, and model/ still
    predicts prices with transformers alone."""
    import csv

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result, report, test = regression
    config = load_run_config(result.run_dir, [])[1]

    def priced(source, target):
        with open(source, encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["review", "price"])
            writer.writerows([r["review"], 500000 + 80000 * int(r["score"])] for r in rows)
        return target

    train, priced_test = priced(config.data.train, tmp_path / "train.csv"), priced(test, tmp_path / "test.csv")
    prices = finetune("regression_csv", [f"data.train={train}", f"data.test={priced_test}", "data.text_column=review",
                                         "data.label_column=price", *TINY, *STEPS, "trainer.max_steps=200",
                                         "trainer.eval_every=100", "optim.lr=1e-3"], tmp_path / "run")
    assert prices.metrics["test/pearson"] == pytest.approx(result.metrics["test/pearson"], abs=0.02)
    assert prices.metrics["test/pearson"] > 0.9 and prices.metrics["test/mae"] < 80000
    model_dir = prices.run_dir / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with open(priced_test, encoding="utf-8") as handle:
        sample = list(csv.DictReader(handle))[:8]
    with torch.no_grad():
        outside = model(**tokenizer([r["review"] for r in sample], padding=True, return_tensors="pt")).logits[:, 0]
    again = evaluate(prices.run_dir, ["trainer.precision=fp32"])
    mine = [r["prediction"] for r in read_jsonl(prices.run_dir / "eval" / "predictions.jsonl")[:8]]
    assert outside.tolist() == pytest.approx(mine, abs=1.0)  # prices to the unit, without fmctl
    assert again["mse"] == pytest.approx(prices.metrics["test/mse"], rel=1e-5)


def test_a_regression_run_feeds_the_next_with_its_head(regression, tmp_path):
    """model/'s head predicts real values; a run starting from it (and its own label
    statistics) must carry the same predictions on, not rescale them twice."""
    result, _, test = regression
    config = load_run_config(result.run_dir, [])[1]
    again = finetune("regression_csv", [f"data.train={config.data.train}", f"data.test={test}",
                                        "data.text_column=review", "data.label_column=score", *STEPS,
                                        f"backbone.pretrained={result.run_dir}", "trainer.max_steps=1",
                                        "optim.lr=1e-9", "sched=constant", "trainer.precision=fp32"], tmp_path / "run")
    assert again.metrics["test/mse"] == pytest.approx(result.metrics["test/mse"], rel=1e-3)


def test_regression_model_reloads_with_its_problem_type(regression):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result, _, _ = regression
    model_dir = result.run_dir / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    assert model.config.id2label == {0: "score"}
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")[:10]
    with torch.no_grad():
        out = model(**tokenizer([r["text"] for r in rows], padding=True, truncation=True, return_tensors="pt"))
    assert out.logits[:, 0].tolist() == pytest.approx([r["prediction"] for r in rows], abs=1e-4)


def test_monitoring_a_lower_is_better_metric(regression, tmp_path):
    """trainer.monitor=val/mae tracks the minimum without monitor_mode."""
    _, _, test = regression
    result = finetune("regression_csv", [f"data.train={test}", "data.text_column=review", "data.label_column=score",
                                         *TINY, *STEPS, "trainer.max_steps=30", "trainer.eval_every=10",
                                         "trainer.monitor=val/mae"], tmp_path / "run")
    maes = [r["val/mae"] for r in read_jsonl(result.run_dir / "metrics.jsonl") if r["event"] == "eval"]
    assert result.metrics["val/mae"] == min(maes)


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    train = write_multilabel_csv(root / "train.csv", 800, seed=1)
    test = write_multilabel_csv(root / "test.csv", 200, seed=2)
    result = finetune("multilabel_csv", [f"data.train={train}", f"data.test={test}", "data.label_column=topics",
                                         *TINY, *STEPS, "trainer.max_steps=300", "trainer.eval_every=100",
                                         "trainer.batch_size=32", "optim.lr=2e-3"], root / "run")
    return result, evaluate(result.run_dir), root


def test_multilabel_beats_predicting_every_label(multilabel):
    from sklearn.metrics import f1_score

    result, report, _ = multilabel
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")
    names = sorted(report["per_label"])
    gold = [[int(n in r["labels"]) for n in names] for r in rows]
    every = f1_score(gold, [[1] * len(names)] * len(gold), average="micro")
    assert report["micro_f1"] > every + 0.2 and report["macro_f1"] > 0.7, (report, every)
    predicted = [[int(n in r["predictions"]) for n in names] for r in rows]
    assert f1_score(gold, predicted, average="micro") == pytest.approx(report["micro_f1"])
    assert names == ["food", "money", "sports", "tech"]
    assert sum(v["support"] for v in report["per_label"].values()) == sum(map(sum, gold))


def test_multilabel_model_reloads_with_label_names(multilabel):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result, _, _ = multilabel
    model_dir = result.run_dir / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.problem_type == "multi_label_classification"
    assert model.config.id2label == {0: "food", 1: "money", 2: "sports", 3: "tech"}
    rows = read_jsonl(result.run_dir / "eval" / "predictions.jsonl")[:10]
    with torch.no_grad():
        probs = model(**tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")).logits.sigmoid()
    for row, p in zip(rows, probs.tolist()):
        assert p == pytest.approx([row["probabilities"][n] for n in ("food", "money", "sports", "tech")], abs=1e-4)


def test_eval_with_an_unknown_label_names_the_line(multilabel):
    result, _, root = multilabel
    unknown = root / "unknown.csv"
    unknown.write_text("text,topics\nbank loan,money\ngoal and rain,sports|weather\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"unknown.csv:3: label 'weather' never appears in the training data"):
        evaluate(result.run_dir, [f"data.test={unknown}"])

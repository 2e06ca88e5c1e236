"""Regression on single texts or text pairs (similarity scores, ratings) with a BERT or
GPT backbone: one output, mean squared error.

model/ is transformers' AutoModelForSequenceClassification with num_labels=1 and
problem_type 'regression', so it reloads and scores the same way without fmctl. Metrics
are scikit-learn's MSE/MAE and scipy's Pearson and Spearman correlations.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from fmctl import backbones
from fmctl.config.schema import RunConfig
from fmctl.data.collate import PadCollator
from fmctl.data.labels import number_label
from fmctl.data.sources import split_paths
from fmctl.data.text import EncodedDataset, encode_rows, read_text_rows
from fmctl.models.saved import saved_label_names
from fmctl.tasks.base import PreparedData, Task
from fmctl.tasks.classification import read_splits
from fmctl.tasks.declare import Serving, TaskDeclaration
from fmctl.tasks.text_inputs import example_text, fingerprints, mean_loss, tokenizer_for, training_texts


@dataclass
class RegressionTaskConfig:
    name: Literal["regression"] = "regression"


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Regression(Task):
    def __init__(self, cfg: RegressionTaskConfig):
        self.cfg = cfg
        self.target_name = "score"
        # The head is trained on standardised labels, (y - shift) / scale, from the training
        # split's mean and std; forward() returns real-scale predictions and model/ holds the
        # head with the scaling folded in. Identity for a saved model/ (already folded).
        self.shift, self.scale = 0.0, 1.0

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        paths = split_paths(run.data)
        warnings: list[str] = []
        rows = read_splits(run.data, paths,
                           lambda p: read_text_rows(p, run.data, parse_label=number_label, warnings=warnings), splits)

        tokenizer = tokenizer_for(run, model_dir, lambda: training_texts(rows["train"]))
        self.target_name = saved_label_names(model_dir)[0] if model_dir else run.data.label_column
        if model_dir is None and rows.get("train"):
            self.shift, self.scale = label_standardisation([r.label for r in rows["train"]])
        datasets = {split: EncodedDataset(encode_rows(split_rows, tokenizer, run.data.max_length),
                                          [r.label for r in split_rows])
                    for split, split_rows in rows.items()}
        pad = {"input_ids": tokenizer.pad_token_id, "token_type_ids": 0}
        return PreparedData(
            train=datasets.get("train"), validation=datasets.get("validation"), test=datasets.get("test"),
            collate=PadCollator(pad), label_names=[], preprocessors={"text": tokenizer}, sources=fingerprints(paths), rows=rows,
            warnings=warnings)

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        self.backbone = backbones.family(run.backbone.name)
        model = self.backbone.build(run.backbone, "sequence_classification", data.preprocessor,
                                    label_names=[self.target_name], problem_type="regression")
        head = output_layer(model)
        if head.bias is None:  # GPT-2's score layer: no bias to hold the mean, so scale only
            self.shift = 0.0
        if _trained_regression_head(run):  # an earlier regression model/: its head predicts real values
            _rescale(head, 1.0 / self.scale, -self.shift / self.scale)
        return model  # a fresh head starts near 0: the label mean, in standard units

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        standard = model(**{k: batch[k] for k in _MODEL_INPUTS if k in batch}).logits.squeeze(-1)
        return standard.float() * self.scale + self.shift

    def loss(self, predictions: Any, batch: dict[str, Any]) -> Any:
        """MSE in standardised units: the same gradients whether prices or ratings."""
        import torch.nn.functional as F

        return F.mse_loss((predictions.float() - self.shift) / self.scale,
                          (batch["labels"].float() - self.shift) / self.scale)

    def new_metrics(self) -> "RegressionMetrics":
        return RegressionMetrics()

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        with self.folded(model):
            self.backbone.save(model, folder, data.preprocessor)

    @contextlib.contextmanager
    def folded(self, model: Any) -> Iterator[None]:
        """While saving: the label scaling folded into the output layer, so model/ (or a
        LoRA adapter's head) predicts real-scale values with transformers alone; the
        training weights are restored afterwards, bit for bit."""
        import torch

        head = output_layer(model)
        params = [t for t in (head.weight, head.bias) if t is not None]
        kept = [t.detach().clone() for t in params]
        _rescale(head, self.scale, self.shift)
        try:
            yield
        finally:
            with torch.no_grad():
                for tensor, original in zip(params, kept):
                    tensor.copy_(original)

    def load_model(self, folder: Path) -> Any:
        self.backbone = backbones.of_folder(folder)
        model, _ = self.backbone.load(folder, "sequence_classification")
        return model

    def example_fields(self, row: Any) -> dict[str, Any]:
        return example_text(row)

    def output_specs(self, label_names: list[str]) -> list[dict[str, Any]]:
        return [{"name": "logits", "dtype": "float32", "shape": ["batch", 1]}]

    def parity_measure(self) -> Any:
        """One number per example: compared by its difference alone (no label to agree on)."""
        from fmctl.export.measures import DifferenceOnly

        return DifferenceOnly()

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        return {"kind": "regression", "output": "logits", "value": "logits[:, 0]", "target": label_names[0]}

    def served_label_names(self, model_dir: Path, data: PreparedData) -> list[str]:
        return saved_label_names(model_dir) or ["score"]


def label_standardisation(labels: list[float]) -> tuple[float, float]:
    """(mean, std) of the training labels; std 1 when they are constant. Why: the head
    starts near 0 with unit-scale weights, and AdamW moves each weight by about lr per step,
    so labels in the hundreds of thousands (prices) would need thousands of steps just to
    reach their scale, and gradient clipping then freezes everything else."""
    import statistics

    mean = float(statistics.fmean(labels))
    std = float(statistics.pstdev(labels)) if len(labels) > 1 else 0.0
    return mean, (std if std > 0 else 1.0)


def _trained_regression_head(run: RunConfig) -> bool:
    """Whether backbone.pretrained brings a one-output regression head that transformers
    loads as it is (an fmctl regression run or any save_pretrained regression model)."""
    import json

    from fmctl.models import pretrained

    if not run.backbone.pretrained:
        return False
    try:
        where = pretrained.resolve(run.backbone.pretrained)
    except Exception:
        return False
    config_file = where / "config.json" if isinstance(where, Path) else None
    if config_file is None or not config_file.is_file():
        return False
    config = json.loads(config_file.read_text(encoding="utf-8"))
    labels = config.get("num_labels") or len(config.get("id2label") or {})
    return config.get("problem_type") == "regression" and labels == 1


def output_layer(model: Any) -> Any:
    """The last linear layer with one output: the regression head's (BERT's classifier,
    RoBERTa's out_proj, GPT-2's score, an MLP head's last layer)."""
    import torch

    found = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1]
    if not found:
        raise ValueError("no one-output linear layer in the regression model")
    return found[-1]


def _rescale(head: Any, factor: float, offset: float) -> None:
    """head(x) becomes factor * head(x) + offset (offset needs a bias)."""
    import torch

    with torch.no_grad():
        head.weight.mul_(factor)
        if head.bias is not None:
            head.bias.mul_(factor).add_(offset)


class RegressionMetrics:
    def __init__(self) -> None:
        self.predictions: list[float] = []
        self.targets: list[float] = []
        self.loss_sum = 0.0
        self.count = 0

    def update(self, predictions: Any, batch: dict[str, Any], loss: Any) -> None:
        self.predictions += predictions.float().cpu().tolist()
        if "labels" in batch:
            n = batch["labels"].shape[0]
            self.targets += batch["labels"].float().cpu().tolist()
            if loss is not None:
                self.loss_sum += float(loss) * n
                self.count += n

    def compute(self) -> dict[str, float]:
        return regression_scores(self.targets, self.predictions) | mean_loss(self.loss_sum, self.count)

    def report(self) -> dict[str, Any]:
        return {**self.compute(), "num_examples": len(self.targets)}

    def bootstrap_statistics(self) -> Any:
        """MSE, the main metric, is the mean of per-example squared errors."""
        import numpy as np

        from fmctl.evaluate.bootstrap import Statistics, mean

        if not self.targets:
            return None
        return Statistics("mse", [(np.asarray(self.predictions) - np.asarray(self.targets)) ** 2], mean)

    def records(self, rows: list[Any], example_fields: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for row, prediction in zip(rows, self.predictions, strict=True):
            yield {**example_fields(row), "label": row.label, "prediction": round(prediction, 6)}

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        return None

    def tables(self, report: dict[str, Any]) -> list[Any]:
        return []


def regression_scores(targets: list[float], predictions: list[float]) -> dict[str, float]:
    """MSE, RMSE, MAE (scikit-learn) and Pearson/Spearman correlation (scipy). A
    correlation is undefined when either side is constant (an untrained model often
    predicts one value); it is reported as 0, no linear or rank relation, rather than NaN,
    which JSON cannot hold and best-model tracking cannot compare."""
    if not targets:
        return {}
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    mse = float(mean_squared_error(targets, predictions))
    out = {"mse": mse, "rmse": math.sqrt(mse), "mae": float(mean_absolute_error(targets, predictions))}
    constant = len(set(targets)) < 2 or len(set(predictions)) < 2
    out["pearson"] = 0.0 if constant else float(pearsonr(targets, predictions).statistic)
    out["spearman"] = 0.0 if constant else float(spearmanr(targets, predictions).statistic)
    return out


TASKS = (TaskDeclaration(
    name="regression", config=RegressionTaskConfig, implementation=Regression, backbones=("bert", "gpt"),
    metrics=("mse", "rmse", "mae", "pearson", "spearman", "loss"), main_metric="mse", main_mode="min",
    minimized=("mse", "rmse", "mae"), customize=True,
    serving=Serving(reads="text", not_quantizable="a regression output has no label to agree on, so a quantized "
                                                  "model could not be checked")),)

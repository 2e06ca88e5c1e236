"""Regression on single texts or text pairs (similarity scores, ratings) with a BERT or
GPT backbone: one output, mean squared error.

model/ is transformers' AutoModelForSequenceClassification with num_labels=1 and
problem_type 'regression', so it reloads and scores the same way without fmctl. Metrics
are scikit-learn's MSE/MAE and scipy's Pearson and Spearman correlations.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterator

from fmctl.config.schema import RegressionTaskConfig, RunConfig
from fmctl.data.collate import PadCollator
from fmctl.data.labels import number_label
from fmctl.data.sources import split_paths
from fmctl.data.text import EncodedDataset, encode_rows, read_text_rows
from fmctl.models import text as text_models
from fmctl.tasks.base import PreparedData
from fmctl.tasks.classification import read_splits
from fmctl.tasks.text_inputs import example_text, fingerprints, mean_loss, saved_label_names, tokenizer_for

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Regression:
    name = "regression"
    main_metric = "mse"
    main_mode = "min"
    metric_names = ("mse", "rmse", "mae", "pearson", "spearman", "loss")
    minimized = ("mse", "rmse", "mae")

    def __init__(self, cfg: RegressionTaskConfig):
        self.cfg = cfg
        self.target_name = "score"

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        paths = split_paths(run.data)
        warnings: list[str] = []
        rows = read_splits(run.data, paths,
                           lambda p: read_text_rows(p, run.data, parse_label=number_label, warnings=warnings), splits)

        def training_texts():
            for r in rows["train"]:
                yield r.text
                if r.pair:
                    yield r.pair

        tokenizer = tokenizer_for(run, model_dir, training_texts)
        self.target_name = saved_label_names(model_dir)[0] if model_dir else run.data.label_column
        datasets = {split: EncodedDataset(encode_rows(split_rows, tokenizer, run.data.max_length),
                                          [r.label for r in split_rows])
                    for split, split_rows in rows.items()}
        pad = {"input_ids": tokenizer.pad_token_id, "token_type_ids": 0}
        return PreparedData(
            train=datasets.get("train"), validation=datasets.get("validation"), test=datasets.get("test"),
            collate=PadCollator(pad), label_names=[], preprocessor=tokenizer, sources=fingerprints(paths), rows=rows,
            warnings=warnings)

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        return text_models.build_sequence_classifier(run.backbone, data.preprocessor, [self.target_name],
                                                     problem_type="regression")

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(**{k: batch[k] for k in _MODEL_INPUTS if k in batch}).logits.squeeze(-1)

    def loss(self, predictions: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.mse_loss(predictions.float(), batch["labels"].float())

    def new_metrics(self) -> "RegressionMetrics":
        return RegressionMetrics()

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        text_models.save(model, data.preprocessor, folder)

    def load_model(self, folder: Path) -> Any:
        model, _ = text_models.load_for_inference(folder)
        return model

    def example_fields(self, row: Any) -> dict[str, Any]:
        return example_text(row)


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

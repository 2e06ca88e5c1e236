"""Multi-label text classification: any number of labels per text (topics, tags).

One sigmoid per label, binary cross-entropy; a label is predicted when its probability
reaches task.threshold. model/ is AutoModelForSequenceClassification with problem_type
'multi_label_classification' and the label names in config.json. Scores are
scikit-learn's micro/macro F1, subset accuracy and a per-label table.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from fmctl import backbones
from fmctl.config.schema import RunConfig, bounded
from fmctl.data.collate import PadCollator
from fmctl.data.labels import align_to_saved, label_list, label_names_from
from fmctl.data.sources import split_paths
from fmctl.data.text import EncodedDataset, encode_rows, read_text_rows
from fmctl.errors import DataError
from fmctl.models.saved import saved_label_names
from fmctl.tasks.base import PreparedData, Task
from fmctl.tasks.classification import check_labels, read_splits
from fmctl.tasks.declare import Serving, TaskDeclaration
from fmctl.tasks.text_inputs import example_text, fingerprints, mean_loss, tokenizer_for, training_texts


@dataclass
class MultilabelTaskConfig:
    name: Literal["multilabel_classification"] = "multilabel_classification"
    # A label is predicted when its sigmoid probability reaches this.
    threshold: float = bounded(0.5, gt=0.0, lt=1.0)


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class MultilabelClassification(Task):
    def __init__(self, cfg: MultilabelTaskConfig):
        self.cfg = cfg
        self.label_names: list[str] = []

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        paths = split_paths(run.data)
        parse = functools.partial(label_list, separator=run.data.label_separator)
        warnings: list[str] = []
        rows = read_splits(run.data, paths, lambda p: read_text_rows(p, run.data, parse_label=parse, warnings=warnings),
                           splits)
        if model_dir:
            names = saved_label_names(model_dir)
            aligned = align_to_saved((label for split_rows in rows.values() for r in split_rows for label in r.label),
                                     names)
            for split_rows in rows.values():
                for r in split_rows:
                    r.label = sorted({aligned.get(label, label) for label in r.label})
        else:
            names = label_names_from(label for r in rows["train"] for label in r.label)
            if not names:
                raise DataError(f"{paths['train']}: no row has a label in column '{run.data.label_column}'")
        check_labels(rows, names, paths, None if model_dir else run.data,
                     lambda r: [(label, f"{r.source}:{r.line}") for label in r.label])

        tokenizer = tokenizer_for(run, model_dir, lambda: training_texts(rows["train"]))
        index = {n: i for i, n in enumerate(names)}

        def multi_hot(labels: list[str]) -> list[float]:
            out = [0.0] * len(names)
            for label in labels:
                out[index[label]] = 1.0
            return out

        datasets = {split: EncodedDataset(encode_rows(split_rows, tokenizer, run.data.max_length),
                                          [multi_hot(r.label) for r in split_rows])
                    for split, split_rows in rows.items()}
        self.label_names = names
        return PreparedData(
            train=datasets.get("train"), validation=datasets.get("validation"), test=datasets.get("test"),
            collate=PadCollator({"input_ids": tokenizer.pad_token_id, "token_type_ids": 0}), label_names=names,
            preprocessors={"text": tokenizer}, sources=fingerprints(paths), rows=rows, warnings=warnings)

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        self.backbone = backbones.family(run.backbone.name)
        return self.backbone.build(run.backbone, "sequence_classification", data.preprocessor,
                                   label_names=data.label_names, problem_type="multi_label_classification")

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(**{k: batch[k] for k in _MODEL_INPUTS if k in batch}).logits

    def loss(self, logits: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(logits.float(), batch["labels"].float())

    def new_metrics(self) -> "MultilabelMetrics":
        return MultilabelMetrics(self.label_names, self.cfg.threshold)

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        self.backbone.save(model, folder, data.preprocessor)

    def load_model(self, folder: Path) -> Any:
        self.backbone = backbones.of_folder(folder)
        model, _ = self.backbone.load(folder, "sequence_classification")
        return model

    def example_fields(self, row: Any) -> dict[str, Any]:
        return example_text(row)

    def parity_measure(self) -> Any:
        from fmctl.export.measures import ThresholdSet

        return ThresholdSet(self.cfg.threshold)

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        return {"kind": "sigmoid_threshold", "output": "logits", "threshold": float(self.cfg.threshold),
                "labels": "label_names"}


class MultilabelMetrics:
    def __init__(self, label_names: list[str], threshold: float):
        self.label_names = label_names
        self.threshold = threshold
        self.probs: list[Any] = []
        self.targets: list[Any] = []
        self.loss_sum = 0.0
        self.count = 0

    def update(self, logits: Any, batch: dict[str, Any], loss: Any) -> None:
        self.probs.append(logits.float().sigmoid().cpu())
        if "labels" in batch:
            n = batch["labels"].shape[0]
            self.targets.append(batch["labels"].cpu())
            if loss is not None:
                self.loss_sum += float(loss) * n
                self.count += n

    def arrays(self) -> tuple[Any, Any, Any]:
        """(predicted 0/1, gold 0/1, probabilities), one row per example."""
        import torch

        probs = torch.cat(self.probs).numpy()
        gold = torch.cat(self.targets).numpy().astype(int) if self.targets else None
        return (probs >= self.threshold).astype(int), gold, probs

    def compute(self) -> dict[str, float]:
        if not self.targets:
            return {}
        predicted, gold, _ = self.arrays()
        return multilabel_scores(gold, predicted) | mean_loss(self.loss_sum, self.count)

    def report(self) -> dict[str, Any]:
        from sklearn.metrics import precision_recall_fscore_support

        predicted, gold, _ = self.arrays()
        out: dict[str, Any] = {**self.compute(), "num_examples": int(len(gold)), "threshold": self.threshold}
        precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, average=None,
                                                                         zero_division=0)
        out["per_label"] = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                                   "support": int(support[i])} for i, name in enumerate(self.label_names)}
        return out

    def bootstrap_statistics(self) -> Any:
        """Micro F1, the main metric, from per-example true/false positive and false
        negative counts."""
        from fmctl.evaluate.bootstrap import Statistics, f1_from_counts

        if not self.targets:
            return None
        predicted, gold, _ = self.arrays()
        return Statistics("micro_f1", [(predicted * gold).sum(1), (predicted * (1 - gold)).sum(1),
                                       ((1 - predicted) * gold).sum(1)], f1_from_counts)

    def records(self, rows: list[Any], example_fields: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        predicted, _, probs = self.arrays()
        for i, row in enumerate(rows):
            yield {**example_fields(row), "labels": row.label,
                   "predictions": [n for n, on in zip(self.label_names, predicted[i]) if on],
                   "probabilities": {n: round(float(p), 6) for n, p in zip(self.label_names, probs[i])}}

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        return None

    def tables(self, report: dict[str, Any]) -> list[Any]:
        from fmctl.report import per_class_table

        return [per_class_table(report["per_label"], title="per label")]


def multilabel_scores(gold: Any, predicted: Any) -> dict[str, float]:
    """Micro/macro F1, micro precision/recall and subset accuracy (every label of a row
    right), from scikit-learn on 0/1 indicator matrices."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    # macro over the labels that occur in the gold or the predictions: a label absent from
    # both (a rare one missing from a small validation split) says nothing, not F1 = 0
    seen = np.flatnonzero(np.asarray(gold).sum(0) + np.asarray(predicted).sum(0))
    return {
        "micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", labels=seen, zero_division=0)) if len(seen)
        else 0.0,
        "micro_precision": float(precision_score(gold, predicted, average="micro", zero_division=0)),
        "micro_recall": float(recall_score(gold, predicted, average="micro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(gold, predicted)),
    }


TASKS = (TaskDeclaration(
    name="multilabel_classification", config=MultilabelTaskConfig, implementation=MultilabelClassification,
    backbones=("bert", "gpt"), metrics=("micro_f1", "macro_f1", "micro_precision", "micro_recall", "subset_accuracy",
                                        "loss"),
    main_metric="micro_f1", main_mode="max", customize=True, serving=Serving(reads="text")),)

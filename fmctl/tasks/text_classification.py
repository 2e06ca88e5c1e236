"""Text classification of single texts or text pairs with a BERT or GPT backbone."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fmctl.config.schema import ClassificationTaskConfig, RunConfig
from fmctl.data.sources import fingerprint, split_paths
from fmctl.data.text import EncodedDataset, PaddingCollator, encode_rows, pad_multiple, read_text_rows
from fmctl.models import text as text_models
from fmctl.tasks.base import PreparedData
from fmctl.tasks.classification import (
    ClassificationMetrics, cross_entropy, label_ids, label_vocabulary, read_splits,
)

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TextClassification:
    name = "text_classification"
    main_metric = "accuracy"
    main_mode = "max"
    metric_names = ("accuracy", "macro_f1", "loss")  # reported as val/<name> during training

    def __init__(self, cfg: ClassificationTaskConfig):
        self.cfg = cfg
        self.label_names: list[str] = []

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        paths = split_paths(run.data)
        warnings: list[str] = []
        rows = read_splits(run.data, paths, lambda p: read_text_rows(p, run.data, warnings=warnings), splits)
        known = _saved_label_names(model_dir) if model_dir else None
        names = label_vocabulary(rows, known, paths, run.data)
        if model_dir:
            tokenizer = text_models.load_tokenizer_only(model_dir)
        else:
            def training_texts():
                for r in rows["train"]:
                    yield r.text
                    if r.pair:
                        yield r.pair
            tokenizer = text_models.load_tokenizer(run.backbone, training_texts)
            # Saved with model/, so `tokenizer(text, truncation=True)` truncates as fmctl did.
            tokenizer.model_max_length = run.data.max_length
        datasets = {split: EncodedDataset(encode_rows(split_rows, tokenizer, run.data.max_length),
                                          label_ids(split_rows, names))
                    for split, split_rows in rows.items()}
        self.label_names = names
        return PreparedData(
            train=datasets.get("train"), validation=datasets.get("validation"), test=datasets.get("test"),
            collate=PaddingCollator(tokenizer.pad_token_id, pad_multiple(run)), label_names=names,
            preprocessor=tokenizer,
            sources={split: fingerprint(p) for split, p in paths.items() if p is not None}, rows=rows,
            warnings=warnings)

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        return text_models.build_sequence_classifier(run.backbone, data.preprocessor, data.label_names)

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(**{k: batch[k] for k in _MODEL_INPUTS if k in batch}).logits

    def loss(self, logits: Any, batch: dict[str, Any]) -> Any:
        return cross_entropy(logits, batch["labels"], self.cfg.label_smoothing)

    def new_metrics(self) -> ClassificationMetrics:
        return ClassificationMetrics(self.label_names)

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        text_models.save(model, data.preprocessor, folder)

    def load_model(self, folder: Path) -> Any:
        model, _ = text_models.load_for_inference(folder)
        return model

    def example_fields(self, row: Any) -> dict[str, Any]:
        out = {"text": row.text}
        if row.pair is not None:
            out["text_pair"] = row.pair
        return out


def _saved_label_names(model_dir: Path) -> list[str]:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]

"""Text classification of single texts or text pairs with a BERT or GPT backbone."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl import backbones
from fmctl.config.schema import RunConfig
from fmctl.data.sources import split_paths
from fmctl.data.text import EncodedDataset, PaddingCollator, encode_rows, pad_multiple, read_text_rows
from fmctl.models.saved import saved_label_names
from fmctl.tasks.base import PreparedData
from fmctl.tasks.classification import (
    ClassificationTaskConfig, SoftmaxClassifier, cross_entropy, label_ids, label_vocabulary, read_splits,
)
from fmctl.tasks.declare import Serving, TaskDeclaration
from fmctl.tasks.text_inputs import example_text, fingerprints, tokenizer_for, training_texts

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TextClassification(SoftmaxClassifier):
    def __init__(self, cfg: ClassificationTaskConfig):
        self.cfg = cfg
        self.label_names: list[str] = []

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        warnings: list[str] = []
        rows = self.read_rows(run, splits, warnings)
        known = saved_label_names(model_dir) if model_dir else None
        names = label_vocabulary(rows, known, split_paths(run.data), run.data)
        tokenizer = tokenizer_for(run, model_dir, lambda: training_texts(rows["train"]))
        return self._encoded(run, rows, names, tokenizer, warnings)

    def prepare_with(self, run: RunConfig, preprocessor: Any, splits: tuple[str, ...]) -> PreparedData:
        warnings: list[str] = []
        rows = self.read_rows(run, splits, warnings)
        return self._encoded(run, rows, label_vocabulary(rows, None, split_paths(run.data), run.data), preprocessor,
                             warnings)

    def _encoded(self, run: RunConfig, rows: dict[str, list[Any]], names: list[str], tokenizer: Any,
                 warnings: list[str]) -> PreparedData:
        datasets = {split: EncodedDataset(encode_rows(split_rows, tokenizer, run.data.max_length),
                                          label_ids(split_rows, names))
                    for split, split_rows in rows.items()}
        self.label_names = names
        return PreparedData(
            train=datasets.get("train"), validation=datasets.get("validation"), test=datasets.get("test"),
            collate=PaddingCollator(tokenizer.pad_token_id, pad_multiple(run)), label_names=names,
            preprocessors={"text": tokenizer}, sources=fingerprints(split_paths(run.data)), rows=rows,
            warnings=warnings)

    def read_rows(self, run: RunConfig, splits: tuple[str, ...], warnings: list[str] | None = None
                  ) -> dict[str, list[Any]]:
        warnings = warnings if warnings is not None else []
        return read_splits(run.data, split_paths(run.data), lambda p: read_text_rows(p, run.data, warnings=warnings),
                           splits, warnings)

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        self.backbone = backbones.family(run.backbone.name)
        return self.backbone.build(run.backbone, "sequence_classification", data.preprocessor,
                                   label_names=data.label_names)

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(**{k: batch[k] for k in _MODEL_INPUTS if k in batch}).logits

    def loss(self, logits: Any, batch: dict[str, Any]) -> Any:
        return cross_entropy(logits, batch["labels"], self.cfg.label_smoothing)

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        self.backbone.save(model, folder, data.preprocessor)

    def load_model(self, folder: Path) -> Any:
        self.backbone = backbones.of_folder(folder)
        model, _ = self.backbone.load(folder, "sequence_classification")
        return model

    def example_fields(self, row: Any) -> dict[str, Any]:
        return example_text(row)


TASKS = (TaskDeclaration(
    name="text_classification", config=ClassificationTaskConfig, implementation=TextClassification,
    backbones=("bert", "gpt"), metrics=("accuracy", "macro_f1", "loss"), main_metric="accuracy", main_mode="max",
    probe_data=True, builtin_data=("topics",), customize=True, distill=True, serving=Serving(reads="text")),)

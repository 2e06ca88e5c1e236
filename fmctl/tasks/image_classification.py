"""Image classification on ImageFolder data, with a ViT (timm) or CvT (transformers)
backbone: whichever family builds, loads and saves the model, and gives its preprocessing."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl import backbones
from fmctl.config.schema import RunConfig
from fmctl.data.images import ImageDataset, attach_transforms, collate_images, scan_image_folder, verify_images
from fmctl.data.sources import split_paths
from fmctl.models.saved import saved_label_names
from fmctl.tasks.base import PreparedData
from fmctl.tasks.classification import (
    ClassificationTaskConfig, SoftmaxClassifier, cross_entropy, label_ids, label_vocabulary, read_splits,
)
from fmctl.tasks.declare import IMAGE_INPUTS, Serving, TaskDeclaration
from fmctl.tasks.text_inputs import fingerprints


class ImageClassification(SoftmaxClassifier):
    def __init__(self, cfg: ClassificationTaskConfig):
        self.cfg = cfg
        self.label_names: list[str] = []
        self.augment = False

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        warnings: list[str] = []
        rows = self.read_rows(run, splits, warnings)
        known = saved_label_names(model_dir) if model_dir else None
        data = self._unencoded(run, rows, known, warnings)
        if model_dir:
            self.set_preprocessing(data, backbones.of_folder(model_dir).preprocessor(run.backbone, folder=model_dir))
        return data

    def prepare_with(self, run: RunConfig, preprocessor: Any, splits: tuple[str, ...]) -> PreparedData:
        rows = self.read_rows(run, splits, warnings := [])
        data = self._unencoded(run, rows, None, warnings)
        self.augment = False  # the same eval transform for every split
        self.set_preprocessing(data, preprocessor)
        return data

    def _unencoded(self, run: RunConfig, rows: dict[str, list[Any]], known: list[str] | None,
                   warnings: list[str]) -> PreparedData:
        """Datasets of decoded-on-demand images; transforms are attached once the model exists."""
        paths = split_paths(run.data)
        if run.data.verify_images:
            for split_rows in rows.values():
                verify_images(split_rows)
        names = label_vocabulary(rows, known, paths, run.data)
        in_chans = getattr(run.backbone, "in_chans", 3)
        datasets = {split: ImageDataset(split_rows, label_ids(split_rows, names), None, in_chans)
                    for split, split_rows in rows.items()}
        self.label_names = names
        self.augment = run.data.augment
        return PreparedData(
            train=datasets.get("train"), validation=datasets.get("validation"), test=datasets.get("test"),
            collate=collate_images, label_names=names, sources=fingerprints(paths), rows=rows, warnings=warnings)

    def read_rows(self, run: RunConfig, splits: tuple[str, ...], warnings: list[str] | None = None
                  ) -> dict[str, list[Any]]:
        return read_splits(run.data, split_paths(run.data), scan_image_folder, splits, warnings)

    def set_preprocessing(self, data: PreparedData, prep: dict[str, Any]) -> None:
        data.preprocessor = prep
        attach_transforms(data, prep, self.augment)

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        self.backbone = backbones.family(run.backbone.name)
        model = self.backbone.build(run.backbone, "image_classification", num_classes=len(data.label_names),
                                    label_names=data.label_names)
        self.set_preprocessing(data, self.backbone.preprocessor(run.backbone, model=model))
        return model

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        from fmctl.models.outputs import logits

        return logits(model(batch["pixel_values"]))

    def loss(self, logits: Any, batch: dict[str, Any]) -> Any:
        return cross_entropy(logits, batch["labels"], self.cfg.label_smoothing)

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        self.backbone.save(model, folder, data.preprocessor, label_names=data.label_names)

    def load_model(self, folder: Path) -> Any:
        self.backbone = backbones.of_folder(folder)
        model, _ = self.backbone.load(folder, "image_classification")
        return model

    def example_fields(self, row: Any) -> dict[str, Any]:
        return {"image": str(row.path)}

    def auto_class(self, model_dir: Path) -> str:
        """A transformers image model (CvT) reloads with this class; a timm folder's
        manifests say how timm loads it instead."""
        return "AutoModelForImageClassification"


TASKS = (TaskDeclaration(
    name="image_classification", config=ClassificationTaskConfig, implementation=ImageClassification,
    backbones=("vit", "cvt"), metrics=("accuracy", "macro_f1", "loss"), main_metric="accuracy", main_mode="max",
    probe_data=True, builtin_data=("digits",), customize=True, distill=True,
    serving=Serving(reads="image", inputs=IMAGE_INPUTS)),)

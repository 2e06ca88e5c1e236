"""Semantic segmentation: a class for every pixel, from an image folder and a mask folder.

The encoder is a backbone family's (CvT's three stages, or a ViT's last block) with a
light decoder (fmctl.models.segmentation); images and masks get the same geometry
(fmctl.data.segmentation); the loss is cross-entropy over the pixels that are not
`data.ignore_index`; metrics are mean IoU, per-class IoU and pixel accuracy from a
confusion matrix accumulated batch by batch (fmctl.evaluate.segmentation). `fmctl eval`
writes the per-class table, a confusion-matrix picture and overlays; `fmctl predict`
writes a mask PNG per image; ONNX and TorchScript exports are checked on pixel labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fmctl import backbones
from fmctl.config.schema import RunConfig, bounded
from fmctl.tasks.base import PreparedData, Task
from fmctl.tasks.declare import IMAGE_INPUTS, Serving, TaskDeclaration

NAME = "semantic_segmentation"


@dataclass
class SegmentationTaskConfig:
    name: Literal["semantic_segmentation"] = "semantic_segmentation"
    # Width of the all-MLP decoder (SegFormer uses 256 at its smallest; 64 suits fmctl's tiny encoders).
    decoder_dim: int = bounded(64, ge=8)
    # fmctl eval: overlay pictures (image | true mask | predicted mask) of the first images.
    overlays: int = bounded(4, ge=0)


class SemanticSegmentation(Task):
    def __init__(self, cfg: SegmentationTaskConfig):
        self.cfg = cfg
        self.label_names: list[str] = []
        self.ignore_index = 255
        self.augment = False
        self.prep: dict[str, Any] | None = None

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        from fmctl.data.masks import check_masks, label_names, scan_mask_folders
        from fmctl.data.segmentation import SegmentationDataset, collate_masks
        from fmctl.data.sources import split_paths
        from fmctl.tasks.classification import read_splits
        from fmctl.tasks.text_inputs import fingerprints

        data = run.data
        paths = split_paths(data)
        rows = read_splits(data, paths, lambda root: scan_mask_folders(root, data.image_dir, data.mask_dir), splits)
        if model_dir:
            from fmctl.models.segmentation import read_config

            saved = read_config(model_dir)
            names, self.ignore_index = list(saved["label_names"]), int(saved["ignore_index"])
        else:
            names, self.ignore_index = label_names(data, paths.get("train")), data.ignore_index
        if 0 <= self.ignore_index < len(names):
            from fmctl.errors import DataError

            raise DataError(f"data.ignore_index: {self.ignore_index} is also a class index ({len(names)} classes); "
                            f"choose a value no class uses")
        for split_rows in rows.values():
            check_masks(split_rows, names, self.ignore_index)
        self.label_names = names
        self.augment = data.augment
        datasets = {split: SegmentationDataset(split_rows, run.trainer.seed) for split, split_rows in rows.items()}
        prepared = PreparedData(train=datasets.get("train"), validation=datasets.get("validation"),
                                test=datasets.get("test"), collate=collate_masks, label_names=names,
                                sources=fingerprints(paths), rows=rows)
        if model_dir:
            self.set_preprocessing(prepared, self.image_preprocessing(run, model_dir))
        return prepared

    def set_preprocessing(self, data: PreparedData, prep: dict[str, Any]) -> None:
        from fmctl.data.segmentation import squash

        self.prep = squash(prep)
        data.preprocessor = self.prep
        for split in ("train", "validation", "test"):
            dataset = getattr(data, split)
            if dataset is not None:
                dataset.configure(self.prep, augment=self.augment and split == "train")

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        from fmctl.models.segmentation import SegmentationModel

        family = backbones.family(run.backbone.name)
        encoder = family.build(run.backbone, "features")
        self.set_preprocessing(data, family.preprocessor(run.backbone, model=encoder))
        return SegmentationModel(encoder, run.backbone.name, len(data.label_names), self.cfg.decoder_dim)

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(batch["pixel_values"])

    def loss(self, logits: Any, batch: dict[str, Any]) -> Any:
        """Mean cross-entropy over the pixels that count (0 for a batch that has none)."""
        import torch.nn.functional as F

        labels = batch["labels"]
        if logits.shape[-2:] != labels.shape[-2:]:  # logits follow the mask's size
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        total = F.cross_entropy(logits.float(), labels, ignore_index=self.ignore_index, reduction="sum")
        return total / (labels != self.ignore_index).sum().clamp(min=1)

    def new_metrics(self) -> Any:
        from fmctl.evaluate.segmentation import SegmentationMetrics

        return SegmentationMetrics(self.label_names, self.ignore_index, self.cfg.overlays)

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        from fmctl.models import segmentation

        segmentation.save(model, folder, data.preprocessor, data.label_names, self.ignore_index)

    def load_model(self, folder: Path) -> Any:
        from fmctl.models import segmentation

        return segmentation.load(folder)

    def example_fields(self, row: Any) -> dict[str, Any]:
        return {"image": str(row.path), "mask": str(row.mask)}

    # ---- serving -----------------------------------------------------------------
    def image_preprocessing(self, run: RunConfig, model_dir: Path) -> dict[str, Any]:
        from fmctl.models.segmentation import read_config

        return dict(read_config(model_dir)["image_preprocessing"])

    def output_specs(self, label_names: list[str]) -> list[dict[str, Any]]:
        size = self.prep["image_size"] if self.prep else "height"
        return [{"name": "logits", "dtype": "float32", "shape": ["batch", len(label_names), size, size]}]

    def parity_measure(self) -> Any:
        from fmctl.export.measures import PixelLabels

        return PixelLabels(self.ignore_index)

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        from fmctl.models.segmentation import read_config

        return {"kind": "mask", "output": "logits", "labels": "label_names",
                "ignore_index": int(read_config(model_dir)["ignore_index"]),
                "resize": "logits resized bilinearly to the image's own size (the model saw it squashed to "
                          "image_size), then the likeliest class per pixel; written as palette PNGs"}


def _checks(run: Any) -> list[str]:
    data, problems = run.data, []
    if data.label_names and data.labels_file:
        problems.append("data.labels_file: give the class names once, as data.label_names or data.labels_file")
    if data.label_names and data.ignore_index < len(data.label_names):
        problems.append(f"data.ignore_index: {data.ignore_index} is also a class index (data.label_names has "
                        f"{len(data.label_names)} classes); choose a value no class uses, such as 255")
    return problems


TASKS = (TaskDeclaration(
    name=NAME, config=SegmentationTaskConfig, implementation=SemanticSegmentation, backbones=("cvt", "vit"),
    metrics=("mean_iou", "pixel_accuracy", "loss"), main_metric="mean_iou", main_mode="max",
    builtin_data=("icon_scenes",), checks=_checks,
    serving=Serving(reads="image", inputs=IMAGE_INPUTS, outputs=("logits",), formats=("onnx", "torchscript"))),)

"""Masked image modelling (SimMIM) on unlabelled images: class folders are optional."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fmctl import backbones
from fmctl.config.schema import RunConfig, bounded
from fmctl.data.images import ImageDataset, build_transform, scan_images, verify_images
from fmctl.data.sources import split_paths
from fmctl.tasks.base import PreparedData, Task
from fmctl.tasks.classification import read_splits
from fmctl.tasks.declare import IMAGE_INPUTS, WEIGHT_FORMATS, Serving, TaskDeclaration
from fmctl.tasks.text_inputs import fingerprints


@dataclass
class MIMTaskConfig:
    name: Literal["mim"] = "mim"
    # SimMIM: the fraction of patches replaced by a learned mask token and reconstructed.
    mask_ratio: float = bounded(0.6, gt=0.0, lt=1.0)


class MaskedPatches:
    """Images plus a patch mask drawn from (seed, epoch, index)."""

    def __init__(self, images: ImageDataset, patches: int, ratio: float, seed: int):
        self.images, self.patches, self.ratio, self.seed = images, patches, ratio, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        item = self.images[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        count = max(1, int(round(self.ratio * self.patches)))
        mask = np.zeros(self.patches, dtype=bool)
        mask[rng.choice(self.patches, size=count, replace=False)] = True
        return {"pixel_values": item["pixel_values"], "mask": torch.from_numpy(mask)}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    batch = {key: torch.stack([it[key] for it in items]) for key in ("pixel_values", "mask")}
    batch["num_tokens"] = int(batch["mask"].numel())
    return batch


class MIMMetrics:
    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.count = 0

    def update(self, outputs: Any, batch: dict[str, Any], loss: Any) -> None:
        n = int(batch["mask"].sum())
        self.loss_sum += float(loss) * n
        self.count += n

    def compute(self) -> dict[str, float]:
        return {"loss": self.loss_sum / self.count} if self.count else {}


class MaskedImageModeling(Task):
    label_names: list[str] = []

    def __init__(self, cfg: MIMTaskConfig):
        self.cfg = cfg

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation")) -> PreparedData:
        paths = split_paths(run.data)
        rows = read_splits(run.data, paths, scan_images, [s for s in splits if s != "test"])
        if run.data.verify_images:
            for split_rows in rows.values():
                verify_images(split_rows)
        self._run = run
        datasets = {split: ImageDataset(split_rows, None, None, run.backbone.in_chans)
                    for split, split_rows in rows.items()}
        return PreparedData(train=datasets.get("train"), validation=datasets.get("validation"), test=None,
                            collate=collate, label_names=[],
                            sources=fingerprints(paths),
                            rows=rows)

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        from fmctl.models.simmim import SimMIM

        self.backbone = backbones.family(run.backbone.name)
        encoder = self.backbone.build(run.backbone, "pretraining")
        model = SimMIM(encoder)
        prep = self.backbone.preprocessor(run.backbone, model=encoder)
        data.preprocessor = prep
        patches = encoder.patch_embed.num_patches
        for split in ("train", "validation"):
            images = getattr(data, split)
            if images is not None:
                images.transform = build_transform(prep, train=split == "train", augment=run.data.augment)
                setattr(data, split, MaskedPatches(images, patches, self.cfg.mask_ratio,
                                                   run.trainer.seed + (0 if split == "train" else 7919)))
        return model

    def has_targets(self, batch: dict[str, Any]) -> bool:
        return True

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(batch["pixel_values"], batch["mask"]), model.patchify(batch["pixel_values"])

    def loss(self, outputs: Any, batch: dict[str, Any]) -> Any:
        predicted, target = outputs
        mask = batch["mask"]
        return (predicted.float() - target.float()).abs()[mask].mean()

    def new_metrics(self) -> MIMMetrics:
        return MIMMetrics()

    def flops_per_token(self, model: Any, seq_len: int) -> float:
        encoder = model.encoder
        patches = encoder.patch_embed.num_patches + encoder.num_prefix_tokens
        params = sum(p.numel() for p in model.parameters()) - encoder.pos_embed.numel()
        return 6 * params + 12 * len(encoder.blocks) * encoder.embed_dim * patches

    def load_model(self, folder: Path) -> Any:
        from fmctl.errors import RunFolderError

        raise RunFolderError(f"{folder}: a masked-image-modelling run keeps only the encoder in model/ (no pixel "
                             f"decoder), so it cannot be re-scored; its reconstruction loss is val/loss in "
                             f"metrics.jsonl")

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        self.backbone.save(model.encoder, folder)

    # A SimMIM run keeps only its ViT encoder in model/ (timm layout): it is exported as
    # weights or an hf (timm) folder and checked on the pooled features of validation images.
    def served_label_names(self, model_dir: Path, data: PreparedData) -> list[str]:
        return []

    def export_data(self, run: RunConfig, model_dir: Path, split: str) -> PreparedData:
        """Plain images (no patch masks) through the encoder's own evaluation transform."""
        from fmctl.data.images import build_transform, collate_images

        data = self.prepare(run, model_dir=model_dir, splits=(split,))
        encoder = self.export_model(model_dir)
        data.preprocessor = self.backbone.preprocessor(run.backbone, model=encoder)
        images = getattr(data, split)
        if images is not None:
            images.transform = build_transform(data.preprocessor, train=False, augment=False)
        data.collate = collate_images
        return data

    def export_model(self, folder: Path) -> Any:
        self.backbone = backbones.of_folder(folder)
        model, _ = self.backbone.load(folder, "pretraining")
        return model

    def save_export(self, model: Any, data: PreparedData, folder: Path) -> None:
        self.backbone.save(model, folder)

    def output_specs(self, label_names: list[str]) -> list[dict[str, Any]]:
        return [{"name": "features", "dtype": "float32", "shape": ["batch", "features"]}]

    def parity_measure(self) -> Any:
        from fmctl.export.measures import DifferenceOnly

        return DifferenceOnly()

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        return {"kind": "features", "output": "features",
                "use": "a starting point for fine-tuning (fmctl finetune backbone.pretrained=...)"}


TASKS = (TaskDeclaration(
    name="mim", config=MIMTaskConfig, implementation=MaskedImageModeling, backbones=("vit",), metrics=("loss",),
    main_metric="loss", main_mode="min", verbs=("pretrain",), builtin_data=("digits",),
    serving=Serving(elsewhere="a masked-image run is a starting point: fine-tune it (fmctl finetune "
                              "backbone.pretrained=RUN)", inputs=IMAGE_INPUTS, outputs=("features",),
                    formats=WEIGHT_FORMATS)),)

"""Images from an ImageFolder layout: root/<class>/<image>."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fmctl.errors import DataError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageRow:
    path: Path
    label: str | None


def scan_image_folder(root: Path) -> list[ImageRow]:
    if not root.exists():
        raise DataError(f"{root}: folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: expected an ImageFolder (root/<class>/<image files>), got a file")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders; expected root/<class>/<image files>")
    rows = [ImageRow(f, c.name) for c in classes for f in sorted(c.rglob("*"))
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    if not rows:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under its class folders")
    return rows


def scan_images(root: Path) -> list[ImageRow]:
    """Every image under root, class folders or not (unlabelled data for pretraining)."""
    if not root.exists():
        raise DataError(f"{root}: folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder of images, got a file")
    rows = [ImageRow(f, None) for f in sorted(root.rglob("*"))
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")]
    if not rows:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return rows


def verify_images(rows: Sequence[ImageRow]) -> None:
    """Open every file's header before training, so a corrupt image is named up front
    rather than crashing the loop an hour in."""
    from PIL import Image

    for row in rows:
        try:
            with Image.open(row.path) as image:
                image.verify()
        except Exception as exc:  # PIL raises many types for broken files
            raise DataError(f"{row.path}: cannot read image ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None


def build_transform(prep: dict[str, Any], train: bool, augment: bool) -> Any:
    """timm's own transforms, so that `timm.data.create_transform(**resolve_data_config(model=m))`
    on the saved model reproduces fmctl's evaluation preprocessing exactly."""
    from timm.data import create_transform

    common = {"input_size": (prep["in_chans"], prep["image_size"], prep["image_size"]),
              "interpolation": prep["interpolation"], "mean": tuple(prep["mean"]), "std": tuple(prep["std"])}
    if train and augment:
        return create_transform(is_training=True, scale=(0.8, 1.0), hflip=0.5, color_jitter=0.0, **common)
    return create_transform(is_training=False, crop_pct=prep["crop_pct"], **common)


class ImageDataset:
    """Decodes lazily; a file that fails to decode names itself."""

    def __init__(self, rows: Sequence[ImageRow], label_ids: list[int] | None, transform: Any, in_chans: int):
        self.rows = list(rows)
        self.label_ids = label_ids
        self.transform = transform
        self.mode = "L" if in_chans == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image

        path = self.rows[index].path
        try:
            with Image.open(path) as image:
                pixels = self.transform(image.convert(self.mode))
        except Exception as exc:
            raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None
        item = {"pixel_values": pixels}
        if self.label_ids is not None:
            item["labels"] = self.label_ids[index]
        return item


def collate_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    batch: dict[str, Any] = {"pixel_values": torch.stack([it["pixel_values"] for it in items])}
    if "labels" in items[0]:
        batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
    return batch

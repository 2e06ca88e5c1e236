"""Images from an ImageFolder layout: root/<class>/<image>."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fmctl.errors import DataError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Pillow modes holding more than 8 bits per pixel; convert("RGB"/"L") clips them at 255.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


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
    rows = [ImageRow(f, c.name) for c in classes for f in image_files(c)]
    if not rows:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under its class folders")
    return rows


def scan_images(root: Path) -> list[ImageRow]:
    """Every image under root, class folders or not (unlabelled data for pretraining)."""
    if not root.exists():
        raise DataError(f"{root}: folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder of images, got a file")
    rows = [ImageRow(f, None) for f in image_files(root)]
    if not rows:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return rows


def image_files(folder: Path) -> list[Path]:
    """Image files under folder, skipping hidden files and folders: macOS's `._name.jpg`
    resource forks and `.thumbnails/` caches have image extensions but are not examples."""
    return [f for f in sorted(folder.rglob("*"))
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in f.relative_to(folder).parts)]


def open_image(path: Path, mode: str) -> Any:
    """Decode a file as a photo viewer shows it, in `mode` ("RGB" or "L").

    Why not just `Image.open(path).convert(mode)`: phone photos are stored sideways with
    an EXIF rotate tag, Pillow's convert clips 16-bit greyscale (medical, scientific and
    scanner PNG/TIFF) at 255, which turns a normal 16-bit image white, and it drops the
    alpha channel of a transparent image, leaving whatever colour the transparent pixels
    happen to hold (icon themes store black there, so a black glyph on transparency becomes
    an all-black square); transparent images are laid on white, as a page shows them.
    Training, evaluation and every predict path decode through here, so they see the same
    pixels."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_MODES:
        values = np.asarray(image)
        if image.mode != "I" or values.max(initial=0) > 255:  # "I" also holds plain 8-bit data
            values = np.clip(values, 0, 65535).astype(np.uint32) >> 8
        image = Image.fromarray(values.astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image.convert("RGBA"))
    return image.convert(mode)


def verify_images(rows: Sequence[ImageRow]) -> None:
    """Decode every file before training, so a corrupt or truncated image is named up
    front rather than crashing the loop an hour in. A header check (`Image.verify`) misses
    truncated JPEGs; JPEGs are decoded at reduced scale (`draft`), which still reads every
    byte, so the check costs a few ms per photo. `data.verify_images=false` skips it."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for problem in pool.map(decode_problem, [row.path for row in rows]):
            if problem:
                raise DataError(problem)


def decode_problem(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # only JPEG honours it; PIL decodes in C without the GIL
            image.load()
    except Exception as exc:  # PIL raises many types for broken files
        return f"{path}: cannot read image ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
    return None


def attach_transforms(data: Any, prep: dict[str, Any], augment: bool) -> None:
    """Give each split's image dataset the model's transform (training: with augmentation
    when asked) and colour mode. Transforms follow the model's input size and
    normalisation, so a task attaches them once the model exists."""
    for split in ("train", "validation", "test"):
        dataset = getattr(data, split)
        if dataset is not None:
            dataset.transform = build_transform(prep, train=split == "train", augment=augment)
            dataset.mode = "L" if prep["in_chans"] == 1 else "RGB"


def build_transform(prep: dict[str, Any], train: bool, augment: bool) -> Any:
    """timm's own transforms, so that `timm.data.create_transform(**resolve_data_config(model=m))`
    on the saved model reproduces fmctl's evaluation preprocessing exactly."""
    from timm.data import create_transform

    common = {"input_size": (prep["in_chans"], prep["image_size"], prep["image_size"]),
              "interpolation": prep["interpolation"], "mean": tuple(prep["mean"]), "std": tuple(prep["std"])}
    if train and augment:
        return create_transform(is_training=True, scale=(0.8, 1.0), hflip=0.5, color_jitter=0.0, **common)
    return create_transform(is_training=False, crop_pct=prep["crop_pct"], crop_mode=prep.get("crop_mode", "center"),
                            **common)


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
        path = self.rows[index].path
        try:
            pixels = self.transform(open_image(path, self.mode))
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

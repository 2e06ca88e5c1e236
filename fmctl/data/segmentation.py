"""Image and mask pairs as tensors: the same geometry for both, the mask never blended.

The image goes through the backbone's evaluation transform with crop_mode 'squash'
(resize both sides to image_size: the whole image is seen, so a predicted mask maps back
onto it); the mask is resized to the same grid with nearest-neighbour, so every pixel
keeps a class index (or the ignore index). With data.augment, training pairs first get
one random resized crop (scale 0.8-1) and horizontal flip, drawn from (seed, epoch,
index) and applied to both, so a resumed run sees the same crops.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from fmctl.data.images import build_transform, open_image
from fmctl.data.masks import MaskRow, read_mask
from fmctl.errors import DataError

SCALE = (0.8, 1.0)
RATIO = (3 / 4, 4 / 3)


def squash(prep: dict[str, Any]) -> dict[str, Any]:
    """The backbone's preprocessing, resizing the whole image to the input size (no crop)."""
    return {**prep, "crop_mode": "squash", "crop_pct": 1.0}


class SegmentationDataset:
    """Decodes lazily; a pair that fails to decode names its files."""

    def __init__(self, rows: Sequence[MaskRow], seed: int = 0):
        self.rows = list(rows)
        self.seed = seed
        self.epoch = 0
        self.transform: Any = None
        self.size = 0
        self.mode = "RGB"
        self.augment = False

    def configure(self, prep: dict[str, Any], augment: bool) -> None:
        """Transforms follow the model's input size and normalisation, known once it exists."""
        self.transform = build_transform(squash(prep), train=False, augment=False)
        self.size = int(prep["image_size"])
        self.mode = "L" if prep["in_chans"] == 1 else "RGB"
        self.augment = augment

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np
        import torch
        from PIL import Image

        row = self.rows[index]
        try:
            image = open_image(row.path, self.mode)
        except Exception as exc:  # Pillow raises many types for broken files
            raise DataError(f"{row.path}: cannot decode image ({type(exc).__name__}: {exc})") from None
        mask = Image.fromarray(read_mask(row.mask).astype(np.int32))  # mode I: any index survives resizing
        if self.augment:
            image, mask = self._augmented(image, mask, index)
        mask = mask.resize((self.size, self.size), Image.Resampling.NEAREST)
        return {"pixel_values": self.transform(image),
                "labels": torch.from_numpy(np.asarray(mask, dtype=np.int64).copy())}

    def _augmented(self, image: Any, mask: Any, index: int) -> tuple[Any, Any]:
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng([self.seed, self.epoch, index])
        box = crop_box(image.size, rng)
        image, mask = image.crop(box), mask.crop(box)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image, mask


def crop_box(size: tuple[int, int], rng: Any) -> tuple[int, int, int, int]:
    """A random crop covering SCALE of the area at an aspect ratio within RATIO
    (torchvision's RandomResizedCrop rule; the whole image after ten misses)."""
    width, height = size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        ratio = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    return 0, 0, width, height


def collate_masks(items: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    return {"pixel_values": torch.stack([it["pixel_values"] for it in items]),
            "labels": torch.stack([it["labels"] for it in items])}

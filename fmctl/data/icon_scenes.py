"""Built-in segmentation data: real icons composited onto real photographs.

The icons are the full-colour 48x48 PNGs of the system's Adwaita icon theme (Debian
package adwaita-icon-theme) from three of its context folders: places (folders, trash,
network), mimetypes (documents, spreadsheets, media files) and devices (cameras, drives,
batteries); a `legacy/` icon counts for the context its symbolic twin sits in. Their alpha
channel is a real foreground mask. The backgrounds are random crops of the photographs
shipped inside scikit-learn (china.jpg, flower.jpg) and matplotlib (grace_hopper.jpg).

Each scene pastes one to three icons at random sizes and places; the mask holds the
icon's class where its alpha is at least 0.9, 0 (background) where the photograph shows,
and 255 (`data.ignore_index`) on the anti-aliased rim in between, whose pixels are part
icon and part photo. Splits are separate draws (held-out composites: new photo crops,
positions and sizes; the icon pool is shared). Written as the files a user brings:
<split>/images/*.jpg, <split>/masks/*.png (same stems, palette PNGs), labels.txt.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl.errors import DataError

ICON_SCENES_VERSION = "icon-scenes-v1"
THEME = Path("/usr/share/icons/Adwaita")
CLASSES = ("background", "places", "mimetypes", "devices")
IGNORE = 255
SCENE_SIZE = 64
COUNTS = {"train": 600, "validation": 100, "test": 200}
# Alpha at or above this is the icon; above the lower bound and below it, the rim (ignored).
SOLID, RIM = 0.9, 0.1


def icon_scenes_folders() -> dict[str, Path]:
    """Write (once) and return the train/validation/test folders in the fmctl cache."""
    from fmctl import paths
    from fmctl.data.builtin import _atomic_folder

    folder = paths.cache_dir() / "builtin" / ICON_SCENES_VERSION
    splits = {split: folder / split for split in COUNTS}
    if all(p.is_dir() for p in splits.values()):
        return splits
    with _atomic_folder(folder) as tmp:
        write_icon_scenes(tmp, COUNTS)
    return splits


def write_icon_scenes(root: Path, counts: dict[str, int], size: int = SCENE_SIZE, seed: int = 0,
                      theme: Path = THEME) -> dict[str, Path]:
    """Scenes for each split (a split's draws depend on `seed` and its name only)."""
    import zlib

    import numpy as np
    from PIL import Image

    from fmctl.data.masks import mask_image

    icons = theme_icons(theme)
    photos = background_photos()
    out = {}
    for split, count in counts.items():
        rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
        images, masks = root / split / "images", root / split / "masks"
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels, mask = scene(rng, icons, photos, size)
            Image.fromarray(pixels).save(images / f"scene_{index:04d}.jpg", quality=92)
            mask_image(mask, IGNORE).save(masks / f"scene_{index:04d}.png")
        (root / split / "labels.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
        out[split] = root / split
    return out


def theme_icons(theme: Path = THEME) -> dict[int, list[Any]]:
    """class index -> the RGBA icons (PIL images) of its context, read once."""
    from PIL import Image

    base = Path(theme) / "48x48"
    if not base.is_dir():
        raise DataError(f"data.builtin=icon_scenes: the Adwaita icon theme is not installed ({base} is missing); "
                        f"install it (Debian/Ubuntu: apt install adwaita-icon-theme) or give your own "
                        f"data.train=FOLDER with images/ and masks/")
    twins = {}
    for context in (Path(theme) / "16x16").glob("*/"):
        for file in context.glob("*-symbolic.symbolic.png"):
            twins[file.name.split("-symbolic")[0]] = context.name
    found: dict[int, list[Any]] = {}
    for cls, context in enumerate(CLASSES[1:], start=1):
        files = sorted(p for p in (base / context).glob("*.png") if "symbolic" not in p.name)
        files += sorted(p for p in (base / "legacy").glob("*.png")
                        if "symbolic" not in p.name and twins.get(p.stem) == context)
        found[cls] = [Image.open(f).convert("RGBA") for f in files]
        if not found[cls]:
            raise DataError(f"data.builtin=icon_scenes: no full-colour icons in {base / context}")
    return found


def background_photos() -> list[Any]:
    """The photographs (RGB arrays) scikit-learn and matplotlib ship."""
    import numpy as np
    from matplotlib import cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(image) for image in load_sample_images().images]
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        photos.append(np.asarray(Image.open(handle).convert("RGB")))
    return photos


def scene(rng: Any, icons: dict[int, list[Any]], photos: list[Any], size: int) -> tuple[Any, Any]:
    """One composite (RGB uint8) and its mask (uint8: class, 0, or IGNORE on icon rims)."""
    import numpy as np
    from PIL import Image

    photo = photos[int(rng.integers(len(photos)))]
    side = int(rng.integers(size, min(photo.shape[:2]) + 1))
    top, left = int(rng.integers(photo.shape[0] - side + 1)), int(rng.integers(photo.shape[1] - side + 1))
    crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(crop, dtype=np.float32)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, len(CLASSES)))
        icon = icons[cls][int(rng.integers(len(icons[cls])))]
        width = int(rng.integers(size * 5 // 16, size * 5 // 8 + 1))
        rgba = np.asarray(icon.resize((width, width), Image.Resampling.LANCZOS), dtype=np.float32)
        y, x = int(rng.integers(size - width + 1)), int(rng.integers(size - width + 1))
        alpha = rgba[..., 3:] / 255.0
        region = pixels[y:y + width, x:x + width]
        pixels[y:y + width, x:x + width] = alpha * rgba[..., :3] + (1 - alpha) * region
        patch = mask[y:y + width, x:x + width]
        patch[alpha[..., 0] >= SOLID] = cls
        patch[(alpha[..., 0] > RIM) & (alpha[..., 0] < SOLID)] = IGNORE
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8), mask

"""Segmentation data on disk: an image folder and a mask folder whose files share stems.

    <split>/images/street/a.jpg      <split>/masks/street/a.png
    <split>/labels.txt               (optional: class names, the i-th for mask value i)

A mask is an index image (PNG mode L or P, or 16-bit): each pixel holds its class index,
or `data.ignore_index` (default 255) for pixels the loss and the metrics leave out.
Every pair is checked before training, each problem in one line that names the file: an
image without a mask, a mask of another size than its image, a value that is neither a
class nor the ignore index, a colour (RGB) mask.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fmctl.data.images import IMAGE_EXTENSIONS, image_files
from fmctl.errors import DataError

# Pillow modes that hold one index per pixel.
_INDEX_MODES = {"L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"}
LABELS_FILE = "labels.txt"


@dataclass
class MaskRow:
    path: Path          # the image (as classification rows call it)
    mask: Path
    label: None = None  # no image-level label (the readers' shared row shape)


def scan_mask_folders(root: Path, image_dir: str = "images", mask_dir: str = "masks") -> list[MaskRow]:
    """Every image under root/image_dir with its mask under root/mask_dir (same relative
    path and stem, any image extension; PNG first)."""
    images, masks = root / image_dir, root / mask_dir
    if not root.is_dir():
        raise DataError(f"{root}: {'folder not found' if not root.exists() else 'expected a folder, got a file'}; "
                        f"segmentation data is a folder holding {image_dir}/ and {mask_dir}/")
    for folder, key in ((images, "data.image_dir"), (masks, "data.mask_dir")):
        if not folder.is_dir():
            raise DataError(f"{root}: no {folder.name}/ folder ({key}); segmentation data is a folder holding "
                            f"{image_dir}/ and {mask_dir}/ whose files share stems ({image_dir}/a.jpg <-> "
                            f"{mask_dir}/a.png)")
    by_stem = {}
    for file in sorted(image_files(masks), key=lambda f: f.suffix.lower() != ".png"):
        by_stem.setdefault(file.relative_to(masks).with_suffix(""), file)
    rows = []
    for image in image_files(images):
        stem = image.relative_to(images).with_suffix("")
        if stem not in by_stem:
            raise DataError(f"{image}: no mask with its stem in {masks} (expected {masks / stem}.png)")
        rows.append(MaskRow(image, by_stem[stem]))
    if not rows:
        raise DataError(f"{images}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return rows


def read_mask(path: Path) -> Any:
    """The mask's class indices as an int64 array (height, width)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in _INDEX_MODES:
            raise DataError(f"{path}: a mask must hold one class index per pixel (a PNG of mode L or P, or "
                            f"16-bit), got mode {image.mode}; save the class indices, not colours")
        return np.asarray(image).astype(np.int64)


def displayed_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as a viewer shows it (EXIF rotation applied), from its
    header alone."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check_masks(rows: Sequence[MaskRow], label_names: Sequence[str], ignore_index: int) -> None:
    """Each mask the size of its image, with only class indices and the ignore index."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for problem in pool.map(lambda row: _mask_problem(row, label_names, ignore_index), rows):
            if problem:
                raise DataError(problem)


def _mask_problem(row: MaskRow, label_names: Sequence[str], ignore_index: int) -> str | None:
    import numpy as np

    try:
        values = read_mask(row.mask)
        size = displayed_size(row.path)
    except DataError as exc:
        return str(exc)
    except Exception as exc:  # Pillow raises many types for broken files
        return f"{row.mask}: cannot read the mask or its image ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
    if (values.shape[1], values.shape[0]) != size:
        return (f"{row.mask}: mask is {values.shape[1]}x{values.shape[0]} pixels but its image {row.path} is "
                f"{size[0]}x{size[1]}; a mask must cover its image pixel for pixel")
    bad = [int(v) for v in np.unique(values) if not (0 <= v < len(label_names)) and v != ignore_index]
    if bad:
        return (f"{row.mask}: value {bad[0]} is neither a class (0-{len(label_names) - 1}: "
                f"{_shown(label_names)}) nor data.ignore_index ({ignore_index})")
    return None


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:5])}, ... {names[-1]}"


def label_names(data: Any, train_root: Path | None) -> list[str]:
    """data.label_names, else data.labels_file, else labels.txt in the training folder."""
    if data.label_names:
        return [str(n) for n in data.label_names]
    source = Path(data.labels_file).expanduser() if data.labels_file else (
        train_root / LABELS_FILE if train_root is not None else None)
    if source is None or not source.is_file():
        if data.labels_file:
            raise DataError(f"data.labels_file: '{data.labels_file}' does not exist")
        raise DataError(f"data.label_names: segmentation needs its class names, the i-th for mask value i; give "
                        f"data.label_names=[background,...], data.labels_file=FILE or a {LABELS_FILE} (one name per "
                        f"line) in {train_root}")
    names = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{source}: no class names (one per line, the i-th for mask value i)")
    if len(set(names)) != len(names):
        raise DataError(f"{source}: class names repeat ({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
    return names


# Distinct colours for palette PNGs (Okabe-Ito, then tab10's): class 0 black, as VOC's
# palette draws its background; ignored pixels white. The pixel values stay class indices.
_COLOURS = [(0, 0, 0), (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
            (213, 94, 0), (204, 121, 167), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
            (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def palette(ignore_index: int | None = 255) -> list[int]:
    """A 256-entry palette (768 numbers) for mode-P mask PNGs; classes past the named
    colours get spread hues."""
    import colorsys

    flat = []
    for i in range(256):
        if i < len(_COLOURS):
            rgb = _COLOURS[i]
        else:
            r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.95)
            rgb = (int(r * 255), int(g * 255), int(b * 255))
        flat += list(rgb)
    if ignore_index is not None and 0 <= ignore_index < 256:
        flat[3 * ignore_index:3 * ignore_index + 3] = [255, 255, 255]
    return flat


def mask_image(values: Any, ignore_index: int | None = 255) -> Any:
    """A class-index array as a palette PNG image (mode P: values are the indices), or a
    16-bit greyscale one when an index does not fit in a byte."""
    import numpy as np
    from PIL import Image

    if values.size and int(values.max()) > 255:
        return Image.fromarray(np.asarray(values, dtype=np.uint16))
    height, width = values.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(values, dtype=np.uint8).tobytes())
    image.putpalette(palette(ignore_index))
    return image

"""Pictures of a segmentation model's work: for each of the first images of the evaluated
split, the image, its true mask and the predicted mask side by side, in the mask PNGs'
colours (fmctl.data.masks.palette), with a legend of the classes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

PANEL = 192          # pixels per side of each of the three panels
LEGEND_ROW = 14      # pixels per legend line


def write_overlays(folder: Path, rows: Sequence[Any], predicted: Sequence[Any], label_names: list[str],
                   ignore_index: int) -> list[Path]:
    """overlays/<stem>.png per row; `predicted` masks are at the model's input size and
    are drawn over the whole image (which the model saw squashed to that size)."""
    from PIL import Image

    from fmctl.data.images import open_image
    from fmctl.data.masks import mask_image, read_mask

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for row, pred in zip(rows, predicted):
        image = open_image(row.path, "RGB").resize((PANEL, PANEL), Image.Resampling.BILINEAR)
        truth = mask_image(read_mask(row.mask), ignore_index).convert("RGB")
        guess = mask_image(pred, ignore_index).convert("RGB")
        panels = [image] + [m.resize((PANEL, PANEL), Image.Resampling.NEAREST) for m in (truth, guess)]
        sheet = Image.new("RGB", (3 * PANEL + 8, PANEL + _legend_height(label_names)), (255, 255, 255))
        for i, panel in enumerate(panels):
            sheet.paste(panel, (i * (PANEL + 4), 0))
        _legend(sheet, label_names, ignore_index)
        path = folder / f"{Path(row.path).stem}.png"
        sheet.save(path)
        written.append(path)
    return written


def _legend_height(label_names: list[str]) -> int:
    return 8 + LEGEND_ROW * ((len(label_names) + 3) // 4 + 1)


def _legend(sheet: Any, label_names: list[str], ignore_index: int) -> None:
    from PIL import ImageDraw

    from fmctl.data.masks import palette

    colours = palette(ignore_index)
    draw = ImageDraw.Draw(sheet)
    top = PANEL + 4
    draw.text((4, top), "image | true mask | predicted mask", fill=(0, 0, 0))
    column = (sheet.width - 8) // 4
    for i, name in enumerate(label_names):
        x, y = 4 + (i % 4) * column, top + LEGEND_ROW * (i // 4 + 1)
        draw.rectangle((x, y + 2, x + 9, y + 11), fill=tuple(colours[3 * i:3 * i + 3]), outline=(90, 90, 90))
        draw.text((x + 13, y), name[:24], fill=(0, 0, 0))

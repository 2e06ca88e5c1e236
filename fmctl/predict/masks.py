"""Mask PNGs beside the predictions file: the output of a segmentation model.

Each record's mask (an array from fmctl.predict.decode.PixelMask) is written as
<folder>/<image stem>.png (a palette PNG whose pixel values are class indices; a stem
met twice gets its row number added) and the record keeps the file's path instead. The
folder is filled as <folder>.partial and renamed when every row is in, as predict does
with --out: an interrupted run leaves an earlier folder as it was.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from fmctl.errors import DataError


def masks_folder(masks: Path | None, out: Path | None) -> Path:
    """--masks, else <out's name without extensions>_masks beside --out; one of the two is
    needed (a mask is a picture, not a line of stdout). Checked before the model loads."""
    if masks is None:
        if out is None:
            raise DataError("--masks: a segmentation model writes a mask PNG per image; give --masks DIR "
                            "(or --out FILE, and the masks go to FILE's name + _masks/ beside it)")
        masks = Path(out).parent / f"{Path(out).name.split('.')[0]}_masks"
    masks = Path(masks)
    if masks.exists() and not masks.is_dir():
        raise DataError(f"--masks: {masks} is a file; give a folder")
    if not masks.parent.is_dir():
        raise DataError(f"--masks: folder {masks.parent} does not exist")
    return masks


class MaskFiles:
    def __init__(self, folder: Path, ignore_index: int | None = None):
        self.folder = Path(folder)
        self.partial = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self.ignore_index = ignore_index
        self.names: set[str] = set()

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record with its mask written and replaced by the PNG's path."""
        from fmctl.data.masks import mask_image

        if "mask" not in record or isinstance(record["mask"], str):
            return record
        name = f"{Path(record.get('image', 'mask')).stem}.png"
        if name in self.names:
            name = f"{Path(name).stem}-{record['row']}.png"
        self.names.add(name)
        mask_image(record["mask"], self.ignore_index).save(self.partial / name)
        return {**record, "mask": str(self.folder / name)}

    def close(self, complete: bool = True) -> None:
        """A complete folder takes the final name (replacing an earlier one)."""
        if not complete:
            return
        if self.folder.exists():
            old = self.folder.with_name(self.folder.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.folder, old)
            os.replace(self.partial, self.folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.partial, self.folder)

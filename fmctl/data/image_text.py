"""Image-caption pairs from a table (CSV, TSV, JSONL, Parquet; optionally .gz): an image
file per row in `data.image_column`, relative to the table's own folder (or absolute),
and its caption in `data.text_column`.

A row whose image is missing or does not decode is an error naming the table, the row
and the file, before anything trains; `data.drop_bad_images=true` drops such rows with
one warning that counts them instead. An empty caption or image cell is always an error:
a pair without its text (or picture) teaches nothing and hides a broken export.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl.config.schema import DataConfig
from fmctl.data.images import decode_problem, open_image
from fmctl.data.readers import cell_text, read_rows
from fmctl.errors import DataError


@dataclass
class PairRow:
    path: Path          # the image file, resolved
    text: str           # its caption
    line: int           # the row's line in the table, for messages
    source: Path        # the table
    label: Any = None   # read_splits' rows carry one; pairs have none


def read_image_text(path: Path, data: DataConfig, warnings: list[str] | None = None) -> list[PairRow]:
    """Every pair of the table, with each image checked (decoded, unless
    data.verify_images=false, then only found)."""
    columns = {"image": data.image_column, "text": data.text_column}
    rows = []
    for record in read_rows(path, columns, data.format):
        line = record["_line"]
        cell = cell_text(record["image"], path, line, data.image_column).strip()
        caption = cell_text(record["text"], path, line, data.text_column)
        if not cell:
            raise DataError(f"{path}:{line}: empty image path in column '{data.image_column}' (data.image_column)")
        if not caption.strip():
            raise DataError(f"{path}:{line}: empty caption in column '{data.text_column}' (data.text_column) for "
                            f"image '{cell}'; every pair needs its text")
        image = Path(cell).expanduser()
        rows.append(PairRow(image if image.is_absolute() else path.parent / image, caption, line, path))
    problems = _image_problems(rows, data.verify_images)
    if not problems:
        return rows
    if not data.drop_bad_images:
        row, problem = problems[0]
        more = f" ({len(problems) - 1} more rows like it)" if len(problems) > 1 else ""
        raise DataError(f"{path}:{row.line}: {problem}{more}; fix the file or the row, or set "
                        f"data.drop_bad_images=true to drop such rows")
    bad = {id(row) for row, _ in problems}
    kept = [row for row in rows if id(row) not in bad]
    if not kept:
        raise DataError(f"{path}: no row has a readable image (first: line {problems[0][0].line}: {problems[0][1]})")
    if warnings is not None:
        lines = ", ".join(str(row.line) for row, _ in problems[:5]) + (", ..." if len(problems) > 5 else "")
        warnings.append(f"{path}: dropped {len(problems)} of {len(rows)} rows whose image is missing or does not "
                        f"decode (data.drop_bad_images=true; lines {lines})")
    return kept


def _image_problems(rows: list[PairRow], decode: bool) -> list[tuple[PairRow, str]]:
    """(row, what is wrong with its image) for every bad row, in table order."""
    def check(row: PairRow) -> str | None:
        if not row.path.is_file():
            return f"image '{row.path}' not found (paths in the image column are relative to the table's folder)"
        return decode_problem(row.path) if decode else None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = list(pool.map(check, rows))
    return [(row, problem) for row, problem in zip(rows, found) if problem]


def caption_ids(rows: list[PairRow]) -> list[int]:
    """The index of each row's caption among the split's distinct captions (first seen
    first): rows that share a caption share an id, so a contrastive loss can keep them
    from being each other's negatives and retrieval can count either as a hit. Every rank
    of a distributed run reads the same rows, so ids agree across ranks."""
    index: dict[str, int] = {}
    return [index.setdefault(row.text, len(index)) for row in rows]


class PairDataset:
    """Images decoded lazily through the model's transform; captions tokenised up front."""

    def __init__(self, rows: list[PairRow], encoded: list[dict[str, list[int]]], in_chans: int):
        self.rows = rows
        self.encoded = encoded
        self.labels = caption_ids(rows)
        self.transform: Any = None
        self.mode = "L" if in_chans == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pixels = pixels_of(self.rows[index], self.transform, self.mode)
        return {"pixel_values": pixels, **self.encoded[index], "labels": self.labels[index]}


def pixels_of(row: PairRow, transform: Any, mode: str) -> Any:
    """A pair's image through the model's transform; a file that went bad after the
    up-front check is a one-line error naming the table's row and the file."""
    try:
        return transform(open_image(row.path, mode))
    except Exception as exc:  # Pillow raises many types for broken files
        raise DataError(f"{row.source}:{row.line}: cannot decode image {row.path} ({type(exc).__name__}: "
                        f"{exc})") from None


class PairCollator:
    """Stacked pixels, right-padded token ids with their attention mask, caption ids."""

    def __init__(self, pad_token_id: int, multiple_of: int = 1):
        from fmctl.data.text import PaddingCollator

        self.text = PaddingCollator(pad_token_id, multiple_of)
        self.multiple_of = multiple_of

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.text([{k: v for k, v in it.items() if k != "pixel_values"} for it in items])
        batch["pixel_values"] = torch.stack([it["pixel_values"] for it in items])
        return batch

"""Text examples: read from tables, tokenised once up front, padded per batch."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl.config.schema import DataConfig
from fmctl.data.labels import label_text
from fmctl.data.readers import cell_text, read_rows
from fmctl.errors import DataError


@dataclass
class TextRow:
    text: str
    pair: str | None
    label: Any            # a class name; a number (regression); a list of names (multi-label)
    line: int
    source: Path


def read_text_rows(path: Path, data: DataConfig, with_labels: bool = True,
                   parse_label: Callable[[Any, Path, int, str], Any] = label_text,
                   warnings: list[str] | None = None) -> list[TextRow]:
    """parse_label(value, path, line, column) turns a label cell into the task's target.

    An empty text trains (or is scored) on the label alone, so a text (or pair) column
    that is empty in every row is an error, and some empty rows are one warning counting
    them (appended to `warnings`; the rows are kept so evaluation scores every row).
    """
    columns = {"text": data.text_column, "text_pair": data.text_pair_column,
               "label": data.label_column if with_labels else None}
    rows = read_rows(path, columns, data.format)
    out = []
    for row in rows:
        line = row["_line"]
        label = parse_label(row["label"], path, line, data.label_column) if with_labels else None
        pair = cell_text(row.get("text_pair"), path, line, data.text_pair_column) if data.text_pair_column else None
        out.append(TextRow(cell_text(row["text"], path, line, data.text_column), pair, label, line, path))
    _check_empty(path, [r.text for r in out], [r.line for r in out], data.text_column, "data.text_column", warnings)
    if data.text_pair_column:
        _check_empty(path, [r.pair or "" for r in out], [r.line for r in out], data.text_pair_column,
                     "data.text_pair_column", warnings)
    return out


def _check_empty(path: Path, texts: list[str], lines: list[int], column: str, key: str,
                 warnings: list[str] | None) -> None:
    empty = [line for text, line in zip(texts, lines) if not text.strip()]
    if not empty:
        return
    if len(empty) == len(texts):
        raise DataError(f"{path}: column '{column}' is empty in every row; point {key} at the column that holds "
                        f"the text")
    if warnings is not None:
        shown = ", ".join(str(n) for n in empty[:5]) + (", ..." if len(empty) > 5 else "")
        warnings.append(f"{path}: {len(empty)} of {len(texts)} rows {'has' if len(empty) == 1 else 'have'} an empty text in column '{column}' "
                        f"(line{'s' if len(empty) > 1 else ''} {shown}); kept as empty inputs, drop or fill "
                        f"them if that is not intended")


def encode_rows(rows: list[TextRow], tokenizer: Any, max_length: int, chunk: int = 2048) -> list[dict[str, list[int]]]:
    """Tokenise in chunks with the fast tokenizer (its batch path runs in Rust threads)."""
    encoded: list[dict[str, list[int]]] = []
    has_pair = any(r.pair is not None for r in rows)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        texts = [r.text for r in part]
        pairs = [r.pair or "" for r in part] if has_pair else None
        batch = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "token_type_ids") if k in batch]
        for i in range(len(part)):
            encoded.append({k: batch[k][i] for k in keys})
    return encoded


class EncodedDataset:
    """A list of tokenised examples with their label ids (map-style torch dataset)."""

    def __init__(self, features: list[dict[str, list[int]]], labels: list[int] | None):
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.features[index])
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item

    def lengths(self) -> list[int]:
        return [len(f["input_ids"]) for f in self.features]


def pad_multiple(run: Any) -> int:
    """data.pad_to_multiple_of, or the device's better default."""
    if run.data.pad_to_multiple_of:
        return run.data.pad_to_multiple_of
    from fmctl.loop.precision import pick_device

    return 8 if pick_device(run.trainer.device) == "cuda" else 1


class PaddingCollator:
    """Pads each batch to its own longest sequence (rounded up to `multiple_of`: GPU
    matrix kernels prefer multiples of 8) and counts the real tokens for throughput."""

    def __init__(self, pad_token_id: int, multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.multiple_of = multiple_of

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(it["input_ids"]) for it in items)
        width = -(-longest // self.multiple_of) * self.multiple_of
        n = len(items)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        has_types = "token_type_ids" in items[0]
        types = torch.zeros((n, width), dtype=torch.long) if has_types else None
        real_tokens = 0
        for i, it in enumerate(items):
            ids = it["input_ids"]
            input_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, :len(ids)] = 1
            if has_types:
                types[i, :len(ids)] = torch.tensor(it["token_type_ids"], dtype=torch.long)
            real_tokens += len(ids)
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention}
        if has_types:
            batch["token_type_ids"] = types
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
        batch["num_tokens"] = real_tokens
        return batch

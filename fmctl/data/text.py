"""Text examples: read from tables, tokenised once up front, padded per batch."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl.config.schema import DataConfig
from fmctl.data.labels import label_text
from fmctl.data.readers import read_rows


@dataclass
class TextRow:
    text: str
    pair: str | None
    label: Any            # a class name; a number (regression); a list of names (multi-label)
    line: int
    source: Path


def read_text_rows(path: Path, data: DataConfig, with_labels: bool = True,
                   parse_label: Callable[[Any, Path, int, str], Any] = label_text) -> list[TextRow]:
    """parse_label(value, path, line, column) turns a label cell into the task's target."""
    columns = {"text": data.text_column, "text_pair": data.text_pair_column,
               "label": data.label_column if with_labels else None}
    rows = read_rows(path, columns, data.format)
    out = []
    for row in rows:
        label = parse_label(row["label"], path, row["_line"], data.label_column) if with_labels else None
        pair = _as_text(row.get("text_pair")) if data.text_pair_column else None
        out.append(TextRow(_as_text(row["text"]), pair, label, row["_line"], path))
    return out


def _as_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


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

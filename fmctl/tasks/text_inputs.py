"""What the text tasks share around the tokenizer and model/ metadata.

A run that trains gets its tokenizer from the backbone (or trains one on the training
texts) and cuts inputs at data.max_length; `fmctl eval` takes both back from model/, so
evaluation tokenises exactly as training did.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from fmctl.config.schema import RunConfig
from fmctl.data.sources import fingerprint


def tokenizer_for(run: RunConfig, model_dir: Path | None, training_texts: Callable[[], Iterable[str]],
                  split_words: bool = False) -> Any:
    """model/'s tokenizer, or the backbone's; split_words for tasks that feed pre-split
    words (see fmctl.models.text.prefix_split_words)."""
    from fmctl import backbones

    if model_dir:
        return backbones.of_folder(model_dir).preprocessor(run.backbone, folder=model_dir)
    tokenizer = backbones.family(run.backbone.name).preprocessor(run.backbone, training_texts=training_texts,
                                                                 split_words=split_words)
    # Saved with model/, so `tokenizer(text, truncation=True)` truncates as fmctl did.
    tokenizer.model_max_length = run.data.max_length
    return tokenizer


def training_texts(rows: Iterable[Any]) -> Iterator[str]:
    """Every text of single-text or text-pair rows, for training a tokenizer on them."""
    for row in rows:
        yield row.text
        if row.pair:
            yield row.pair


def fingerprints(paths: dict[str, Path | None]) -> dict[str, Any]:
    return {split: fingerprint(p) for split, p in paths.items() if p is not None}


def example_text(row: Any) -> dict[str, Any]:
    """A text row as predictions files show it."""
    out = {"text": row.text}
    if row.pair is not None:
        out["text_pair"] = row.pair
    return out


def mean_loss(total: float, count: int) -> dict[str, float]:
    return {"loss": total / count} if count else {}

"""`fmctl data prepare`'s settings: raw corpus -> cleaned, deduplicated, tokenised shards.
Apart from the run config because nothing else reads them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from fmctl.config.schema import bounded as _bounded


@dataclass
class CleanConfig:
    normalize: Literal["nfkc", "nfc", "none"] = "nfkc"
    strip_control: bool = True          # control characters other than newline and tab
    collapse_whitespace: bool = True    # runs of spaces/tabs to one space, 3+ newlines to 2
    min_chars: int = _bounded(20, ge=0)
    max_chars: Optional[int] = _bounded(200_000, ge=1)


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    # Documents whose word-shingle Jaccard similarity exceeds this are near-duplicates.
    threshold: float = _bounded(0.8, gt=0.0, lt=1.0)
    num_perm: int = _bounded(128, ge=16)
    shingle_words: int = _bounded(3, ge=1)


@dataclass
class CorpusTokenizerConfig:
    kind: Literal["wordpiece", "bpe"] = "wordpiece"
    vocab_size: int = _bounded(8000, ge=100)
    # An existing tokenizer folder to use instead of training one.
    path: Optional[str] = None


@dataclass
class PrepareConfig:
    input: list[str] = field(default_factory=list)   # files, folders or globs
    out: Optional[str] = None
    text_column: str = "text"                         # for .jsonl/.csv/.parquet inputs
    # .txt files: one document per line, or documents separated by blank lines.
    txt_mode: Literal["auto", "line", "paragraph"] = "auto"
    validation_fraction: float = _bounded(0.01, ge=0.0, lt=1.0)
    shard_tokens: int = _bounded(50_000_000, ge=1000)
    batch_docs: int = _bounded(1000, ge=1)
    workers: Optional[int] = _bounded(None, ge=1)     # processes for MinHash; null: all cores
    keep_text: bool = False                           # keep the cleaned documents (docs.jsonl)
    overwrite: bool = False
    clean: CleanConfig = field(default_factory=CleanConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenizer: CorpusTokenizerConfig = field(default_factory=CorpusTokenizerConfig)

"""Token shards: flat binary files of token ids (uint16 when the vocabulary fits, else
uint32), with document end offsets beside them, read back through np.memmap.

Every shard's length and BLAKE2 checksum (and its index's checksum) are recorded in
prepared.json, so a truncated, corrupted or missing shard or index is reported by name
before training instead of crashing deep inside it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl.errors import DataError


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 65536 else "uint32"


def file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardWriter:
    """Appends documents' tokens to <split>_NNNNN.bin, starting a new shard once one
    holds `shard_tokens` tokens (documents are never split across shards)."""

    def __init__(self, folder: Path, split: str, dtype: str, shard_tokens: int):
        self.folder, self.split, self.dtype, self.shard_tokens = folder, split, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._handle = None
        self._ends: list[int] = []
        self._tokens = 0

    def add(self, documents: list[list[int]]) -> None:
        import numpy as np

        for ids in documents:
            if self._handle is None or self._tokens >= self.shard_tokens:
                self._roll()
            self._handle.write(np.asarray(ids, dtype=self.dtype).tobytes())
            self._tokens += len(ids)
            self._ends.append(self._tokens)

    def _roll(self) -> None:
        self._finish()
        name = f"{self.split}_{len(self.shards):05d}"
        self._handle = open(self.folder / f"{name}.bin", "wb")
        self.shards.append({"name": name, "split": self.split})
        self._ends, self._tokens = [], 0

    def _finish(self) -> None:
        import numpy as np

        if self._handle is None:
            return
        self._handle.close()
        shard = self.shards[-1]
        index = self.folder / f"{shard['name']}.idx.npy"
        np.save(index, np.asarray(self._ends, dtype=np.int64))
        path = self.folder / f"{shard['name']}.bin"
        shard.update(tokens=self._tokens, documents=len(self._ends), bytes=path.stat().st_size,
                     blake2b=file_digest(path), idx_blake2b=file_digest(index))
        self._handle = None

    def close(self) -> list[dict[str, Any]]:
        self._finish()
        return self.shards


@dataclass
class Shard:
    path: Path
    tokens: Any          # np.memmap of token ids
    doc_ends: Any        # np.ndarray of document end offsets


def open_shards(folder: Path, records: list[dict[str, Any]], dtype: str, verify: bool) -> list[Shard]:
    import numpy as np

    itemsize = np.dtype(dtype).itemsize
    shards = []
    for record in records:
        path = folder / f"{record['name']}.bin"
        if not path.is_file():
            raise DataError(f"{path}: shard missing; re-run fmctl data prepare")
        size = path.stat().st_size
        if size != record["bytes"] or size != record["tokens"] * itemsize:
            raise DataError(f"{path}: {size} bytes, expected {record['bytes']} ({record['tokens']} tokens); the shard "
                            f"is truncated or corrupt; re-run fmctl data prepare")
        if verify and file_digest(path) != record["blake2b"]:
            raise DataError(f"{path}: checksum mismatch; the shard is corrupt; re-run fmctl data prepare")
        ends = _document_ends(folder / f"{record['name']}.idx.npy", record, verify)
        tokens = np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)
        shards.append(Shard(path, tokens, ends))
    return shards


def _document_ends(path: Path, record: dict[str, Any], verify: bool) -> Any:
    """A shard's document end offsets, checked against its record: the checksum when
    verifying (prepared.json from before checksums of the index has none), and always
    that it is an integer array whose count and last offset match the shard."""
    import numpy as np

    if not path.is_file():
        raise DataError(f"{path}: document index missing; re-run fmctl data prepare")
    if verify and record.get("idx_blake2b") and file_digest(path) != record["idx_blake2b"]:
        raise DataError(f"{path}: checksum mismatch; the document index is corrupt; re-run fmctl data prepare")
    try:
        ends = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())[:80]
        raise DataError(f"{path}: not a readable document index ({reason}); re-run fmctl data prepare") from None
    expected = record.get("documents")
    if not isinstance(ends, np.ndarray):
        raise DataError(f"{path}: not a readable document index (not one array); re-run fmctl data prepare")
    if (ends.ndim != 1 or ends.dtype.kind not in "iu" or (expected is not None and len(ends) != expected)
            or (len(ends) and int(ends[-1]) != record["tokens"])):
        raise DataError(f"{path}: document index does not match the shard ({len(ends)} entries, expected "
                        f"{expected} ending at token {record['tokens']}); re-run fmctl data prepare")
    return ends

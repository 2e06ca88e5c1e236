"""Token shards: flat binary files of token ids (uint16 when the vocabulary fits, else
uint32), with document end offsets beside them, read back through np.memmap.

Every shard's length and BLAKE2 checksum are recorded in prepared.json, so a truncated or
corrupted shard is reported by name before training instead of crashing deep inside it.
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
        np.save(self.folder / f"{shard['name']}.idx.npy", np.asarray(self._ends, dtype=np.int64))
        path = self.folder / f"{shard['name']}.bin"
        shard.update(tokens=self._tokens, documents=len(self._ends), bytes=path.stat().st_size,
                     blake2b=file_digest(path))
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
        ends = np.load(folder / f"{record['name']}.idx.npy")
        tokens = np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)
        shards.append(Shard(path, tokens, ends))
    return shards

"""Exact and near-duplicate removal.

Exact: a 128-bit hash of the cleaned, case-folded text. Near: MinHash signatures of word
shingles indexed in an LSH table (datasketch); a document is dropped when the index
already holds one above the Jaccard threshold. Signatures are computed in worker
processes in order, so the result does not depend on the number of workers.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from fmctl.config.prepare_schema import DedupConfig


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(" ".join(text.casefold().split()).encode("utf-8"), digest_size=16).digest()


def _shingles(text: str, n: int) -> list[bytes]:
    words = text.casefold().split()
    if len(words) <= n:
        return [" ".join(words).encode("utf-8")]
    return list({" ".join(words[i:i + n]).encode("utf-8") for i in range(len(words) - n + 1)})


def _signatures(args: tuple[list[str], int, int]) -> list[Any]:
    import zlib

    from datasketch import LeanMinHash, MinHash

    texts, num_perm, n = args
    # crc32 (C) instead of datasketch's default sha1 (Python per shingle): twice as fast, stable.
    minhashes = MinHash.bulk([_shingles(t, n) for t in texts], num_perm=num_perm, seed=1, hashfunc=zlib.crc32)
    return [LeanMinHash(m) for m in minhashes]


class Deduplicator:
    def __init__(self, cfg: DedupConfig, workers: int):
        self.cfg = cfg
        self.workers = workers
        self.seen: set[bytes] = set()
        self.removed_exact = 0
        self.removed_near = 0
        self.lsh = None
        if cfg.near:
            from datasketch import MinHashLSH

            self.lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
        self._next_id = 0

    def filter(self, batches: Iterable[list[str]]) -> Iterator[list[str]]:
        """Yield each batch with its duplicates removed (first occurrence kept)."""
        pool = None
        if self.lsh is not None and self.workers > 1:
            import multiprocessing

            pool = multiprocessing.get_context("spawn").Pool(self.workers)
        try:
            exact = map(self._drop_exact, batches)
            if self.lsh is None:
                yield from exact
                return
            pending = ((batch, (batch, self.cfg.num_perm, self.cfg.shingle_words)) for batch in exact)
            pairs = _paired(pending, pool, ahead=2 * self.workers)
            for batch, signatures in pairs:
                yield self._drop_near(batch, signatures)
        finally:
            if pool is not None:
                pool.terminate()

    def _drop_exact(self, batch: list[str]) -> list[str]:
        if not self.cfg.exact:
            return batch
        kept = []
        for text in batch:
            key = exact_key(text)
            if key in self.seen:
                self.removed_exact += 1
                continue
            self.seen.add(key)
            kept.append(text)
        return kept

    def _drop_near(self, batch: list[str], signatures: list[Any]) -> list[str]:
        kept = []
        for text, signature in zip(batch, signatures):
            if self.lsh.query(signature):
                self.removed_near += 1
                continue
            self.lsh.insert(str(self._next_id), signature)
            self._next_id += 1
            kept.append(text)
        return kept


def _paired(pending: Iterator[tuple[list[str], Any]], pool: Any, ahead: int = 4) -> Iterator[tuple[list[str], list[Any]]]:
    """(batch, signatures) in input order, with signatures computed ahead in the pool."""
    if pool is None:
        for batch, args in pending:
            yield batch, _signatures(args)
        return
    import collections

    window: collections.deque = collections.deque()
    for batch, args in pending:
        window.append((batch, pool.apply_async(_signatures, (args,))))
        if len(window) > ahead:
            done_batch, result = window.popleft()
            yield done_batch, result.get()
    while window:
        done_batch, result = window.popleft()
        yield done_batch, result.get()

"""Deterministic data order: epoch e is a permutation drawn from (seed, e) alone.

Because the order of any epoch can be recomputed, a run can later resume mid-epoch and
data-parallel ranks can take interleaved slices of the same global order: rank r takes
positions r, r+W, r+2W, ..., so the union of the ranks' k-th batches of size B is exactly
the k-th global batch of size B*W. Every rank gets the same number of examples (the last
size % W of an epoch's order are left out) so no rank waits for another at the end.

With `lengths`, the order is length-grouped: the epoch's permutation is cut into windows
of `bucket_batches` global batches, each window is sorted by length and cut into global
batches, and the batches are shuffled. Batches then hold similar lengths (little padding)
while which examples meet, and when, still changes every epoch.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class EpochSampler:
    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 lengths: list[int] | None = None, batch_size: int = 1, bucket_batches: int = 50):
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.lengths = lengths
        self.global_batch = batch_size * world_size
        self.bucket_batches = bucket_batches
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch `epoch` from position `start` of this rank's slice (a resumed run)."""
        self.epoch = epoch
        self.start = start

    def order(self, epoch: int) -> list[int]:
        import torch

        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.lengths is None:
            return order
        window = self.global_batch * self.bucket_batches
        batches = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start:start + window], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + self.global_batch] for i in range(0, len(chunk), self.global_batch)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [index for b in shuffled for index in batches[b]]

    @property
    def per_rank(self) -> int:
        return self.size // self.world_size

    def __iter__(self) -> Iterator[int]:
        """This rank's slice of the epoch's order, from position `start` of the slice."""
        usable = self.per_rank * self.world_size
        return iter(self.order(self.epoch)[:usable][self.rank::self.world_size][self.start:])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

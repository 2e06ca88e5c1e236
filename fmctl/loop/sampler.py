"""Deterministic data order: epoch e is a permutation drawn from (seed, e) alone.

Because the order of any epoch can be recomputed, a run can later resume mid-epoch and
data-parallel ranks can take interleaved slices of the same global order: rank r takes
positions r, r+W, r+2W, ..., so the union of the ranks' k-th batches of size B is exactly
the k-th global batch of size B*W. Every rank gets the same number of examples (the last
size % W of an epoch's order are left out) so no rank waits for another at the end.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class EpochSampler:
    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
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
        return torch.randperm(self.size, generator=generator).tolist()

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

"""Deterministic data order: epoch e is a permutation drawn from (seed, e) alone.

Because the order of any epoch can be recomputed, a run can later resume mid-epoch and
data-parallel ranks can take interleaved slices of the same global order.
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
        """Iterate epoch `epoch` from position `start` of its order (a resumed run)."""
        self.epoch = epoch
        self.start = start

    def order(self, epoch: int) -> list[int]:
        import torch

        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch)[self.start:][self.rank::self.world_size])

    def __len__(self) -> int:
        return len(range(self.rank, max(0, self.size - self.start), self.world_size))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

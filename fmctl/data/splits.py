"""Deterministic validation splits and subsets.

Both depend only on data.split_seed and the number of rows, never on the training seed,
so runs that differ only in trainer.seed are scored on the same examples.
"""
from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")


def split_off(items: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(rest, held_out): a random `fraction` of items held out, both in original order."""
    count = len(items)
    held = max(1, round(count * fraction)) if count > 1 else 0
    chosen = set(random.Random(seed).sample(range(count), held))
    rest = [x for i, x in enumerate(items) if i not in chosen]
    held_out = [x for i, x in enumerate(items) if i in chosen]
    return rest, held_out


def subset(items: Sequence[T], limit: int | None, seed: int) -> list[T]:
    """A random `limit` items (original order kept); files are often sorted by label,
    so taking the head would give a one-class subset."""
    if limit is None or limit >= len(items):
        return list(items)
    chosen = set(random.Random(seed + 1).sample(range(len(items)), limit))
    return [x for i, x in enumerate(items) if i in chosen]

"""A label budget: the training examples a run may use, drawn per class, nested and seeded.

Why these three properties: a learning curve compares starts at 50, 200, 1000 labels, so
every class must be represented at every budget (drawn per class, in proportion to its
share of the training data, at least one each), the 200 examples must include the 50
(nested: a curve measures more labels, not other labels), and two seeds must draw two
samples that a third run can reproduce. One seeded order of all rows gives all three: a
budget of B keeps the first B rows of that order.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from fmctl.errors import DataError

T = TypeVar("T")


def budget_order(labels: Sequence[Hashable | None], seed: int) -> list[int]:
    """Row indices in the order a budget takes them. Within a class the order is a seeded
    shuffle; across classes the r-th row of a class of n rows comes at (r + 0.5) / n (so
    every prefix holds each class in proportion), and each class's first row comes before
    any second one. Rows without a single hashable label (regression, label sets) form one
    group, so the order is a plain seeded shuffle."""
    rng = random.Random(seed)
    groups: dict[Any, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label if _single(label) else None, []).append(index)
    keyed = []
    for g, (label, members) in enumerate(sorted(groups.items(), key=lambda item: str(item[0]))):
        rng.shuffle(members)
        n = len(members)
        keyed += [(0 if r == 0 else 1, (r + 0.5) / n, g, index) for r, index in enumerate(members)]
    return [index for *_, index in sorted(keyed)]


def apply_budget(rows: Sequence[T], budget: int | None, seed: int, label_of: Callable[[T], Any],
                 warnings: list[str] | None = None, where: str = "data.train") -> list[T]:
    """The first `budget` rows of budget_order, in their original order. A budget at or
    above the number of rows keeps them all (a warning says so)."""
    if budget is None:
        return list(rows)
    if budget >= len(rows):
        if warnings is not None and budget > len(rows):
            warnings.append(f"data.label_budget: {budget} is more than the {len(rows)} training examples of "
                            f"{where}; using all {len(rows)}")
        return list(rows)
    labels = [label_of(row) for row in rows]
    classes = {label for label in labels if _single(label)}
    if classes and budget < len(classes):
        raise DataError(f"data.label_budget: {budget} labels cannot cover the {len(classes)} classes of {where}; "
                        f"give at least {len(classes)}")
    kept = sorted(budget_order(labels, seed)[:budget])
    return [rows[i] for i in kept]


def _single(label: Any) -> bool:
    return isinstance(label, (str, int)) and not isinstance(label, bool)

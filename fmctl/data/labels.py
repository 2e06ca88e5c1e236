"""Label vocabularies: taken from the training data, checked against the other splits."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fmctl.errors import DataError


def label_text(value: object, path: object, line: int, column: str) -> str:
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{path}:{line}: empty label in column '{column}'")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def label_names_from(labels: Iterable[str]) -> list[str]:
    """Sorted label names; numerically when every label is an integer ('2' before '10')."""
    names = sorted(set(labels))
    if all(_is_int(n) for n in names):
        names.sort(key=int)
    return names


def check_known(labels: Iterable[tuple[str, str]], known: list[str]) -> None:
    """labels: (label, where) pairs, where is 'file:line' or an image path."""
    known_set = set(known)
    for label, where in labels:
        if label not in known_set:
            raise DataError(f"{where}: label '{label}' never appears in the training data "
                            f"(training labels: {', '.join(known[:20])})")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def number_label(value: object, path: object, line: int, column: str) -> float:
    """A regression target: a number, or text that reads as one."""
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{path}:{line}: empty label in column '{column}'")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        number = float(str(value).strip())
    except ValueError:
        raise DataError(f"{path}:{line}: label '{value}' in column '{column}' is not a number; regression needs "
                        f"numeric labels") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise DataError(f"{path}:{line}: label '{value}' in column '{column}' is not a finite number")
    return number


def label_list(value: Any, path: object, line: int, column: str, separator: str) -> list[str]:
    """Multi-label targets: a list (JSONL, Parquet) or one string split on `separator`
    (CSV, TSV). An empty cell or list means no label applies. Order and repeats are dropped."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        items = value.split(separator) if separator else [value]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [value]
    else:
        raise DataError(f"{path}:{line}: labels in column '{column}' must be a list or a '{separator}'-separated "
                        f"string, got {type(value).__name__}")
    labels = []
    for item in items:
        if isinstance(item, (list, dict)) or item is None:
            raise DataError(f"{path}:{line}: labels in column '{column}' must be a flat list of names")
        if isinstance(item, float) and item.is_integer():
            item = int(item)
        text = str(item).strip()
        if text and text not in labels:
            labels.append(text)
    return sorted(labels)

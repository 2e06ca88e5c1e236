"""Label vocabularies: taken from the training data, checked against the other splits."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fmctl.data.readers import value_kind
from fmctl.errors import DataError

# "4.0": how pandas writes an integer column that had a missing value (it becomes float).
_INTEGRAL_DECIMAL = re.compile(r"[+-]?\d+\.0+")


def label_text(value: object, path: object, line: int, column: str) -> str:
    """A class name. Integral numbers read the same from every format (JSON 4.0, CSV "4.0"
    and "4" are all '4'), so splits written by different tools agree and sort numerically."""
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{path}:{line}: empty label in column '{column}'")
    if hasattr(value, "tolist"):  # numpy values from Parquet
        value = value.tolist()
    kind = value_kind(value) if not isinstance(value, bool) else None  # true/false are fine class names
    if kind:
        raise DataError(f"{path}:{line}: column '{column}' holds {kind}, not a label"
                        f"{'; for several labels per text use task=multilabel_classification' if kind == 'a list' else ''}")
    return normalise_label(value)


def normalise_label(value: object) -> str:
    """The spelling a label is stored under: stripped, integral numbers without '.0'."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if _INTEGRAL_DECIMAL.fullmatch(text):
        text = str(int(float(text)))
    return text


def align_to_saved(labels: Iterable[str], known: list[str]) -> dict[str, str]:
    """label -> the saved model's spelling of it, for labels a model trained before the
    '4.0' -> '4' normalisation saved as '4.0' (only labels that are not already known)."""
    saved = {normalise_label(name): name for name in known}
    known_set = set(known)
    return {label: saved[label] for label in set(labels) if label not in known_set and label in saved}


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
    if value_kind(value):
        raise DataError(f"{path}:{line}: column '{column}' holds {value_kind(value)}, not a number")
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
        text = normalise_label(item)
        if text and text not in labels:
            labels.append(text)
    return sorted(labels)

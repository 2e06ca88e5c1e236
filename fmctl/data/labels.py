"""Label vocabularies: taken from the training data, checked against the other splits."""
from __future__ import annotations

from collections.abc import Iterable

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

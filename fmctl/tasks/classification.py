"""What text and image classification share: splits, labels, loss, metrics and the
evaluation hooks of a softmax classifier (calibration, raw rows for label budgets).

Metrics come from scikit-learn on the collected predictions, never from hand-written
formulas, so they match what users compute themselves (classification_metrics.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence, TypeVar

from fmctl.config.schema import DataConfig, bounded
from fmctl.data.budget import apply_budget
from fmctl.data.labels import align_to_saved, check_known, label_names_from
from fmctl.data.splits import split_off, subset
from fmctl.errors import DataError
from fmctl.tasks.base import Task
from fmctl.tasks.classification_metrics import DENSE_MATRIX_CLASSES, TOP_PROBABILITIES, ClassificationMetrics

__all__ = ["DENSE_MATRIX_CLASSES", "TOP_PROBABILITIES", "ClassificationMetrics", "ClassificationTaskConfig",
           "SoftmaxClassifier", "cross_entropy", "label_ids", "label_vocabulary", "read_splits"]

Row = TypeVar("Row")


@dataclass
class ClassificationTaskConfig:
    name: Literal["text_classification", "image_classification"] = "text_classification"
    label_smoothing: float = bounded(0.0, ge=0.0, lt=1.0)


def read_splits(data: DataConfig, split_paths: dict[str, Path | None], read: Callable[[Path], list[Row]],
                wanted: Sequence[str], warnings: list[str] | None = None) -> dict[str, list[Row]]:
    """Rows for the wanted splits. Validation comes from its own file or, failing that,
    from a deterministic hold-out of train; test only from its own file. Training rows
    are cut to data.max_train_examples, then to data.label_budget (fmctl.data.budget)."""
    rows: dict[str, list[Row]] = {}
    need_train = "train" in wanted or ("validation" in wanted and split_paths.get("validation") is None)
    if need_train:
        if split_paths.get("train") is None:
            raise DataError("data.train: no training data given")
        train = read(split_paths["train"])
        if split_paths.get("validation") is None:
            if len(train) < 2:
                raise DataError(f"{split_paths['train']}: {len(train)} example(s) cannot be split into train and "
                                f"validation; add rows or give data.validation")
            train, held = split_off(train, data.validation_fraction, data.split_seed)
            rows["validation"] = held
        rows["train"] = train
    if "validation" in wanted and split_paths.get("validation") is not None:
        rows["validation"] = read(split_paths["validation"])
    if "test" in wanted and split_paths.get("test") is not None:
        rows["test"] = read(split_paths["test"])
    if "train" in rows:
        rows["train"] = subset(rows["train"], data.max_train_examples, data.split_seed)
        rows["train"] = apply_budget(rows["train"], data.label_budget, data.label_budget_seed,
                                     lambda r: getattr(r, "label", None), warnings, str(split_paths["train"]))
    for split in ("validation", "test"):
        if split in rows:
            rows[split] = subset(rows[split], data.max_eval_examples, data.split_seed)
    return {k: v for k, v in rows.items() if k in wanted}


def label_vocabulary(rows: dict[str, list[Any]], known: list[str] | None, paths: dict[str, Path | None],
                     data: DataConfig | None = None) -> list[str]:
    """Label names from the training rows (or a saved model's), checked on the other splits.
    `data` lets the messages say when the automatic validation hold-out is to blame."""
    if known is not None:
        names = known
        aligned = align_to_saved((r.label for split_rows in rows.values() for r in split_rows
                                  if r.label is not None), known)
        for split_rows in rows.values():
            for r in split_rows:
                if r.label in aligned:
                    r.label = aligned[r.label]
    else:
        names = label_names_from(r.label for r in rows["train"])
    if known is None and len(names) < 2:
        taken = sorted({r.label for r in rows.get("validation", [])} - set(names)) if _held_out(rows, paths, data) else []
        if taken:
            raise DataError(f"{paths['train']}: only one label ('{names[0]}') left for training: "
                            f"{_hold_out_phrase(data)} took every example of {', '.join(repr(t) for t in taken)}; "
                            f"give data.validation=FILE or add more rows")
        raise DataError(f"{paths['train']}: only one label ('{names[0]}') in the training data; "
                        f"classification needs at least two")
    check_labels(rows, names, paths, data if known is None else None,
                 lambda r: [(r.label, row_location(r))] if r.label is not None else [])
    return names


def check_labels(rows: dict[str, list[Any]], names: list[str], paths: dict[str, Path | None],
                 data: DataConfig | None, labels_of: Callable[[Any], Iterable[tuple[str, str]]]) -> None:
    """Every split's labels are among `names`. A validation label that training lacks
    because the automatic hold-out took all its rows gets its own message: the user gave
    one file, so 'never appears in the training data' would send them looking in vain."""
    held_out = _held_out(rows, paths, data)
    for split, split_rows in rows.items():
        if split == "validation" and held_out:
            known = set(names)
            missing: dict[str, list[str]] = {}
            for r in split_rows:
                for label, where in labels_of(r):
                    if label not in known:
                        missing.setdefault(label, []).append(where)
            if missing:
                label, places = next(iter(missing.items()))
                count = f"{len(places)} row{'s' if len(places) > 1 else ''}"
                raise DataError(f"{places[0]}: {_hold_out_phrase(data)} took every example of label '{label}' "
                                f"({count}), leaving none to train on; give data.validation=FILE or add more rows "
                                f"of that label")
        check_known((pair for r in split_rows for pair in labels_of(r)), names)


def _held_out(rows: dict[str, list[Any]], paths: dict[str, Path | None], data: DataConfig | None) -> bool:
    """Whether rows['validation'] is read_splits' hold-out of the training file."""
    return data is not None and "validation" in rows and paths.get("validation") is None


def _hold_out_phrase(data: DataConfig) -> str:
    subset_note = (f" (with data.max_train_examples={data.max_train_examples} keeping a subset of the rest)"
                   if data.max_train_examples is not None else "")
    return (f"the automatic validation hold-out (data.validation_fraction={data.validation_fraction}, "
            f"data.split_seed={data.split_seed}){subset_note}")


def row_location(row: Any) -> str:
    """'file:line' for table rows, the file itself for images."""
    if hasattr(row, "line"):
        return f"{row.source}:{row.line}"
    return str(row.path)


def label_ids(rows: list[Any], names: list[str]) -> list[int]:
    index = {n: i for i, n in enumerate(names)}
    return [index[r.label] for r in rows]


def cross_entropy(logits: Any, labels: Any, label_smoothing: float) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


class SoftmaxClassifier(Task):
    """The hooks text and image classification share: one logit per label, softmax.

    A subclass sets `label_names` in prepare and reads its rows in `read_rows`."""

    label_names: list[str]

    def new_metrics(self) -> ClassificationMetrics:
        return ClassificationMetrics(self.label_names)

    def eval_metrics(self, settings: Any, temperature: float | None) -> ClassificationMetrics:
        """Calibration counted in settings.calibration_bins bins; probabilities shown with
        the temperature model/ carries."""
        return ClassificationMetrics(self.label_names, temperature=temperature, bins=settings.calibration_bins)

    def temperature_fitter(self) -> Any:
        from fmctl.evaluate.calibration import TemperatureFit

        return TemperatureFit()

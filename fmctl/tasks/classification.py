"""What text and image classification share: splits, labels, loss and metrics.

Metrics come from scikit-learn on the collected predictions, never from hand-written
formulas, so they match what users compute themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence, TypeVar

from fmctl.config.schema import DataConfig, bounded
from fmctl.data.labels import align_to_saved, check_known, label_names_from
from fmctl.data.splits import split_off, subset
from fmctl.errors import DataError

Row = TypeVar("Row")


# Up to this many classes eval writes the dense confusion matrix, its picture and every
# class's probability per prediction; above it the non-zero cells and the top classes.
DENSE_MATRIX_CLASSES = 100
TOP_PROBABILITIES = 10
# eval's top-k accuracy (the gold label among the k likeliest), reported above k classes.
TOP_K = 5


@dataclass
class ClassificationTaskConfig:
    name: Literal["text_classification", "image_classification"] = "text_classification"
    label_smoothing: float = bounded(0.0, ge=0.0, lt=1.0)


def read_splits(data: DataConfig, split_paths: dict[str, Path | None], read: Callable[[Path], list[Row]],
                wanted: Sequence[str]) -> dict[str, list[Row]]:
    """Rows for the wanted splits. Validation comes from its own file or, failing that,
    from a deterministic hold-out of train; test only from its own file."""
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


class ClassificationMetrics:
    """Accumulates predictions over an evaluation pass; one host copy per batch."""

    def __init__(self, label_names: list[str]):
        self.label_names = label_names
        self.preds: list[Any] = []
        self.labels: list[Any] = []
        self.probs: list[Any] = []
        self.loss_sum = 0.0
        self.count = 0

    def update(self, logits: Any, batch: dict[str, Any], loss: Any) -> None:
        probs = logits.float().softmax(-1).cpu()
        self.probs.append(probs)
        self.preds.append(probs.argmax(-1))
        if "labels" in batch:
            n = batch["labels"].shape[0]
            self.labels.append(batch["labels"].cpu())
            if loss is not None:
                self.loss_sum += float(loss) * n
                self.count += n

    def arrays(self) -> tuple[Any, Any, Any]:
        import torch

        preds = torch.cat(self.preds).numpy() if self.preds else None
        labels = torch.cat(self.labels).numpy() if self.labels else None
        probs = torch.cat(self.probs).numpy() if self.probs else None
        return preds, labels, probs

    def compute(self) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        preds, labels, _ = self.arrays()
        if labels is None:
            return {}
        out = {
            "accuracy": float(accuracy_score(labels, preds)),
            # over the classes in the gold labels or the predictions (scikit-learn's default): a
            # class absent from both says nothing about this split, it is not an F1 of 0
            "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        }
        if self.count:
            out["loss"] = self.loss_sum / self.count
        return out

    def report(self) -> dict[str, Any]:
        """Flat headline metrics plus the per-class table and confusion matrix."""
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        preds, labels, _ = self.arrays()
        out: dict[str, Any] = dict(self.compute())
        ids = list(range(len(self.label_names)))
        precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
        out["weighted_f1"] = float(sum(f * s for f, s in zip(f1, support)) / max(1, sum(support)))
        if len(self.label_names) > TOP_K:  # with fewer classes the gold label is always among the top k
            top = self.arrays()[2].argsort(-1)[:, ::-1][:, :TOP_K]
            out[f"top{TOP_K}_accuracy"] = float((top == labels[:, None]).any(1).mean())
        out["num_examples"] = int(len(labels))
        out["per_class"] = {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(self.label_names)
        }
        if len(ids) <= DENSE_MATRIX_CLASSES:
            out["confusion_matrix"] = confusion_matrix(labels, preds, labels=ids).tolist()
        else:  # C x C numbers would not fit (50k classes: 18 GiB); the non-zero cells do
            import numpy as np

            cells, counts = np.unique(np.stack([labels, preds], axis=1), axis=0, return_counts=True)
            out["confusion_matrix"] = {"format": "sparse: [true index, predicted index, count] of the non-zero cells",
                                       "cells": [[int(t), int(p), int(c)] for (t, p), c in zip(cells, counts)]}
        return out

    def records(self, rows: list[Any], example_fields: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """One predictions.jsonl record per row: the example, gold label, prediction, probabilities."""
        preds, _, probs = self.arrays()
        for i, row in enumerate(rows):
            record = dict(example_fields(row))
            record["label"] = row.label
            record["prediction"] = self.label_names[int(preds[i])]
            if len(self.label_names) <= DENSE_MATRIX_CLASSES:
                record["probabilities"] = {name: round(float(p), 6) for name, p in zip(self.label_names, probs[i])}
            else:  # a dict of every class would make each line megabytes long
                top = probs[i].argsort()[::-1][:TOP_PROBABILITIES]
                record["probabilities"] = {self.label_names[int(k)]: round(float(probs[i][k]), 6) for k in top}
            yield record

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        """confusion_matrix.png up to DENSE_MATRIX_CLASSES classes; beyond that a picture of
        the matrix has no readable cell (and would take gigabytes to draw)."""
        from fmctl.evaluate.plots import confusion_matrix_png

        if isinstance(report["confusion_matrix"], list):
            confusion_matrix_png(report["confusion_matrix"], self.label_names, folder / "confusion_matrix.png")

    def tables(self, report: dict[str, Any]) -> list[Any]:
        from fmctl.report import per_class_table

        return [per_class_table(report["per_class"])]

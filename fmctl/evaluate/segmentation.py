"""Semantic-segmentation metrics: mean IoU, per-class IoU and pixel accuracy.

Every batch adds its pixels to a confusion matrix (rows: true class, columns: predicted
class) and is then dropped, so evaluating a large set keeps K x K counts, never its
logits. Ignored pixels (`data.ignore_index`) are left out of the matrix. IoU of a class is
TP / (TP + FP + FN); the mean is over the classes that occur in the labels or the
predictions (a class absent from both says nothing about this split: NaN, skipped, as
mmsegmentation's nanmean does). Pixel accuracy is the matrix's trace over its total.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterator

# Predicted masks kept for `fmctl eval`'s overlay pictures (the first ones of the split).
DEFAULT_OVERLAYS = 4


def confusion_matrices(preds: Any, labels: Any, num_classes: int, ignore_index: int) -> Any:
    """(batch, K, K) counts, one matrix per image, from one bincount over the batch (on
    the batch's device): index = (image * K + true) * K + predicted over valid pixels."""
    import torch

    batch, k = labels.shape[0], num_classes
    valid = (labels != ignore_index) & (labels >= 0) & (labels < k)
    image = torch.arange(batch, device=labels.device).view(-1, *([1] * (labels.dim() - 1))).expand_as(labels)
    index = (image * k + labels) * k + preds
    return torch.bincount(index[valid], minlength=batch * k * k).view(batch, k, k)


def iou(matrix: Any) -> list[float]:
    """Per-class IoU from a confusion matrix (NaN where the class is in neither labels nor predictions)."""
    import numpy as np

    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    return [float(t / u) if u > 0 else math.nan for t, u in zip(tp, union)]


def mean_iou(matrix: Any) -> float:
    present = [v for v in iou(matrix) if not math.isnan(v)]
    return sum(present) / len(present) if present else 0.0


def pixel_accuracy(matrix: Any) -> float:
    import numpy as np

    total = float(np.asarray(matrix).sum())
    return float(np.trace(np.asarray(matrix))) / total if total else 0.0


class SegmentationMetrics:
    def __init__(self, label_names: list[str], ignore_index: int, overlays: int = DEFAULT_OVERLAYS):
        import numpy as np

        self.label_names = label_names
        self.ignore_index = ignore_index
        self.matrix = np.zeros((len(label_names), len(label_names)), dtype=np.int64)
        self.per_image: list[tuple[float, float]] = []   # (pixel accuracy, mean IoU) per image
        self.kept: list[Any] = []                         # predicted masks for the overlays
        self.wanted = overlays
        self.loss_sum, self.count = 0.0, 0
        self.rows: list[Any] = []

    def update(self, logits: Any, batch: dict[str, Any], loss: Any) -> None:
        labels = batch["labels"]
        preds = logits.argmax(1)
        matrices = confusion_matrices(preds, labels, len(self.label_names), self.ignore_index).cpu().numpy()
        self.matrix += matrices.sum(0)
        self.per_image += [(pixel_accuracy(m), mean_iou(m)) for m in matrices]
        if len(self.kept) < self.wanted:
            self.kept += [p.to("cpu", dtype=labels.dtype).numpy() for p in preds[:self.wanted - len(self.kept)]]
        if loss is not None:
            self.loss_sum += float(loss) * labels.shape[0]
            self.count += labels.shape[0]

    def compute(self) -> dict[str, float]:
        if not self.per_image:
            return {}
        out = {"mean_iou": mean_iou(self.matrix), "pixel_accuracy": pixel_accuracy(self.matrix)}
        if self.count:
            out["loss"] = self.loss_sum / self.count
        return out

    def report(self) -> dict[str, Any]:
        """Headline figures, the per-class table and the confusion matrix (pixels)."""
        out: dict[str, Any] = dict(self.compute())
        out["num_examples"] = len(self.per_image)
        out["ignore_index"] = self.ignore_index
        ious = iou(self.matrix)
        out["per_class"] = {name: {"iou": None if math.isnan(ious[i]) else ious[i],
                                   "pixels": int(self.matrix[i].sum()), "predicted": int(self.matrix[:, i].sum()),
                                   "accuracy": float(self.matrix[i, i] / self.matrix[i].sum())
                                   if self.matrix[i].sum() else None}
                            for i, name in enumerate(self.label_names)}
        out["confusion_matrix"] = self.matrix.tolist()
        return out

    def records(self, rows: list[Any], example_fields: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """One record per image: its files and its own pixel accuracy and mean IoU. The rows
        are kept for the overlay pictures (write_files comes next)."""
        self.rows = list(rows)
        for row, (accuracy, miou) in zip(rows, self.per_image):
            yield {**example_fields(row), "pixel_accuracy": round(accuracy, 6), "mean_iou": round(miou, 6)}

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        """confusion_matrix.png, and overlays/: image | true mask | predicted mask for the
        first images of the split."""
        from fmctl.evaluate.overlays import write_overlays
        from fmctl.evaluate.plots import confusion_matrix_png

        confusion_matrix_png(report["confusion_matrix"], self.label_names, folder / "confusion_matrix.png")
        if self.rows and self.kept:
            write_overlays(folder / "overlays", self.rows[:len(self.kept)], self.kept, self.label_names,
                           self.ignore_index)

    def tables(self, report: dict[str, Any]) -> list[Any]:
        from rich.table import Table

        table = Table(title="per class", title_justify="left", min_width=14)
        for column in ("class", "IoU", "accuracy", "pixels", "predicted"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for name, row in report["per_class"].items():
            shown = ["-" if row[k] is None else f"{row[k]:.4f}" for k in ("iou", "accuracy")]
            table.add_row(name, *shown, f"{row['pixels']:,}", f"{row['predicted']:,}")
        return [table]

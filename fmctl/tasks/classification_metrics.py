"""Metrics of single-label classification (text and image): accuracy, macro-F1, the
per-class table and confusion matrix (scikit-learn), and for `fmctl eval` the
calibration error, the reliability diagram and the bootstrap statistics of accuracy.

Memory stays bounded in the number of classes: per example the predicted and the gold
class and the k likeliest probabilities (k = TOP_PROBABILITIES at most) are kept, never
the whole row of C probabilities; calibration is counted in bins as batches arrive.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

# Up to this many classes eval writes the dense confusion matrix and its picture; above
# it the non-zero cells.
DENSE_MATRIX_CLASSES = 100
# Probabilities kept per example (predictions.jsonl shows them): every class up to this
# many classes, else the likeliest ones.
TOP_PROBABILITIES = 10
# eval's top-k accuracy (the gold label among the k likeliest), reported above k classes
# (zero-shot classification among many prompts reads it).
TOP_K = 5


class ClassificationMetrics:
    """Accumulates predictions over an evaluation pass; one host copy per batch.

    `temperature`: the logits are divided by it for the probabilities shown (model/'s
    saved temperature, as predict serves them); `bins`: count calibration in that many
    equal-width confidence bins, before and (with a temperature) after scaling."""

    def __init__(self, label_names: list[str], temperature: float | None = None, bins: int | None = None):
        from fmctl.evaluate.calibration import ConfidenceBins

        self.label_names = label_names
        self.temperature = temperature
        self.k = max(1, min(len(label_names), TOP_PROBABILITIES))
        self.preds: list[Any] = []
        self.labels: list[Any] = []
        self.top_probs: list[Any] = []
        self.top_ids: list[Any] = []
        self.calibration = ConfidenceBins(bins) if bins else None
        self.scaled_calibration = ConfidenceBins(bins) if bins and temperature else None
        self.loss_sum = 0.0
        self.count = 0

    def update(self, logits: Any, batch: dict[str, Any], loss: Any) -> None:
        logits = logits.float()
        probs = logits.softmax(-1)
        shown = (logits / self.temperature).softmax(-1) if self.temperature else probs
        top = shown.topk(self.k, dim=-1)
        preds = top.indices[:, 0]  # the argmax: a temperature does not move it
        self.preds.append(preds.cpu())
        self.top_probs.append(top.values.cpu())
        self.top_ids.append(top.indices.int().cpu())
        if "labels" not in batch:
            return
        labels = batch["labels"]
        n = labels.shape[0]
        self.labels.append(labels.cpu())
        correct = (preds == labels).cpu().numpy()
        if self.calibration is not None:
            self.calibration.add(probs.max(-1).values.cpu().numpy(), correct)
        if self.scaled_calibration is not None:
            self.scaled_calibration.add(top.values[:, 0].cpu().numpy(), correct)
        if loss is not None:
            self.loss_sum += float(loss) * n
            self.count += n

    def arrays(self) -> tuple[Any, Any]:
        """(predicted class ids, gold class ids or None), one per example."""
        import torch

        preds = torch.cat(self.preds).numpy() if self.preds else None
        labels = torch.cat(self.labels).numpy() if self.labels else None
        return preds, labels

    def compute(self) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        preds, labels = self.arrays()
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
        """Flat headline metrics plus the per-class table, confusion matrix and calibration."""
        from sklearn.metrics import precision_recall_fscore_support

        preds, labels = self.arrays()
        out: dict[str, Any] = dict(self.compute())
        ids = list(range(len(self.label_names)))
        precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
        out["weighted_f1"] = float(sum(f * s for f, s in zip(f1, support)) / max(1, sum(support)))
        if len(self.label_names) > TOP_K:  # with fewer classes the gold label is always among the top k
            import torch

            top = torch.cat(self.top_ids).numpy()[:, :TOP_K]
            out[f"top{TOP_K}_accuracy"] = float((top == labels[:, None]).any(1).mean())
        out["num_examples"] = int(len(labels))
        out.update(self._calibration_report())
        out["per_class"] = {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(self.label_names)
        }
        out["confusion_matrix"] = _confusion(labels, preds, ids)
        return out

    def _calibration_report(self) -> dict[str, Any]:
        if self.calibration is None:
            return {}
        out: dict[str, Any] = {"ece": self.calibration.ece()}
        detail: dict[str, Any] = {"bins": self.calibration.bins, "ece": out["ece"],
                                  "reliability": self.calibration.table()}
        if self.scaled_calibration is not None:
            out["temperature"] = float(self.temperature)
            out["ece_temperature_scaled"] = self.scaled_calibration.ece()
            detail.update(temperature=out["temperature"], ece_temperature_scaled=out["ece_temperature_scaled"],
                          reliability_temperature_scaled=self.scaled_calibration.table())
        out["calibration"] = detail
        return out

    def bootstrap_statistics(self) -> Any:
        """Accuracy is the mean of per-example correctness."""
        from fmctl.evaluate.bootstrap import Statistics, mean

        preds, labels = self.arrays()
        if labels is None:
            return None
        return Statistics("accuracy", [(preds == labels).astype(float)], mean)

    def records(self, rows: list[Any], example_fields: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """One predictions.jsonl record per row: the example, gold label, prediction and
        probabilities (every class's in label order up to TOP_PROBABILITIES classes, else
        the likeliest first)."""
        import torch

        probs, ids = torch.cat(self.top_probs).numpy(), torch.cat(self.top_ids).numpy()
        every = len(self.label_names) <= TOP_PROBABILITIES
        for i, row in enumerate(rows):
            record = dict(example_fields(row))
            record["label"] = row.label
            record["prediction"] = self.label_names[int(ids[i][0])]
            pairs = sorted(zip(ids[i], probs[i])) if every else zip(ids[i], probs[i])
            record["probabilities"] = {self.label_names[int(k)]: round(float(p), 6) for k, p in pairs}
            yield record

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        """confusion_matrix.png up to DENSE_MATRIX_CLASSES classes (beyond that a picture of
        the matrix has no readable cell), and reliability.png when calibration was counted."""
        from fmctl.evaluate.plots import confusion_matrix_png

        if isinstance(report["confusion_matrix"], list):
            confusion_matrix_png(report["confusion_matrix"], self.label_names, folder / "confusion_matrix.png")
        if "calibration" in report:
            from fmctl.evaluate.calibration import reliability_png

            detail = report["calibration"]
            title = f"reliability: ECE {detail['ece']:.4f}" + (
                f" -> {detail['ece_temperature_scaled']:.4f}" if "ece_temperature_scaled" in detail else "")
            reliability_png(detail["reliability"], detail.get("reliability_temperature_scaled"),
                            detail.get("temperature"), folder / "reliability.png", title)

    def tables(self, report: dict[str, Any]) -> list[Any]:
        from fmctl.report import per_class_table

        return [per_class_table(report["per_class"])]


def _confusion(labels: Any, preds: Any, ids: list[int]) -> Any:
    """The dense matrix up to DENSE_MATRIX_CLASSES classes; above, its non-zero cells
    (50k classes would need 18 GiB dense)."""
    import numpy as np
    from sklearn.metrics import confusion_matrix

    if len(ids) <= DENSE_MATRIX_CLASSES:
        return confusion_matrix(labels, preds, labels=ids).tolist()
    cells, counts = np.unique(np.stack([labels, preds], axis=1), axis=0, return_counts=True)
    return {"format": "sparse: [true index, predicted index, count] of the non-zero cells",
            "cells": [[int(t), int(p), int(c)] for (t, p), c in zip(cells, counts)]}

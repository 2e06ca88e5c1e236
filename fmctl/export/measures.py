"""What "the export predicts the same" means, per task.

The parity check compares raw outputs (max abs/rel difference) for every task; on top of
that each task says what its prediction is and how agreement is counted, so a quantized
model is judged on what a user sees:

- `ArgmaxLabel`: one label per example (text/image classification);
- `TokenArgmax`: one tag per real token (attention mask 1), for token classification and
  the language-model heads of weights-only exports;
- `SpanMatch`: the best answer span per window (start <= end, at most max_answer_length
  tokens, context tokens only), agreement is an exact (start, end) match;
- `ThresholdSet`: the label set at the task's threshold (a logit at or above
  logit(threshold)), agreement is the whole set being equal;
- `PixelLabels`: the class of every pixel (argmax over the class axis), agreement counted
  over pixels, correctness over the pixels that are not the ignore index (segmentation);
- `NearestOfOther`: a two-tower encoder's embeddings, each the query of a search among
  PyTorch's embeddings of the other modality; agreement is the same nearest item, and the
  worst cosine with PyTorch's own embedding is reported;
- `SameSequence`: generated token ids (a captioner's), agreement is a whole row equal;
- regression has no measure: its outputs are compared by their difference only.

`correct` scores a prediction against the validation labels (the manifest's evaluation).
"""
from __future__ import annotations

import math
from typing import Any, Protocol

IGNORE = -100


class Measure(Protocol):
    name: str | None                   # what the agreement counts; None: difference only
    metric: str | None                 # what `correct` scores against gold labels

    def predict(self, outputs: list[Any], inputs: dict[str, Any]) -> Any: ...

    def agree(self, ref: Any, cand: Any, inputs: dict[str, Any]) -> tuple[int, int]: ...

    def correct(self, pred: Any, labels: Any, inputs: dict[str, Any]) -> tuple[int, int] | None: ...

    def figures(self) -> dict[str, float]: ...


class NoFigures:
    """A measure with nothing to report beyond agreement."""

    def figures(self) -> dict[str, float]:
        return {}


class ArgmaxLabel(NoFigures):
    name = "label"
    metric = "accuracy"

    def predict(self, outputs: list[Any], inputs: dict[str, Any]) -> Any:
        return outputs[0].argmax(-1)

    def agree(self, ref: Any, cand: Any, inputs: dict[str, Any]) -> tuple[int, int]:
        return int((ref == cand).sum()), int(ref.size)

    def correct(self, pred: Any, labels: Any, inputs: dict[str, Any]) -> tuple[int, int] | None:
        return (int((pred == labels).sum()), int(labels.size)) if labels.shape == pred.shape else None


class TokenArgmax(NoFigures):
    """Argmax per token, over the real tokens (attention mask 1; every position when the
    outputs are not over the masked sequence, as T5's decoder logits are not)."""

    name = "tag (real tokens)"
    metric = "token accuracy"

    def __init__(self, score: bool = True):
        self.score = score          # False: labels are not aligned with outputs (causal LM shift)
        if not score:
            self.name, self.metric = "argmax token (real tokens)", None

    def predict(self, outputs: list[Any], inputs: dict[str, Any]) -> Any:
        return outputs[0].argmax(-1)

    def agree(self, ref: Any, cand: Any, inputs: dict[str, Any]) -> tuple[int, int]:
        import numpy as np

        mask = inputs.get("attention_mask")
        mask = mask == 1 if mask is not None and mask.shape == ref.shape else np.ones(ref.shape, dtype=bool)
        return int(((ref == cand) & mask).sum()), int(mask.sum())

    def correct(self, pred: Any, labels: Any, inputs: dict[str, Any]) -> tuple[int, int] | None:
        if not self.score or labels.shape != pred.shape:
            return None
        scored = labels != IGNORE
        return int(((pred == labels) & scored).sum()), int(scored.sum())


class SpanMatch(NoFigures):
    name = "exact span"
    metric = "exact span match"

    def __init__(self, max_answer_length: int):
        self.max_answer_length = max_answer_length

    def predict(self, outputs: list[Any], inputs: dict[str, Any]) -> Any:
        """(start, end) token positions of the best span of each window."""
        import numpy as np

        start, end = outputs
        allowed = inputs["attention_mask"] == 1 if "attention_mask" in inputs else np.ones(start.shape, dtype=bool)
        if "token_type_ids" in inputs:
            allowed = allowed & (inputs["token_type_ids"] == 1)
        n = start.shape[1]
        i, j = np.arange(n)[:, None], np.arange(n)[None, :]
        valid = (j >= i) & (j - i < self.max_answer_length)
        spans = np.zeros((start.shape[0], 2), dtype=np.int64)
        for k in range(start.shape[0]):
            ok = valid & allowed[k][:, None] & allowed[k][None, :]
            if not ok.any():
                continue
            scores = np.where(ok, start[k][:, None] + end[k][None, :], -np.inf)
            spans[k] = np.unravel_index(int(scores.argmax()), scores.shape)
        return spans

    def agree(self, ref: Any, cand: Any, inputs: dict[str, Any]) -> tuple[int, int]:
        return int((ref == cand).all(-1).sum()), int(ref.shape[0])

    def correct(self, pred: Any, labels: Any, inputs: dict[str, Any]) -> tuple[int, int] | None:
        """Over the windows whose gold span lies inside them (the others point at [CLS], position 0)."""
        if labels.shape != pred.shape:
            return None
        has_span = labels[:, 0] > 0
        return int(((pred == labels).all(-1) & has_span).sum()), int(has_span.sum())


class ThresholdSet(NoFigures):
    name = "label set"
    metric = "subset accuracy"

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.logit = math.log(threshold / (1 - threshold))

    def predict(self, outputs: list[Any], inputs: dict[str, Any]) -> Any:
        return outputs[0] >= self.logit

    def agree(self, ref: Any, cand: Any, inputs: dict[str, Any]) -> tuple[int, int]:
        return int((ref == cand).all(-1).sum()), int(ref.shape[0])

    def correct(self, pred: Any, labels: Any, inputs: dict[str, Any]) -> tuple[int, int] | None:
        if labels.shape != pred.shape:
            return None
        return int((pred == (labels >= 0.5)).all(-1).sum()), int(pred.shape[0])


class PixelLabels(NoFigures):
    name = "pixel label"
    metric = "pixel accuracy"

    def __init__(self, ignore_index: int):
        self.ignore_index = ignore_index

    def predict(self, outputs: list[Any], inputs: dict[str, Any]) -> Any:
        return outputs[0].argmax(1)

    def agree(self, ref: Any, cand: Any, inputs: dict[str, Any]) -> tuple[int, int]:
        return int((ref == cand).sum()), int(ref.size)

    def correct(self, pred: Any, labels: Any, inputs: dict[str, Any]) -> tuple[int, int] | None:
        if labels.shape != pred.shape:
            return None
        scored = labels != self.ignore_index
        return int(((pred == labels) & scored).sum()), int(scored.sum())


class DifferenceOnly(NoFigures):
    """Regression: a number per example; nothing to agree on but the difference itself."""

    name = None
    metric = None

    def predict(self, outputs: list[Any], inputs: dict[str, Any]) -> Any:
        return None

    def agree(self, ref: Any, cand: Any, inputs: dict[str, Any]) -> tuple[int, int]:
        return 0, 0

    def correct(self, pred: Any, labels: Any, inputs: dict[str, Any]) -> tuple[int, int] | None:
        return None


class SameSequence(NoFigures):
    """Generated token ids, one row per example: agreement is the whole row being equal
    (the same caption), as a user reads it; no gold labels to score against."""

    name = "identical generated tokens"
    metric = None

    def predict(self, outputs: list[Any], inputs: dict[str, Any]) -> Any:
        return outputs[0]

    def agree(self, ref: Any, cand: Any, inputs: dict[str, Any]) -> tuple[int, int]:
        return int((ref == cand).all(axis=-1).sum()), int(ref.shape[0])

    def correct(self, pred: Any, labels: Any, inputs: dict[str, Any]) -> tuple[int, int] | None:
        return None


class NearestOfOther:
    """A two-tower encoder's embeddings as search queries: each row's nearest neighbour among
    `candidates` (PyTorch's normalised embeddings of the other modality for the same
    validation pairs) must be the same for the export as for PyTorch; `correct` is
    recall@1 against the pairs' caption ids. `figures` gives the lowest cosine between an
    export's embedding and PyTorch's, and how much of each top-5 list is kept."""

    metric = "recall@1"

    def __init__(self, candidates: Any, candidate_ids: Any, other: str):
        import numpy as np

        self.candidates = np.asarray(candidates, dtype=np.float64)
        self.ids = np.asarray(candidate_ids)
        self.name = f"nearest {other} among {len(self.candidates)}"
        self.min_cosine = 1.0
        self.overlap = [0, 0]

    def predict(self, outputs: list[Any], inputs: dict[str, Any]) -> Any:
        import numpy as np

        rows = np.asarray(outputs[0], dtype=np.float64)
        rows = rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)
        order = np.argsort(-(rows @ self.candidates.T), axis=1, kind="stable")[:, :5]
        return {"rows": rows, "top": order}

    def agree(self, ref: Any, cand: Any, inputs: dict[str, Any]) -> tuple[int, int]:
        cosine = (ref["rows"] * cand["rows"]).sum(-1)
        self.min_cosine = min(self.min_cosine, float(cosine.min()))
        for a, b in zip(ref["top"], cand["top"]):
            self.overlap[0] += len(set(a.tolist()) & set(b.tolist()))
            self.overlap[1] += len(a)
        return int((ref["top"][:, 0] == cand["top"][:, 0]).sum()), int(len(cosine))

    def correct(self, pred: Any, labels: Any, inputs: dict[str, Any]) -> tuple[int, int] | None:
        return int((self.ids[pred["top"][:, 0]] == labels).sum()), int(len(labels))

    def figures(self) -> dict[str, float]:
        return {"min_cosine": round(self.min_cosine, 8),
                "top5_overlap": round(self.overlap[0] / self.overlap[1], 6) if self.overlap[1] else 1.0}

"""Does the artefact compute what the PyTorch model computes, on real inputs?

Both are run on the same real validation batches (batch 1 first, then full batches of
varying sequence length) and compared: the largest absolute difference of the outputs,
the largest relative one, and how often the predictions agree (what a prediction is
depends on the task: a label, a tag per real token, an answer span, a label set at the
threshold; see measures.py). An export passes when the absolute difference stays within
`atol` (fp32) and the agreement reaches `min_agreement` (what matters for a quantized
model, whose outputs move by design).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from fmctl.errors import ExportError
from fmctl.export.measures import ArgmaxLabel, Measure

# Relative differences are taken against max(|reference|, this), so that a logit that
# happens to sit near zero does not turn a 1e-7 absolute difference into a huge ratio.
REL_FLOOR = 1e-3


@dataclass
class Parity:
    reference: str
    candidate: str
    examples: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    agreement: str | None = "label"               # what label_agreement counts (measures.py); None: diff only
    label_agreement: float | None = 1.0
    atol: float | None = None
    min_agreement: float | None = None
    passed: bool = False
    # What the measure adds beyond agreement (an embedding's worst cosine with PyTorch's).
    figures: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: (round(v, 10) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        if not self.figures:
            out.pop("figures")
        return out

    def summary(self) -> str:
        agreement = "" if self.label_agreement is None else \
            f", {self.agreement} agreement {self.label_agreement:.4f}"
        return (f"{self.candidate} vs {self.reference} on {self.examples} validation examples: "
                f"max abs diff {self.max_abs_diff:.3g}, max rel diff {self.max_rel_diff:.3g}{agreement}")


class Comparison:
    """Accumulates the comparison batch by batch, keeping only running maxima and counts.

    Outputs are lists of arrays (one per named model output); `measure` says what a
    prediction is for this task and how to count agreement and correctness."""

    def __init__(self, reference: str, candidate: str, measure: Measure | None = None):
        self.measure = measure if measure is not None else ArgmaxLabel()
        self.result = Parity(reference, candidate, agreement=self.measure.name)
        self._agree = [0, 0]
        self._correct = {"reference": [0, 0], "candidate": [0, 0]}

    def add(self, ref: Any, cand: Any, labels: Any | None = None, inputs: dict[str, Any] | None = None) -> None:
        import numpy as np

        refs = [np.asarray(r, dtype=np.float64) for r in _as_list(ref)]
        cands = [np.asarray(c, dtype=np.float64) for c in _as_list(cand)]
        if [r.shape for r in refs] != [c.shape for c in cands]:
            raise ExportError(f"export: {self.result.candidate} returned shapes {[tuple(c.shape) for c in cands]} "
                              f"where PyTorch returned {[tuple(r.shape) for r in refs]}")
        r = self.result
        for a, b in zip(refs, cands):
            diff = np.abs(a - b)
            if not np.all(np.isfinite(b)):
                diff = np.full_like(diff, np.inf)
            r.max_abs_diff = max(r.max_abs_diff, float(diff.max()))
            r.max_rel_diff = max(r.max_rel_diff, float((diff / np.maximum(np.abs(a), REL_FLOOR)).max()))
        inputs = {k: np.asarray(v) for k, v in (inputs or {}).items()}
        ref_pred = self.measure.predict(refs, inputs)
        cand_pred = self.measure.predict(cands, inputs)
        if ref_pred is not None:
            agree, units = self.measure.agree(ref_pred, cand_pred, inputs)
            self._agree[0] += agree
            self._agree[1] += units
            r.label_agreement = self._agree[0] / self._agree[1] if self._agree[1] else 1.0
        else:
            r.label_agreement = None
        if labels is not None and ref_pred is not None:
            labels = np.asarray(labels)
            for which, pred in (("reference", ref_pred), ("candidate", cand_pred)):
                scored = self.measure.correct(pred, labels, inputs)
                if scored is not None:
                    self._correct[which][0] += scored[0]
                    self._correct[which][1] += scored[1]
        r.examples += int(refs[0].shape[0])
        r.batches += 1
        if refs[0].shape[0] not in r.batch_sizes:
            r.batch_sizes.append(int(refs[0].shape[0]))

    def accuracy(self, which: str) -> float | None:
        """Validation score (the measure's `metric`) of the reference or the candidate, from the compared batches."""
        correct, total = self._correct[which]
        return correct / total if total else None

    def units(self, which: str) -> int:
        """How many units (examples, tokens, windows) the metric was scored over."""
        return self._correct[which][1]

    def finish(self, atol: float | None, min_agreement: float | None) -> Parity:
        r = self.result
        r.atol, r.min_agreement = atol, min_agreement
        r.figures = self.measure.figures()
        agreement_ok = min_agreement is None or (r.label_agreement is not None and r.label_agreement >= min_agreement)
        r.passed = r.examples > 0 and (atol is None or r.max_abs_diff <= atol) and agreement_ok
        return r


def _as_list(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def compare(batches: Iterable[Any], reference: Callable[[dict[str, Any]], Any],
            candidate: Callable[[dict[str, Any]], Any], names: tuple[str, str], atol: float | None,
            min_agreement: float | None, measure: Measure | None = None) -> tuple[Parity, Comparison]:
    """Run both on every batch (numpy outputs) and return the figures and the running comparison."""
    comparison = Comparison(*names, measure=measure)
    for batch in batches:
        comparison.add(reference(batch.inputs), candidate(batch.inputs),
                       None if batch.labels is None else batch.labels.numpy(), batch.inputs)
    return comparison.finish(atol, min_agreement), comparison


def require(parity: Parity) -> None:
    """Fail the export loudly when the figures are outside the tolerance."""
    if parity.examples == 0:
        raise ExportError("export: no validation examples to check the export against")
    if parity.passed:
        return
    why = []
    if parity.atol is not None and parity.max_abs_diff > parity.atol:
        why.append(f"max abs diff {parity.max_abs_diff:.3g} > atol {parity.atol:g}")
    if parity.min_agreement is not None and (parity.label_agreement or 0.0) < parity.min_agreement:
        why.append(f"{parity.agreement} agreement {parity.label_agreement or 0.0:.4f} < {parity.min_agreement:g}")
    raise ExportError(f"export: parity check failed for {parity.candidate} vs {parity.reference} on "
                      f"{parity.examples} validation examples ({'; '.join(why)}); nothing was written")

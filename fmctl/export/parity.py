"""Does the artefact compute what the PyTorch model computes, on real inputs?

Both are run on the same real validation batches (batch 1 first, then full batches of
varying sequence length) and compared: the largest absolute difference of the outputs,
the largest relative one, and how often the predicted labels agree. An export passes when
the absolute difference stays within `atol` (fp32) and the label agreement reaches
`min_agreement` (what matters for a quantized model, whose outputs move by design).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from fmctl.errors import ExportError

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
    label_agreement: float = 1.0
    atol: float | None = None
    min_agreement: float | None = None
    passed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 10) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def summary(self) -> str:
        return (f"{self.candidate} vs {self.reference} on {self.examples} validation examples: "
                f"max abs diff {self.max_abs_diff:.3g}, max rel diff {self.max_rel_diff:.3g}, "
                f"label agreement {self.label_agreement:.4f}")


class Comparison:
    """Accumulates the comparison batch by batch, keeping only running maxima and counts."""

    def __init__(self, reference: str, candidate: str):
        self.result = Parity(reference, candidate)
        self._agree = 0
        self.ref_preds: list[Any] = []
        self.cand_preds: list[Any] = []
        self.labels: list[Any] = []

    def add(self, ref: Any, cand: Any, labels: Any | None = None) -> None:
        import numpy as np

        ref = np.asarray(ref, dtype=np.float64)
        cand = np.asarray(cand, dtype=np.float64)
        if ref.shape != cand.shape:
            raise ExportError(f"export: {self.result.candidate} returned shape {tuple(cand.shape)} where PyTorch "
                              f"returned {tuple(ref.shape)}")
        diff = np.abs(ref - cand)
        if not np.all(np.isfinite(cand)):
            diff = np.full_like(diff, np.inf)
        r = self.result
        r.max_abs_diff = max(r.max_abs_diff, float(diff.max()))
        r.max_rel_diff = max(r.max_rel_diff, float((diff / np.maximum(np.abs(ref), REL_FLOOR)).max()))
        ref_pred, cand_pred = ref.argmax(-1), cand.argmax(-1)
        self._agree += int((ref_pred == cand_pred).sum())
        r.examples += int(ref.shape[0])
        r.batches += 1
        if ref.shape[0] not in r.batch_sizes:
            r.batch_sizes.append(int(ref.shape[0]))
        r.label_agreement = self._agree / r.examples
        self.ref_preds.append(ref_pred)
        self.cand_preds.append(cand_pred)
        if labels is not None:
            self.labels.append(np.asarray(labels))

    def accuracy(self, which: str) -> float | None:
        """Validation accuracy of the reference or the candidate, from the compared batches."""
        import numpy as np

        if not self.labels:
            return None
        preds = np.concatenate(self.ref_preds if which == "reference" else self.cand_preds)
        return float((preds == np.concatenate(self.labels)).mean())

    def finish(self, atol: float | None, min_agreement: float | None) -> Parity:
        r = self.result
        r.atol, r.min_agreement = atol, min_agreement
        r.passed = r.examples > 0 and (atol is None or r.max_abs_diff <= atol) and (
            min_agreement is None or r.label_agreement >= min_agreement)
        return r


def compare(batches: Iterable[Any], reference: Callable[[dict[str, Any]], Any],
            candidate: Callable[[dict[str, Any]], Any], names: tuple[str, str], atol: float | None,
            min_agreement: float | None) -> tuple[Parity, Comparison]:
    """Run both on every batch (numpy outputs) and return the figures and the running comparison."""
    comparison = Comparison(*names)
    for batch in batches:
        comparison.add(reference(batch.inputs), candidate(batch.inputs),
                       None if batch.labels is None else batch.labels.numpy())
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
    if parity.min_agreement is not None and parity.label_agreement < parity.min_agreement:
        why.append(f"label agreement {parity.label_agreement:.4f} < {parity.min_agreement:g}")
    raise ExportError(f"export: parity check failed for {parity.candidate} vs {parity.reference} on "
                      f"{parity.examples} validation examples ({'; '.join(why)}); nothing was written")

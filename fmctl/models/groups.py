"""Parameter counts for manifests and reports.

Named layer groups (embeddings, blocks.<i>, final_norm, head) are no longer guessed here:
each backbone family declares its structure (fmctl.backbones, `structure_of(model, name)`
and `Structure.groups`)."""
from __future__ import annotations

from typing import Any


def parameter_counts(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}

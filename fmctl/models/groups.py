"""Parameter counts for manifests and reports.

Named layer groups (embeddings, blocks.<i>, final_norm, head) are no longer guessed here:
each backbone family declares its structure (fmctl.backbones, `structure_of(model, name)`
and `Structure.groups`)."""
from __future__ import annotations

from typing import Any


def parameter_counts(model: Any) -> dict[str, int]:
    """The parameters the model computes with, and those that train. peft keeps a frozen
    copy of each module it trains in full (`original_module` beside `modules_to_save`,
    the task head under LoRA) that the forward pass never uses: it is not counted."""
    used = [p for name, p in model.named_parameters() if ".original_module." not in f".{name}"]
    return {"total": sum(p.numel() for p in used), "trainable": sum(p.numel() for p in used if p.requires_grad)}

"""Named layer groups for every backbone family: embeddings, blocks.<i>, final_norm, head.

Freezing, LoRA targets and layer-wise learning-rate decay address parameters through
these names, so they work for BERT, GPT and ViT without special cases. The grouping is
found structurally (the transformer blocks are the largest ModuleList), which also covers
pretrained families we never listed (RoBERTa, MiniLM, DistilBERT, ...).
"""
from __future__ import annotations

from typing import Any

# Parameters outside the transformer body that belong to the task head.
_HEAD_MARKERS = ("pooler.", "classifier", "score.", "head.", "fc_norm.", "head_drop")


def find_blocks(model: Any) -> str:
    """Dotted name of the container of transformer blocks: the largest ModuleList or
    Sequential (timm) whose children are all of one class."""
    import torch.nn as nn

    best, best_count = "", -1
    for name, module in model.named_modules():
        children = list(module.children()) if isinstance(module, (nn.ModuleList, nn.Sequential)) else []
        if children and len({type(c) for c in children}) == 1:
            count = sum(p.numel() for p in module.parameters())
            if count > best_count:
                best, best_count = name, count
    return best


def layer_groups(model: Any) -> dict[str, list[str]]:
    """Group name -> parameter names, covering every parameter exactly once, in order."""
    blocks = find_blocks(model)
    groups: dict[str, list[str]] = {"embeddings": []}
    seen_block = False
    tail: list[str] = []
    for name, _ in model.named_parameters():
        if blocks and name.startswith(blocks + "."):
            index = name[len(blocks) + 1:].split(".", 1)[0]
            groups.setdefault(f"blocks.{index}", []).append(name)
            seen_block = True
        elif _is_head(name):
            groups.setdefault("head", []).append(name)
        elif not seen_block:
            groups["embeddings"].append(name)
        else:
            tail.append(name)
    if tail:
        groups["final_norm"] = tail
    if "head" in groups:
        groups["head"] = groups.pop("head")  # keep the head last
    return groups


def _is_head(name: str) -> bool:
    for wrapper in ("base_model.model.", "module.", "_orig_mod."):  # peft, DDP, torch.compile
        if name.startswith(wrapper):
            name = name[len(wrapper):]
    parts = name.split(".")
    for marker in _HEAD_MARKERS:
        stem = marker.rstrip(".")
        if any(p == stem or (not marker.endswith(".") and p.startswith(stem)) for p in parts[:2]):
            return True
    return False


def no_weight_decay(model: Any) -> set[str]:
    """Biases, norm weights (every 1-d tensor) and what the model itself exempts
    (timm's no_weight_decay(): position embeddings, class token)."""
    exempt = set()
    declared = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    for name, param in model.named_parameters():
        if param.ndim <= 1 or name in declared or name.split(".")[-1] in declared:
            exempt.add(name)
    return exempt


def parameter_counts(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}

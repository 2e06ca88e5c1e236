"""LiT's locked tower (Zhai et al. 2022): one tower of a two-tower model kept fixed, so a
pretrained tower's features survive and the other tower learns to meet them.

The tower's layer groups come from the backbone's declared structure (named by tower:
`text.embeddings`, `text.blocks.5`, ...), so this works for any family a tower is made
of. `unlocked` top blocks (and the tower's final norm and pooler) may still train, as
open_clip's --lock-image-unlocked-groups does. A fully locked tower is a fixed feature
extractor: its dropout (and drop-path) is switched off, so every step sees the same
features for the same input."""
from __future__ import annotations

from typing import Any

from fmctl.errors import ConfigError


def lock_tower(model: Any, tower: str, unlocked: int, backbone: str) -> dict[str, int]:
    """Freeze `tower` but its top `unlocked` blocks; returns the frozen and trainable counts."""
    from fmctl.backbones import structure_of
    from fmctl.backbones.structure import block_groups, by_tower

    groups = by_tower(structure_of(model, backbone).groups(model))[tower]
    blocks = block_groups(groups)
    if unlocked > len(blocks):
        raise ConfigError(f"task.unlocked_layers: {unlocked} blocks asked for but the {tower} tower has {len(blocks)}")
    trainable = set(blocks[len(blocks) - unlocked:]) | ({"final_norm", "head"} if unlocked else set())
    params = dict(model.named_parameters())
    frozen = 0
    for group, names in groups.items():
        if group not in trainable:
            for name in names:
                params[name].requires_grad_(False)
                frozen += params[name].numel()
    if not unlocked:
        _no_dropout(getattr(model, f"{tower}_tower"))
    return {"frozen": frozen, "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _no_dropout(module: Any) -> None:
    import torch.nn as nn

    for sub in module.modules():
        if isinstance(sub, nn.Dropout):
            sub.p = 0.0
        elif type(sub).__name__ == "DropPath" and hasattr(sub, "drop_prob"):
            sub.drop_prob = 0.0

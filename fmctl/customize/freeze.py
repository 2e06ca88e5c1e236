"""freeze: stop gradients by parameter-name glob, for the embeddings, or for the bottom k
transformer blocks (the backbone's named layer groups, so BERT, GPT and ViT alike)."""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from fmctl.config.schema import FreezeOp
from fmctl.errors import ConfigError
from fmctl.models.groups import layer_groups


def apply(model: Any, cfg: FreezeOp, ctx: Any) -> tuple[Any, dict[str, Any]]:
    names = [n for n, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in cfg.params:
        matched = [n for n in names if fnmatchcase(n, pattern)]
        if not matched:
            raise ConfigError(f"customize.freeze.params: '{pattern}' matches no parameter; names look like "
                              f"{', '.join(_examples(names))}")
        chosen.update(matched)
    groups = layer_groups(model)
    if cfg.embeddings:
        chosen.update(groups.get("embeddings", []))
    if cfg.bottom:
        blocks = sorted((g for g in groups if g.startswith("blocks.")), key=lambda g: int(g.split(".")[1]))
        if cfg.bottom > len(blocks):
            raise ConfigError(f"customize.freeze.bottom: {cfg.bottom} blocks asked for but the model has "
                              f"{len(blocks)}")
        for group in blocks[:cfg.bottom]:
            chosen.update(groups[group])
    frozen = 0
    for name, param in model.named_parameters():
        if name in chosen:
            param.requires_grad_(False)
            frozen += param.numel()
    return model, {"frozen_params": frozen, "frozen_tensors": len(chosen)}


def _examples(names: list[str], n: int = 6) -> list[str]:
    picked = names[:3] + [x for x in names if ".1." in x or ".0." in x][:2] + names[-1:]
    seen: list[str] = []
    for name in picked:
        if name not in seen:
            seen.append(name)
    return seen[:n]

"""freeze: stop gradients by parameter-name glob, for the embeddings, or for the bottom k
transformer blocks (the backbone's declared layer groups, so BERT, GPT and ViT alike).

On a model made of towers (image + text) each tower is a network of its own with its own
input: `embeddings` freezes every tower's embeddings and `bottom=K` the K lowest blocks of
every tower; the composed model's own head and projections are never "bottom"."""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from fmctl.backbones import structure_of
from fmctl.backbones.structure import block_groups, by_tower
from fmctl.config.schema import FreezeOp
from fmctl.errors import ConfigError


def apply(model: Any, cfg: FreezeOp, ctx: Any) -> tuple[Any, dict[str, Any]]:
    names = [n for n, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in cfg.params:
        matched = [n for n in names if fnmatchcase(n, pattern)]
        if not matched:
            raise ConfigError(f"customize.freeze.params: '{pattern}' matches no parameter; names look like "
                              f"{', '.join(_examples(names))}")
        chosen.update(matched)
    towers = by_tower(structure_of(model, ctx.run.backbone.name).groups(model))
    for tower, groups in towers.items():
        if cfg.embeddings:
            chosen.update(groups.get("embeddings", []))
        if cfg.bottom and (tower or len(towers) == 1):  # '' among towers: the composed model's head
            chosen.update(_bottom(groups, cfg.bottom, f"the {tower} tower" if tower else "the model"))
    frozen = 0
    for name, param in model.named_parameters():
        if name in chosen:
            param.requires_grad_(False)
            frozen += param.numel()
    return model, {"frozen_params": frozen, "frozen_tensors": len(chosen)}


def _bottom(groups: dict[str, list[str]], k: int, what: str) -> list[str]:
    """The parameters of the k lowest blocks among one model's (or tower's) groups."""
    blocks = block_groups(groups)
    if k > len(blocks):
        raise ConfigError(f"customize.freeze.bottom: {k} blocks asked for but {what} has {len(blocks)}")
    return [name for group in blocks[:k] for name in groups[group]]


def _examples(names: list[str], n: int = 6) -> list[str]:
    picked = names[:3] + [x for x in names if ".1." in x or ".0." in x][:2] + names[-1:]
    seen: list[str] = []
    for name in picked:
        if name not in seen:
            seen.append(name)
    return seen[:n]

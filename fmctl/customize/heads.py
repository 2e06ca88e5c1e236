"""Structural removal of attention heads, for families whose saved config records the
head count apart from the head width (T5: `num_heads` and `d_kv`). The projections really
shrink and the config records the new count, so model/ reloads as the smaller model with
transformers alone; BERT, GPT-2 and timm's ViT derive a head's width from hidden size /
heads, so there prune can only zero heads (fmctl.customize.prune).

One config value sizes every attention module of the model, so every module keeps the
same number of heads; which heads is each module's own choice, except where a per-head
table is shared: T5's first block computes the relative position bias (one column per
head) and every later block of the stack reuses it, so a stack's self-attention keeps the
same heads in every block, chosen by their importance summed over the stack.

Importance of a head is the squared L2 norm of its slices of the input projections (q, k,
v) plus that of its columns of the output projection: like the feed-forward channels'
score, it needs no data, so the same base always loses the same heads (exact resume).
Removing a head computes exactly what zeroing its output-projection columns computes.
"""
from __future__ import annotations

from collections import defaultdict
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from fmctl.customize.channels import check_rebuilds, feature_axis, keep_features, stacks_by_config
from fmctl.errors import ConfigError

if TYPE_CHECKING:
    from fmctl.backbones.composed import Towers
    from fmctl.backbones.structure import HeadRemoval, Structure


def removes_heads(structure: Structure | Towers) -> bool:
    """Whether every stack's family declares structural head removal."""
    stacks = structure.removal_stacks()
    return bool(stacks) and all(removal is not None for _, removal, _ in stacks)


def remove_heads(model: Any, structure: Structure | Towers, fraction: float) -> dict[str, Any]:
    """Remove `fraction` of every attention module's heads (the least important ones) and
    record the new count in each config. Returns the kept head indices per module
    (`kept`), each config's count before and after (`counts`) and how many heads all
    modules together lost (`removed`)."""
    by_config = stacks_by_config(structure.removal_stacks(), structure.family, "customize.prune.heads",
                                 "head removal", "head_removal")
    kept: dict[str, list[int]] = {}
    counts: dict[str, tuple[int, int]] = {}
    removed = 0
    for config_at, stacks in by_config.items():
        removal = stacks[0][1]
        groups = _attention_groups(model, stacks, structure.family)
        found = {int(getattr(module, removal.count_attr)) for members in groups.values() for _, module in members}
        if len(found) != 1:
            raise ConfigError(f"customize.prune.heads: the attention modules' head counts differ ({sorted(found)}); "
                              f"one config value cannot record them after pruning")
        before = found.pop()
        after = before - min(before - 1, int(round(fraction * before)))
        for members in groups.values():
            score = sum(head_scores(module, removal, before) for _, module in members)
            index = score.topk(after).indices.sort().values
            for name, module in members:
                keep_heads(module, removal, index, before)
                kept[name] = index.tolist()
            removed += (before - after) * len(members)
        owner = model.get_submodule(config_at) if config_at else model
        _record_count(owner, removal.count_key, after)
        check_rebuilds(owner, structure.family, "customize.prune.heads",
                       "its head count sizes more than the attention projections")
        counts[config_at] = (before, after)
    return {"kept": kept, "counts": counts, "removed": removed}


def _attention_groups(model: Any, stacks: list[tuple[str, HeadRemoval]],
                      family: str) -> dict[tuple[Any, ...], list[tuple[str, Any]]]:
    """Attention modules that must keep the same heads, grouped: a shared site's modules
    across its stack, every other module alone. Values are (module path, module)."""
    groups: dict[tuple[Any, ...], list[tuple[str, Any]]] = defaultdict(list)
    for stack, removal in stacks:
        for i, block in enumerate(model.get_submodule(stack)):
            for path, shared in removal.sites:
                try:
                    module = attrgetter(path)(block)
                except AttributeError:
                    continue  # a block without this site (T5's encoder has no cross-attention)
                if not hasattr(module, removal.count_attr):
                    raise ConfigError(f"customize.prune.heads: the {family} model's attention at {stack}.{i}.{path} "
                                      f"keeps no head count ({removal.count_attr}); heads can be removed from "
                                      f"T5-style attention only")
                groups[(stack, path) if shared else (stack, path, i)].append((f"{stack}.{i}.{path}", module))
    if not groups:
        sites = ", ".join(dict.fromkeys(path for _, removal in stacks for path, _ in removal.sites))
        raise ConfigError(f"customize.prune.heads: found no attention at {sites} in the {family} model's blocks; "
                          f"heads can be removed from T5-style attention only (T5, mT5)")
    return groups


def head_scores(attention: Any, removal: HeadRemoval, heads: int) -> Any:
    """Squared L2 norm of each head's slices of the input projections (weights and biases)
    and of its columns of the output projection."""
    import torch

    score = torch.zeros(heads)
    parts = [(attrgetter(name)(attention), "out") for name in removal.inputs]
    parts.append((attrgetter(removal.output)(attention), "in"))
    for layer, side in parts:
        weight = layer.weight.detach().float().movedim(feature_axis(layer, side), 0)
        score += weight.reshape(heads, -1).pow(2).sum(dim=1).cpu()  # summed on the CPU, wherever the model is
        if side == "out" and getattr(layer, "bias", None) is not None:
            score += layer.bias.detach().float().reshape(heads, -1).pow(2).sum(dim=1).cpu()
    return score


def keep_heads(attention: Any, removal: HeadRemoval, index: Any, heads: int) -> None:
    """Keep only heads `index` (sorted) of one attention module, in place."""
    import torch

    width = int(getattr(attention, removal.inner_attr)) // heads
    features = (index[:, None] * width + torch.arange(width)[None, :]).flatten()
    for name in removal.inputs:
        layer = attrgetter(name)(attention)
        keep_features(layer, features.to(layer.weight.device), "out")
    output = attrgetter(removal.output)(attention)
    keep_features(output, features.to(output.weight.device), "in")
    for name in removal.tables:
        table = getattr(attention, name, None)
        if table is not None:
            import torch.nn as nn

            weight = table.weight
            table.weight = nn.Parameter(weight.detach().index_select(1, index.to(weight.device)).clone(),
                                        requires_grad=weight.requires_grad)
            table.embedding_dim = len(index)
    setattr(attention, removal.count_attr, len(index))
    setattr(attention, removal.inner_attr, len(index) * width)


def _record_count(owner: Any, key: str, count: int) -> None:
    """Write the head count into the owner's config (what save_pretrained writes) and into
    every copy of it below (T5's stacks each hold a copy of the model's config)."""
    config = getattr(owner, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise ConfigError("customize.prune.heads: no transformers config to record the new head count in")
    for module in owner.modules():
        copy = getattr(module, "config", None)
        if copy is not None and hasattr(copy, "to_dict") and hasattr(copy, key):
            setattr(copy, key, count)

"""prune: a smaller model, or a sparser one.

In this order:
- `ffn`: feed-forward channels are removed structurally (fmctl.customize.channels): the
  layers shrink, the saved config records the new width, and parameters, FLOPs and
  latency fall.
- `heads`, where the family's config records the head count apart from the head width
  (T5: num_heads, d_kv; declared as `head_removal`): heads are removed structurally too
  (fmctl.customize.heads).
- `sparsity`: magnitude pruning of the transformer blocks' weight matrices (unstructured,
  global or per layer, to a target sparsity). Zeros, not a smaller model: the shapes,
  the parameter count and dense FLOPs stay; only sparse kernels or compression gain.
- `heads` elsewhere: the least important attention heads are silenced by zeroing their
  query/key/value rows and output-projection columns. Not removed: transformers 5
  dropped `prune_heads` and `config.pruned_heads`, BERT and GPT-2 derive a head's width
  from hidden size / head count, and timm's VisionTransformer passes its blocks no other
  head width, so no config they read says "fewer heads of the same width": removed heads
  would leave a model/ that transformers or timm cannot reload.

Zeros are torch.nn.utils.prune masks: they hold through training (pruned weights stay
zero, their gradients are masked) and live in checkpoints, so a resumed run keeps them.
Before model/ is written they are made permanent (prune.remove), so model/ is a plain
model whose zeros are really there.
"""
from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING, Any

from fmctl.backbones import declaring, structure_of
from fmctl.config.schema import PruneOp
from fmctl.customize.channels import remove_ffn_channels
from fmctl.customize.heads import remove_heads, removes_heads
from fmctl.errors import ConfigError

if TYPE_CHECKING:
    from fmctl.backbones.structure import HeadLayout, Structure
    from fmctl.backbones.composed import Towers


def prunable(model: Any, structure: Structure | Towers) -> list[tuple[str, Any]]:
    """(name, module) of every linear layer (GPT-2's Conv1D too) inside the transformer
    blocks (every stack the backbone declares)."""
    import torch.nn as nn

    stacks = tuple(s + "." for s in structure.stacks)
    return [(n, m) for n, m in model.named_modules()
            if stacks and n.startswith(stacks) and (isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D")]


def unstructured_masks(weights: list[Any], sparsity: float, scope: str) -> list[Any]:
    """Keep-masks zeroing the smallest-magnitude fraction `sparsity`, over all tensors
    together (global) or tensor by tensor (layer)."""
    import torch

    if scope == "layer":
        return [_smallest_off(w.detach().abs().flatten(), sparsity).view_as(w) for w in weights]
    flat = torch.cat([w.detach().abs().flatten() for w in weights])
    keep = _smallest_off(flat, sparsity)
    masks, start = [], 0
    for w in weights:
        masks.append(keep[start:start + w.numel()].view_as(w))
        start += w.numel()
    return masks


def _smallest_off(values: Any, fraction: float) -> Any:
    import torch

    keep = torch.ones_like(values)
    k = int(round(fraction * values.numel()))
    if k:
        keep[torch.topk(values, k, largest=False).indices] = 0
    return keep


def head_masks(model: Any, fraction: float, structure: Structure | Towers) -> tuple[dict[tuple[int, str], Any], int]:
    """Keep-masks for (id(module), param) that zero the least important heads of every
    block; importance is the L2 norm of the head's slices of q/k/v and output weights."""
    stacks = structure.head_stacks()
    if not stacks or any(layout is None for _, layout in stacks):
        raise ConfigError(f"customize.prune.heads: prune zeroes the heads of {declaring('head_layout')} backbones "
                          f"and removes those of {declaring('head_removal')}, not '{structure.family}'")
    masks: dict[tuple[int, str], Any] = {}
    removed = 0
    for stack, layout in stacks:
        for block in model.get_submodule(stack):
            removed += _block_head_masks(block, layout, fraction, structure.family, masks)
    return masks, removed


def _block_head_masks(block: Any, layout: HeadLayout, fraction: float, family: str,
                      masks: dict[tuple[int, str], Any]) -> int:
    """Add one block's masks to `masks`; the number of heads it loses."""
    import torch

    try:
        heads = int(attrgetter(layout.count)(block))
        parts = [(attrgetter(path)(block), axis, offsets) for path, axis, offsets in layout.projections]
    except AttributeError:
        raise ConfigError(f"customize.prune.heads: cannot find the attention projections of a {family} block") from None
    hidden = parts[-1][0].weight.shape[0]  # the output projection is hidden x hidden
    size = hidden // heads
    score = torch.zeros(heads)
    for module, axis, offsets in parts:
        w = module.weight.detach()
        for h in range(heads):
            for off in offsets:
                score[h] += w.narrow(axis, off * hidden + h * size, size).pow(2).sum()
    n = min(heads - 1, int(round(fraction * heads)))
    if n == 0:
        return 0
    drop = torch.topk(score, n, largest=False).indices.tolist()
    for index, (module, axis, offsets) in enumerate(parts):
        # q/k/v biases are per head too; the output projection's bias is not.
        names = ("weight", "bias") if index < len(parts) - 1 else ("weight",)
        for pname in names:
            param = getattr(module, pname, None)
            if param is None:
                continue
            mask = masks.setdefault((id(module), pname), torch.ones_like(param))
            dim = axis if pname == "weight" else 0
            for h in drop:
                for off in offsets:
                    mask.narrow(dim, off * hidden + h * size, size).zero_()
    return n


def apply(model: Any, cfg: PruneOp, ctx: Any) -> tuple[Any, dict[str, Any]]:
    structure = structure_of(model, ctx.run.backbone.name)
    details: dict[str, Any] = {}
    if cfg.ffn > 0:
        removed = remove_ffn_channels(model, structure, cfg.ffn)
        details["ffn_width"] = ", ".join(f"{before} -> {after}" for before, after in removed["widths"].values())
        details["ffn_channels_removed"] = removed["removed"]
    zero_heads = cfg.heads
    if cfg.heads > 0 and removes_heads(structure):
        removed = remove_heads(model, structure, cfg.heads)
        details["heads"] = ", ".join(f"{before} -> {after}" for before, after in removed["counts"].values())
        details["heads_removed"] = removed["removed"]
        zero_heads = 0.0
    if cfg.sparsity > 0 or zero_heads > 0:
        details.update(_zero_weights(model, cfg, zero_heads, structure, ctx))
    return model, details


def _zero_weights(model: Any, cfg: PruneOp, zero_heads: float, structure: Structure | Towers,
                  ctx: Any) -> dict[str, Any]:
    """Unstructured sparsity and silenced heads (the fraction `zero_heads`) under
    torch.nn.utils.prune masks, made permanent by a finalizer before model/ is written."""
    import torch.nn.utils.prune as P

    modules = prunable(model, structure)
    if not modules:
        raise ConfigError("customize.prune: no linear layers inside transformer blocks to prune")
    masks: dict[tuple[int, str], Any] = {}
    if cfg.sparsity > 0:
        for (_, module), mask in zip(modules, unstructured_masks([m.weight for _, m in modules], cfg.sparsity,
                                                                  cfg.scope)):
            masks[(id(module), "weight")] = mask
    zeroed = 0
    if zero_heads > 0:
        heads, zeroed = head_masks(model, zero_heads, structure)
        for key, mask in heads.items():
            masks[key] = masks[key] * mask if key in masks else mask
    by_id = {id(m): m for _, m in modules}
    pruned = []
    for (module_id, pname), mask in masks.items():
        module = by_id[module_id]
        P.custom_from_mask(module, pname, mask.to(getattr(module, pname).device))
        pruned.append((module, pname))

    def finalize(trained: Any, run_dir: Any) -> Any:
        for module, pname in pruned:
            if P.is_pruned(module) and hasattr(module, pname + "_mask"):
                P.remove(module, pname)
        return trained

    ctx.finalizers.append(finalize)
    zeros = sum(int((getattr(m, p) == 0).sum()) for m, p in pruned if p == "weight")
    total = sum(m.weight.numel() for _, m in modules)
    found = {"sparsity": round(zeros / total, 6) if total else 0.0, "scope": cfg.scope}
    return {**found, "heads_zeroed": zeroed} if zero_heads > 0 else found

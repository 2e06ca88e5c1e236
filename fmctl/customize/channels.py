"""Structural removal of feed-forward channels: every block keeps the same number of its
most important channels, the two layers around them really shrink, and the saved config
records the new width, so model/ reloads as the smaller model with transformers or timm
alone (BERT `intermediate_size`, GPT-2 `n_inner`, T5 `d_ff`, timm `mlp_ratio`).

The width is uniform across blocks because those libraries build every block from one
config value; which channels a block keeps is its own choice. Importance of channel c is
||[W_expand[c], b_expand[c]]|| * ||W_reduce[:, c]||, the product of the L2 norms of the
weights that write and read it: the channel's output is W_reduce[:, c] * act(W_expand[c] x +
b), so the product bounds how much it can add, and unlike a sum of squares it does not
change when a ReLU channel's input is scaled up and its output down by the same factor.
It needs no data, so the same base always loses the same channels (exact resume).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from fmctl.backbones import declaring
from fmctl.errors import ConfigError

if TYPE_CHECKING:
    from fmctl.backbones.structure import FfnLayout, Structure
    from fmctl.backbones.composed import Towers


def _is_conv1d(module: Any) -> bool:
    """GPT-2's Conv1D stores its weight as (in, out), the transpose of nn.Linear's."""
    return type(module).__name__ == "Conv1D"


def feature_axis(module: Any, side: str) -> int:
    """The weight axis holding the module's output ('out') or input ('in') features."""
    return (1 if side == "out" else 0) if _is_conv1d(module) else (0 if side == "out" else 1)


def keep_features(module: Any, index: Any, side: str) -> None:
    """Keep only the output ('out') or input ('in') features `index` of a linear layer or
    Conv1D, in place. Why not transformers' prune_linear_layer: it covers nn.Linear only
    (its Conv1D counterpart went in transformers 5) and returns a new module, which loses
    an earlier freeze (requires_grad) and the module's dtype."""
    import torch.nn as nn

    weight = module.weight
    module.weight = nn.Parameter(weight.detach().index_select(feature_axis(module, side), index).clone(),
                                 requires_grad=weight.requires_grad)
    if side == "out" and module.bias is not None:
        module.bias = nn.Parameter(module.bias.detach().index_select(0, index).clone(),
                                   requires_grad=module.bias.requires_grad)
    count = len(index)
    if _is_conv1d(module):
        setattr(module, "nf" if side == "out" else "nx", count)
    else:
        setattr(module, "out_features" if side == "out" else "in_features", count)


def channel_scores(expand: Any, reduce: Any) -> Any:
    """Importance of each channel between `expand` and `reduce` (see the module docstring)."""
    import torch

    written = expand.weight.detach()
    written = written.T if _is_conv1d(expand) else written            # (channels, hidden)
    if expand.bias is not None:
        written = torch.cat([written, expand.bias.detach()[:, None]], dim=1)
    read = reduce.weight.detach()
    read = read if _is_conv1d(reduce) else read.T                      # (channels, hidden)
    return written.float().norm(dim=1) * read.float().norm(dim=1)


def remove_ffn_channels(model: Any, structure: Structure | Towers, fraction: float) -> dict[str, Any]:
    """Remove `fraction` of every block's feed-forward channels (the least important ones)
    and record the new width in each config. Returns the kept channel indices per block
    (`kept`), each config's width before and after (`widths`) and how many channels all
    blocks together lost (`removed`)."""
    sites = stacks_by_config(structure.ffn_stacks(), structure.family, "customize.prune.ffn",
                             "feed-forward channel removal", "ffn_layout")
    kept: dict[str, Any] = {}
    widths: dict[str, tuple[int, int]] = {}
    removed = 0
    for config_at, stacks in sites.items():
        blocks = [(f"{stack}.{i}", _layers(block, layout, structure.family))
                  for stack, layout in stacks for i, block in enumerate(model.get_submodule(stack))]
        found = {_width(expand) for _, (expand, _) in blocks}
        if len(found) != 1:
            raise ConfigError(f"customize.prune.ffn: the blocks' feed-forward widths differ ({sorted(found)}); "
                              f"one config value cannot record them after pruning")
        before = found.pop()
        after = before - min(before - 1, int(round(fraction * before)))
        for name, (expand, reduce) in blocks:
            index = channel_scores(expand, reduce).topk(after).indices.sort().values
            keep_features(expand, index.to(expand.weight.device), "out")
            keep_features(reduce, index.to(reduce.weight.device), "in")
            kept[name] = index
            removed += before - after
        _record_width(model, config_at, stacks[0][1], after, _hidden(blocks[0][1][0]))
        check_rebuilds(model.get_submodule(config_at) if config_at else model, structure.family,
                       "customize.prune.ffn", "its feed-forward width sizes more than the block's two layers")
        widths[config_at] = (before, after)
    return {"kept": kept, "widths": widths, "removed": removed}


def stacks_by_config(entries: list[tuple[str, Any, str]], family: str, key: str, operation: str,
                     attribute: str) -> dict[str, list[tuple[str, Any]]]:
    """(stack, declaration) pairs grouped by the module path whose config records the new
    shape, from (stack, declaration, config path) entries; a stack whose family declares
    nothing (`attribute` unset) is a one-line error naming the families that do."""
    grouped: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for stack, declared_layout, config_at in entries:
        if declared_layout is None:
            raise ConfigError(f"{key}: {operation} supports {declaring(attribute)} backbones, not '{family}'")
        grouped[config_at].append((stack, declared_layout))
    return grouped


def _layers(block: Any, layout: FfnLayout, family: str) -> tuple[Any, Any]:
    try:
        expand, reduce = submodule(block, layout.expand), submodule(block, layout.reduce)
    except (AttributeError, IndexError):
        raise ConfigError(f"customize.prune.ffn: cannot find the feed-forward layers ({layout.expand}, "
                          f"{layout.reduce}) of a {family} block") from None
    if _width(expand) != int(reduce.weight.shape[feature_axis(reduce, "in")]):  # a gated MLP splits its channels
        raise ConfigError(f"customize.prune.ffn: {layout.expand} makes {_width(expand)} channels but {layout.reduce} "
                          f"reads {int(reduce.weight.shape[feature_axis(reduce, 'in')])}; gated feed-forward layers are "
                          f"not supported")
    return expand, reduce


def submodule(module: Any, path: str) -> Any:
    """The module at a dotted `path`, where a number indexes a list and a negative one
    counts from its end: "layer.-1.DenseReluDense.wi" is the feed-forward layer of T5's
    encoder blocks (layer 1) and decoder blocks (layer 2) alike."""
    for part in path.split("."):
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
    return module


def _width(expand: Any) -> int:
    return int(expand.weight.shape[feature_axis(expand, "out")])


def _hidden(expand: Any) -> int:
    return int(expand.weight.shape[feature_axis(expand, "in")])


def _record_width(model: Any, config_at: str, layout: FfnLayout, width: int, hidden: int) -> None:
    """Write the new width where the library reads it when it rebuilds the model: the
    transformers config (written to config.json by save_pretrained) or timm's model
    arguments (written to config.json's model_args by save_for_hf)."""
    owner = model.get_submodule(config_at) if config_at else model
    value: int | float = _ratio(width, hidden) if layout.ratio else width
    config = getattr(owner, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        setattr(config, layout.width_key, value)
    elif isinstance(getattr(owner, "_model_args", None), dict):
        from timm.models._input import update_model_args

        update_model_args(owner, **{layout.width_key: value})
    else:
        raise ConfigError(f"customize.prune.ffn: no transformers config or timm model arguments at "
                          f"'{config_at or 'the model'}' to record the new width in")


def check_rebuilds(owner: Any, family: str, key: str, why: str) -> None:
    """Build the model again from the config just written, on the meta device (shapes, no
    memory), and refuse if a parameter would come back another shape (`key`: the setting
    to name, `why`: the likely reason). Why: model/ must reload with the library alone,
    and a width may size more than the two layers (timm's attention pooling, a norm inside
    the MLP)."""
    import torch

    with torch.device("meta"):
        config = getattr(owner, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            rebuilt = type(owner)(config)
        else:
            import timm

            rebuilt = timm.create_model(owner.pretrained_cfg["architecture"], pretrained=False, **owner._model_args)
    shapes = {name: tuple(param.shape) for name, param in rebuilt.named_parameters()}
    for name, param in owner.named_parameters():  # a replaced head's names differ; they are not compared
        if name in shapes and shapes[name] != tuple(param.shape):
            raise ConfigError(f"{key}: rebuilt from its pruned config, this {family} model would get "
                              f"{name} of shape {shapes[name]}, not {tuple(param.shape)}; {why}, so it cannot be "
                              f"pruned this way")


def _ratio(width: int, hidden: int) -> float:
    """The smallest float r with int(hidden * r) == width, as timm computes the width."""
    ratio = width / hidden
    while int(hidden * ratio) < width:
        ratio = math.nextafter(ratio, math.inf)
    return ratio

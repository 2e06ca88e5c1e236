"""drop_layers: keep a chosen subset of transformer blocks; the dropped ones are really
gone (parameters and config), so model/ reloads as the smaller model.

The blocks are the single stack the backbone family declares, and the config keys that
count them are the family's. A backbone with several stacks (T5's encoder and decoder, a
model made of towers) is refused: one `keep` list cannot say which stack it means, and
no single config key counts both."""
from __future__ import annotations

from typing import Any

from fmctl.backbones import structure_of
from fmctl.config.schema import DropLayersOp
from fmctl.errors import ConfigError


def kept_indices(cfg: DropLayersOp, total: int) -> list[int]:
    if cfg.keep is not None:
        bad = [i for i in cfg.keep if i >= total]
        if bad:
            raise ConfigError(f"customize.drop_layers.keep: block(s) {bad} do not exist; the model has {total} "
                              f"blocks (0-{total - 1})")
        return sorted(cfg.keep)
    if cfg.bottom is not None:
        if cfg.bottom > total:
            raise ConfigError(f"customize.drop_layers.bottom: asks for {cfg.bottom} layers but the model has only "
                              f"{total}")
        return list(range(cfg.bottom))
    return list(range(0, total, cfg.every))


def apply(model: Any, cfg: DropLayersOp, ctx: Any) -> tuple[Any, dict[str, Any]]:
    structure = structure_of(model, ctx.run.backbone.name)
    if not structure.stacks:
        raise ConfigError("customize.drop_layers: no stack of transformer blocks found in this model")
    if len(structure.stacks) > 1:
        raise ConfigError(f"customize.drop_layers: backbone '{structure.family}' has {len(structure.stacks)} block "
                          f"stacks ({', '.join(structure.stacks)}); drop_layers works on a single stack")
    name = structure.stacks[0]
    container = model.get_submodule(name)
    total = len(container)
    keep = kept_indices(cfg, total)
    kept = type(container)(*[container[i] for i in keep]) if _is_sequential(container) else \
        type(container)([container[i] for i in keep])
    for index, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = index  # caches and per-layer settings index blocks by position
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, kept)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        for key in structure.depth_keys:
            if key in config.to_dict():
                setattr(config, key, len(keep))
        for key in ("layer_types",):  # per-layer lists must shrink with the blocks
            value = getattr(config, key, None)
            if isinstance(value, list) and len(value) == total:
                setattr(config, key, [value[i] for i in keep])
    if isinstance(getattr(model, "_model_args", None), dict) and "depth" in model._model_args:
        model._model_args["depth"] = len(keep)  # timm's save_for_hf writes it to config.json
    return model, {"blocks_before": total, "blocks_after": len(keep), "kept": keep}


def _is_sequential(module: Any) -> bool:
    import torch.nn as nn

    return isinstance(module, nn.Sequential)

"""drop_layers: keep a chosen subset of transformer blocks; the dropped ones are really
gone (parameters and config), so model/ reloads as the smaller model.

The blocks are the stacks the backbone family declares, and the config keys that count
them are the family's. A staged backbone (CvT), whose depth key holds one count per
stack, drops blocks stage by stage and keeps at least one in each; a model whose stacks
no single key counts (T5's encoder and decoder, a model made of towers) is refused: one
`keep` list cannot say which stack it means. The family says whether the smaller model
can be built again (CvT's stage depths), so model/ always reloads."""
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
    stacks = list(structure.stacks)
    config_at = getattr(structure, "config_at", "")  # a model of towers has no one config
    config = getattr(model.get_submodule(config_at) if config_at else model, "config", None)
    present = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
    staged = [k for k in structure.depth_keys if isinstance(present.get(k), list) and len(present[k]) == len(stacks)]
    if len(stacks) > 1 and not staged:
        raise ConfigError(f"customize.drop_layers: backbone '{structure.family}' has {len(stacks)} block "
                          f"stacks ({', '.join(stacks)}); drop_layers works on a single stack")
    totals = [len(model.get_submodule(name)) for name in stacks]
    keeps = [kept_indices(cfg, totals[0])] if len(stacks) == 1 else kept_per_stage(cfg, totals)
    _check_counts(ctx.run.backbone.name, [len(k) for k in keeps])
    for name, keep in zip(stacks, keeps):
        _keep_blocks(model, name, keep)
    if config is not None and present:
        for key in structure.depth_keys:
            if key in staged:
                setattr(config, key, [len(k) for k in keeps])
            elif key in present:
                setattr(config, key, len(keeps[0]))
        for key in ("layer_types",):  # per-layer lists must shrink with the blocks
            value = getattr(config, key, None)
            if isinstance(value, list) and len(stacks) == 1 and len(value) == totals[0]:
                setattr(config, key, [value[i] for i in keeps[0]])
    if isinstance(getattr(model, "_model_args", None), dict) and "depth" in model._model_args:
        model._model_args["depth"] = len(keeps[0])  # timm's save_for_hf writes it to config.json
    offsets = [sum(totals[:i]) for i in range(len(totals))]
    kept = [offset + i for offset, keep in zip(offsets, keeps) for i in keep]
    return model, {"blocks_before": sum(totals), "blocks_after": len(kept), "kept": kept}


def kept_per_stage(cfg: DropLayersOp, totals: list[int]) -> list[list[int]]:
    """A staged backbone (CvT): `keep` lists block indices counted across the stages, as
    freeze and the layer groups count them; `bottom` and `every` apply within each stage
    (its first `bottom` blocks, or every k-th from its first), so every stage keeps blocks."""
    if cfg.keep is None:
        if cfg.bottom is not None:
            return [list(range(min(cfg.bottom, total))) for total in totals]
        return [list(range(0, total, cfg.every)) for total in totals]
    whole = kept_indices(cfg, sum(totals))
    keeps, start = [], 0
    for total in totals:
        keeps.append([i - start for i in whole if start <= i < start + total])
        start += total
    return keeps


def _check_counts(backbone: str, counts: list[int]) -> None:
    """Every stage keeps a block, and the smaller model is one its library can build again."""
    from fmctl.backbones import family

    empty = [stage for stage, count in enumerate(counts) if count == 0]
    if empty:
        raise ConfigError(f"customize.drop_layers.keep: leaves stage {empty[0]} without blocks; keep at least one "
                          f"block of every stage")
    problem = family(backbone).depth_problem(counts)
    if problem:
        raise ConfigError(f"{problem} (blocks per stage after dropping: {counts})")


def _keep_blocks(model: Any, name: str, keep: list[int]) -> None:
    """Replace the stack at `name` by the blocks at `keep`, renumbering their layer_idx."""
    container = model.get_submodule(name)
    kept = type(container)(*[container[i] for i in keep]) if _is_sequential(container) else \
        type(container)([container[i] for i in keep])
    for index, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = index  # caches and per-layer settings index blocks by position
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, kept)


def _is_sequential(module: Any) -> bool:
    import torch.nn as nn

    return isinstance(module, nn.Sequential)

"""dropout: set hidden and attention dropout rates, in the modules and in the saved config.

Which dropout modules act on attention probabilities, and which config keys hold the
rates, is what the backbone family declares (every tower's, on a composed model). A key
holding one rate per stage (CvT's drop_rate) gets the rate at every stage."""
from __future__ import annotations

from typing import Any

from fmctl.backbones import structure_of
from fmctl.config.schema import DropoutOp


def apply(model: Any, cfg: DropoutOp, ctx: Any) -> tuple[Any, dict[str, Any]]:
    import torch.nn as nn

    structure = structure_of(model, ctx.run.backbone.name)
    attention = tuple(structure.attention_dropout)
    changed = {"hidden": 0, "attention": 0}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Dropout):
            continue
        kind = "attention" if attention and name.endswith(attention) else "hidden"
        rate = getattr(cfg, kind)
        if rate is not None:
            module.p = rate
            changed[kind] += 1
    for path, keys in structure.config_sites():
        config = getattr(model.get_submodule(path) if path else model, "config", None)
        if config is None or not hasattr(config, "to_dict"):
            continue
        present = config.to_dict()
        for kind, names in keys.items():
            rate = getattr(cfg, kind)
            if rate is None:
                continue
            for key in names:
                if key in present:  # a per-stage list (CvT) gets the rate at every stage
                    setattr(config, key, [rate] * len(present[key]) if isinstance(present[key], list) else rate)
    return model, {"hidden_modules": changed["hidden"], "attention_modules": changed["attention"]}

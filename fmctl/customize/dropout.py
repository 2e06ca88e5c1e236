"""dropout: set hidden and attention dropout rates, in the modules and in the saved config."""
from __future__ import annotations

from typing import Any

from fmctl.config.schema import DropoutOp

# Dropout modules that act on attention probabilities (BERT, GPT-2, timm ViT, T5/BART-like).
_ATTENTION = ("attention.self.dropout", "attn.attn_dropout", "attn.attn_drop", "self_attn.dropout")
# Config attributes: (hidden, attention) per transformers family.
_CONFIG_KEYS = {"hidden": ("hidden_dropout_prob", "resid_pdrop", "embd_pdrop", "dropout"),
                "attention": ("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout")}


def apply(model: Any, cfg: DropoutOp, ctx: Any) -> tuple[Any, dict[str, Any]]:
    import torch.nn as nn

    changed = {"hidden": 0, "attention": 0}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Dropout):
            continue
        kind = "attention" if name.endswith(_ATTENTION) else "hidden"
        rate = getattr(cfg, kind)
        if rate is not None:
            module.p = rate
            changed[kind] += 1
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        for kind, keys in _CONFIG_KEYS.items():
            rate = getattr(cfg, kind)
            if rate is None:
                continue
            for key in keys:
                if key in config.to_dict():
                    setattr(config, key, rate)
    return model, {"hidden_modules": changed["hidden"], "attention_modules": changed["attention"]}

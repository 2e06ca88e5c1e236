"""AdamW with parameter groups: weight decay only where it regularises (matrices), not
on biases, norms and position/class embeddings."""
from __future__ import annotations

from typing import Any

from fmctl.config.schema import OptimConfig
from fmctl.models.groups import no_weight_decay


def parameter_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    exempt = no_weight_decay(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name in exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "group": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "group": "no_decay"}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: Any, cfg: OptimConfig, device_type: str) -> Any:
    import torch

    fused = cfg.fused
    if fused is None:  # the fused kernel exists for CPU and CUDA in the torch versions we support
        fused = device_type in ("cpu", "cuda")
    return torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.eps, fused=fused)

"""AdamW with parameter groups: weight decay only where it regularises (matrices), not
on biases, norms and position/class embeddings; optionally layer-wise learning-rate decay
over the backbone's declared layer groups and a separate head learning rate.

Both read the model's structure as its backbone family declares it (fmctl.backbones), so
the optimizer never guesses where the blocks are. On a model made of towers each tower
decays from its own top: its highest block gets layer_decay^1 whatever the other tower's
depth, and head_lr_mult applies to the composed model's own head."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from fmctl.backbones.structure import block_groups, by_tower
from fmctl.config.schema import OptimConfig

if TYPE_CHECKING:
    from fmctl.backbones.structure import Structure
    from fmctl.backbones.composed import Towers


def lr_scales(model: Any, structure: Structure | Towers, layer_decay: float | None,
              head_lr_mult: float) -> dict[str, float]:
    """Parameter name -> multiplier of optim.lr. With n blocks (in the parameter's tower),
    block i gets layer_decay^(n - i), the embeddings layer_decay^(n + 1), the final norm
    and the head 1 (times head_lr_mult for the model's own head)."""
    decay = layer_decay or 1.0
    scales = {}
    for tower, groups in by_tower(structure.groups(model)).items():
        blocks = len(block_groups(groups))
        for group, names in groups.items():
            if group == "embeddings":
                depth = 0
            elif group.startswith("blocks."):
                depth = int(group.split(".")[1]) + 1
            else:
                depth = blocks + 1
            scale = decay ** (blocks + 1 - depth) * (head_lr_mult if group == "head" and not tower else 1.0)
            for name in names:
                scales[name] = scale
    return scales


def parameter_groups(model: Any, structure: Structure | Towers, weight_decay: float, lr: float | None = None,
                     layer_decay: float | None = None, head_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    exempt = structure.no_decay
    if (layer_decay not in (None, 1.0) or head_lr_mult != 1.0) and lr is not None:
        scales = lr_scales(model, structure, layer_decay, head_lr_mult)
        by_key: dict[tuple[bool, float], dict[str, Any]] = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            decays = name not in exempt
            scale = scales.get(name, 1.0)
            group = by_key.setdefault((decays, scale), {
                "params": [], "weight_decay": weight_decay if decays else 0.0, "lr": lr * scale,
                "group": f"{'decay' if decays else 'no_decay'}@{scale:.4g}"})
            group["params"].append(param)
        # The group at optim.lr first: the loop logs the first group's learning rate.
        return sorted(by_key.values(), key=lambda g: abs(math.log(g["lr"] / lr)))
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name in exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "group": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "group": "no_decay"}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: Any, cfg: OptimConfig, device_type: str, backbone: str) -> Any:
    """AdamW over `model`, whose structure the family called `backbone` declares."""
    import torch

    from fmctl.backbones import structure_of

    fused = cfg.fused
    if fused is None:  # the fused kernel exists for CPU and CUDA in the torch versions we support
        fused = device_type in ("cpu", "cuda")
    groups = parameter_groups(model, structure_of(model, backbone), cfg.weight_decay, cfg.lr, cfg.layer_decay,
                              cfg.head_lr_mult)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.eps, fused=fused)


_HYPERPARAMETERS = ("initial_lr", "weight_decay", "betas", "eps")


def configured_hyperparameters(optimizer: Any) -> list[dict[str, Any]]:
    """Each group's settings as this run's config made them (before a checkpoint is loaded)."""
    return [{k: group[k] for k in _HYPERPARAMETERS if k in group} for group in optimizer.param_groups]


def apply_configured_hyperparameters(optimizer: Any, scheduler: Any, configured: list[dict[str, Any]]) -> None:
    """Why: a checkpoint's optimizer and scheduler state carry the learning rate, weight
    decay and betas the run started with, so `optim.lr=...` given on resume (what the
    non-finite-loss message advises) would be silently ignored. The moments and step
    counts stay the checkpoint's; the settings become the config's. With an unchanged
    config this restores exactly the values the checkpoint held."""
    for group, settings in zip(optimizer.param_groups, configured):
        group.update(settings)
    scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]

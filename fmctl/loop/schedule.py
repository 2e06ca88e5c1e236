"""Learning-rate schedules with linear warm-up, as a multiplier of optim.lr per step."""
from __future__ import annotations

import math
from typing import Any, Callable

from fmctl.config.schema import SchedConfig


def warmup_steps(cfg: SchedConfig, total_steps: int) -> int:
    if cfg.warmup_steps is not None:
        return min(cfg.warmup_steps, total_steps)
    return int(cfg.warmup_ratio * total_steps)


def lr_multiplier(cfg: SchedConfig, total_steps: int) -> Callable[[int], float]:
    warm = warmup_steps(cfg, total_steps)
    floor = cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if cfg.name == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if cfg.name == "linear":
            return floor + (1.0 - floor) * (1.0 - progress)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: Any, cfg: SchedConfig, total_steps: int) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg, total_steps))

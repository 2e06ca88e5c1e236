"""Device and mixed-precision choice: autocast contexts and the fp16 grad scaler."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from fmctl.errors import ConfigError

        raise ConfigError("trainer.device: 'cuda' asked for but no CUDA device is visible; use trainer.device=cpu")
    return name


def cpu_has_bf16() -> bool:
    """bf16 matmuls are native (not emulated) with AVX512-BF16 or AMX."""
    from fmctl import cpu

    return cpu.has_bf16()


def resolve_precision(name: str, device: str) -> str:
    import torch

    if name != "auto":
        return name
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


@dataclass
class Precision:
    name: str
    device: str

    def autocast(self) -> Any:
        import torch

        if self.name == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.name == "bf16" else torch.float16
        return torch.autocast(device_type=self.device, dtype=dtype)

    def scaler(self) -> Any:
        """A grad scaler for fp16 (its range is too small for raw gradients); None otherwise."""
        import torch

        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(self.device)

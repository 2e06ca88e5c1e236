"""Fused Triton kernels for the loss and normalisation hot spots of training on GPUs.

`trainer.kernels=auto` uses them on CUDA when Triton is importable and the plain PyTorch
path everywhere else; `triton` insists (and on a CPU runs Triton's interpreter, for
tests, when TRITON_INTERPRET=1); `torch` never uses them. The choice is logged and kept
in the run's manifest.
"""
from __future__ import annotations

import importlib.util
import os

from fmctl.errors import ConfigError


def interpreting() -> bool:
    """Triton's CPU interpreter (set before triton is imported); slow, for correctness tests."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def choose(kind: str, device: str) -> str:
    """'triton' or 'torch' for this device."""
    available = importlib.util.find_spec("triton") is not None
    usable = available and (device == "cuda" or interpreting())
    if kind == "torch":
        return "torch"
    if kind == "triton":
        if not usable:
            raise ConfigError("trainer.kernels: 'triton' needs the triton package and a CUDA device (or "
                              "TRITON_INTERPRET=1 to run the kernels slowly on the CPU); use trainer.kernels=auto")
        return "triton"
    return "triton" if usable and device == "cuda" else "torch"

"""TorchScript by tracing: the model as a self-contained `torch.jit.load`-able file."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence


def trace(module: Any, example: Sequence[Any], path: Path) -> dict[str, Any]:
    """Trace `module(*example)` and save it. Tracing records the operations one example
    runs, so the parity check that follows, on other real batches (other batch sizes and
    sequence lengths), is what shows the trace generalises."""
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings; the parity check decides
        traced = torch.jit.trace(module, tuple(example), check_trace=False, strict=False)
        traced = torch.jit.freeze(traced.eval())
        torch.jit.save(traced, str(path))
    return {"method": "torch.jit.trace + torch.jit.freeze", "torch_version": torch.__version__}


def load(path: Path) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()

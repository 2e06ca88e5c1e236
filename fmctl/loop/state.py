"""What a checkpoint must hold for a resumed run to be indistinguishable from one that
was never interrupted: the loop's counters and accumulators, and every RNG state.

Everything is stored as tensors, numbers, strings and plain containers, so the file
loads with `torch.load(weights_only=True)` and never needs to run pickled code.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fmctl.errors import RunFolderError


@dataclass
class Progress:
    step: int = 0                   # optimizer steps taken
    epoch: int = 0
    batches_into_epoch: int = 0     # micro-batches of `epoch` consumed (always at a step boundary)
    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    stale_evals: int = 0
    last_eval_step: int = -1
    running_loss: float = 0.0       # sum of step losses since the last log line
    running_count: int = 0
    nonfinite_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Progress":
        return cls(**values)


def capture_rng() -> dict[str, Any]:
    import numpy as np
    import torch

    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state(path: Path) -> dict[str, Any]:
    """Read state.pt without executing pickled code."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RunFolderError(f"{path}: refused to load: it holds objects that need arbitrary code to unpickle "
                             f"(fmctl loads only tensors and plain containers; {str(exc).splitlines()[0][:120]})") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise RunFolderError(f"{path}: unreadable checkpoint state ({' '.join(str(exc).split())[:160]}); "
                             f"resume from an earlier checkpoint with trainer.resume=PATH") from None

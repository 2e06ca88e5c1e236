"""Checkpoints of FSDP-sharded training with torch.distributed.checkpoint (DCP).

Each rank writes its own shards of the weights and optimizer state; DCP stores them with
their global layout, so a run saved by N processes resumes on M (one included). Weights
for model/ and checkpoints/best are gathered into one full state dict on rank 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl.loop import distributed
from fmctl.loop.distributed import Dist


def save_sharded(folder: Any, d: Dist, name: str, model: Any, optimizer: Any, state: dict[str, Any],
                 info: dict[str, Any]) -> str | None:
    """Every rank calls this at the same step; rank 0 owns the folder and finishes it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tmp = folder.begin_checkpoint(name) if folder is not None else None
    tmp = distributed.broadcast(d, str(tmp) if tmp else None)
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(Path(tmp) / "dcp"))
    distributed.barrier(d)
    if folder is None:
        return None
    return str(folder.finish_checkpoint(Path(tmp), name, state, info))


def load_sharded(path: str, model: Any, optimizer: Any) -> None:
    """Read a DCP checkpoint into this (sharded or plain) model and optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    target = {"model": model_state, "optim": optim_state}
    dcp.load(target, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=target["model"], optim_state_dict=target["optim"])


def full_state_dict(model: Any) -> dict[str, Any] | None:
    """Unsharded weights on rank 0's CPU (None elsewhere); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state or None


def save_full_weights(folder: Any, name: str, model: Any, info: dict[str, Any]) -> None:
    """checkpoints/<name>/model.safetensors from the gathered weights (rank 0 writes)."""
    from safetensors.torch import save_file

    state = full_state_dict(model)
    if folder is None:
        return
    tmp = folder.begin_checkpoint(name)
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(tmp / "model.safetensors"))
    folder.finish_checkpoint(tmp, name, None, info)

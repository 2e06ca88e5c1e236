"""Checkpointing: the full training state under checkpoints/step_N, the best model's
weights under checkpoints/best, and FSDP's gathered final weights.

Every rank calls these at the same step (the running loss is averaged over ranks, and
FSDP saves are collectives); only rank 0 has a run folder and writes. The folder's own
saves are atomic, so a process killed mid-save leaves the previous checkpoint intact.
"""
from __future__ import annotations

from typing import Any

from fmctl.checkpoint import RunFolder
from fmctl.loop.reporting import RunningLoss
from fmctl.loop.setup import Parts
from fmctl.loop.state import Progress, capture_rng


class Checkpointer:
    """Writes what the loop's counters and parts hold; decides nothing about when."""

    def __init__(self, parts: Parts, folder: RunFolder | None, progress: Progress, running: RunningLoss):
        self.parts = parts
        self.folder = folder
        self.progress = progress
        self.running = running

    def state(self) -> dict[str, Any]:
        """The training state for exact resume (see fmctl.loop.state)."""
        p = self.parts
        state = {"scheduler": p.scheduler.state_dict(), "scaler": p.scaler.state_dict() if p.scaler else None,
                 "progress": self.progress.to_dict(), "sampler": p.sampler.state_dict(), "rng": capture_rng(),
                 "world_size": p.dist.world_size, "strategy": p.trainer.strategy if p.dist.enabled else "single"}
        if not p.sharded:  # FSDP keeps the optimizer in the sharded dcp/ folder
            state["optimizer"] = p.optimizer.state_dict()
        if p.ema is not None:
            state["ema"] = p.ema.state_dict()
        return state

    def save(self) -> str | None:
        """checkpoints/step_N with the weights and training state; older ones beyond
        trainer.keep_last are pruned. Returns its path on rank 0, None elsewhere."""
        self.running.store()
        progress, folder, p = self.progress, self.folder, self.parts
        name, info = f"step_{progress.step:08d}", {"step": progress.step, "epoch": progress.epoch}
        if p.sharded:
            from fmctl.loop.sharded import save_sharded

            path = save_sharded(folder, p.dist, name, p.model, p.optimizer, self.state() if folder else {}, info)
        elif folder is not None:
            path = str(folder.save_checkpoint(name, p.model, self.state(), info))
        else:
            return None
        if folder is not None:
            folder.prune_checkpoints(p.trainer.keep_last)
        return path

    def save_weights(self, name: str, info: dict[str, Any]) -> None:
        """checkpoints/<name> with the model's weights only (best, or FSDP's final)."""
        if self.parts.sharded:
            from fmctl.loop.sharded import save_full_weights

            save_full_weights(self.folder, name, self.parts.model, info)
        elif self.folder:
            self.folder.save_checkpoint(name, self.parts.model, None, info)

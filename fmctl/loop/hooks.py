"""What a caller may run inside fit() without fit() knowing why.

The loop calls these at fixed points of every micro-batch; the defaults do nothing, so a
caller overrides only what it needs. The reliability tests' fault injection
(fmctl.loop.faults.Faults) is the one user: it kills the process at a chosen micro-batch
and turns chosen losses into NaN, from outside the loop.
"""
from __future__ import annotations

from typing import Any, Protocol


class LoopHooks(Protocol):
    """Subclass it and override what you need; pass an instance as fit(..., hooks=...)."""

    def on_batch(self, step: int, micro: int) -> None:
        """Before a training micro-batch is used: `step` optimizer steps are done and
        `micro` micro-batches of the next one have been accumulated."""
        return None

    def on_loss(self, loss: Any, attempt: int) -> Any:
        """The micro-batch's loss, before backward; returns the loss to use. `attempt` is
        the 1-based count of optimizer-step attempts, skipped (non-finite) ones included."""
        return loss


class NoHooks(LoopHooks):
    """The default: every hook does nothing."""

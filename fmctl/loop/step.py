"""The step: the only code in the loop that runs the model in training.

A step is `grad_accum` micro-steps (forward, loss, backward, with gradients synchronised
across ranks only on the last) and one update (unscale, clip, the finiteness check,
optimizer, EMA, schedule). The finiteness check is the one host synchronisation per
optimizer step; under torch.distributed it is one all-reduce that also carries every
rank's stop request, so all ranks skip, stop or go on together.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from fmctl.loop import distributed
from fmctl.loop.hooks import LoopHooks
from fmctl.loop.setup import Parts


class Stepper:
    """Forward, loss and backward per micro-batch; clip and update per step."""

    def __init__(self, parts: Parts, task: Any, hooks: LoopHooks, loss_hook: Any = None):
        self.parts = parts
        self.task = task
        self.hooks = hooks
        self.loss_hook = loss_hook   # loss_hook(loss, outputs, batch) -> loss (distillation)
        self.grad_norm: Any = None   # the last applied step's gradient norm (with trainer.grad_clip)
        self.stop_vote = False       # any rank asked to stop (torch.distributed only)

    def micro_step(self, batch: dict[str, Any], last_micro: bool, attempt: int) -> Any:
        """Forward, loss and backward of one micro-batch; the loss, detached. Gradients are
        all-reduced (DDP) or reduce-scattered (FSDP) only on the step's last micro-batch."""
        p = self.parts
        with self._gradient_sync(last_micro):
            with p.precision.autocast(), p.masks:
                outputs = p.train_forward(batch)
                loss = self.task.loss(outputs, batch)
                if self.loss_hook is not None:
                    loss = self.loss_hook(loss, outputs, batch)
            loss = self.hooks.on_loss(loss, attempt)
            scaled = loss / p.trainer.grad_accum
            (p.scaler.scale(scaled) if p.scaler else scaled).backward()
        return loss.detach()

    def _gradient_sync(self, last_micro: bool) -> Any:
        p = self.parts
        if p.ddp:
            return contextlib.nullcontext() if last_micro else p.net.no_sync()  # one all-reduce per step
        if p.sharded:
            p.net.set_requires_gradient_sync(last_micro)
        return contextlib.nullcontext()

    def update(self, step_loss: Any, stop_requested: bool) -> bool:
        """Clip and step; False (update skipped, gradients dropped) when the step's loss or
        gradient norm is not finite on any rank."""
        p = self.parts
        if p.scaler:
            p.scaler.unscale_(p.optimizer)
        norm = self._clip()
        check = step_loss if norm is None or p.scaler else step_loss + norm  # fp16 overflow is the scaler's job
        if self._any_nonfinite(check, stop_requested):
            p.optimizer.zero_grad(set_to_none=True)
            if p.scaler:
                p.scaler.update()
            return False
        self.grad_norm = norm
        if p.scaler:
            p.scaler.step(p.optimizer)
            p.scaler.update()
        else:
            p.optimizer.step()
        if p.ema is not None:
            p.ema.update()
        p.scheduler.step()
        p.optimizer.zero_grad(set_to_none=True)
        return True

    def _clip(self) -> Any:
        clip = self.parts.trainer.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.parts.model.parameters(), clip) if clip else None
        if norm is not None and hasattr(norm, "full_tensor"):  # a DTensor under FSDP
            norm = norm.full_tensor()
        return norm

    def _any_nonfinite(self, check: Any, stop_requested: bool) -> bool:
        d = self.parts.dist
        if not d.enabled:
            return not bool(torch.isfinite(check))  # the one host sync per optimizer step
        # Every rank must take the same decision, and learn of a stop request.
        flags = torch.stack([(~torch.isfinite(check)).float(),
                             torch.tensor(float(stop_requested), device=check.device)])
        distributed.all_reduce_sum(d, flags)
        self.stop_vote = bool(flags[1] > 0)
        return bool(flags[0] > 0)

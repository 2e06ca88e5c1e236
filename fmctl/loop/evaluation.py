"""Batches in, metrics out: the loaders, the device move, the module DDP/FSDP wrap, one
evaluation pass, and fit()'s evaluation phase around it. fit() and the verbs that score
a model (pipeline, customize's report) share `evaluate`, so evaluation during training
and `fmctl eval` compute alike.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch

from fmctl.loop.eval_progress import EvalProgress, batch_size
from fmctl.loop.precision import Precision
from fmctl.loop.preemption import ignore_signals_in_worker
from fmctl.tasks.base import Task

if TYPE_CHECKING:  # the evaluation phase's collaborators import this module themselves
    from fmctl.loop.best import BestTracker
    from fmctl.loop.checkpointing import Checkpointer
    from fmctl.loop.reporting import Reporter
    from fmctl.loop.setup import Parts
    from fmctl.loop.state import Progress


def make_loader(dataset: Any, batch_size: int, collate: Any, sampler: Any = None, num_workers: int = 0,
                pin_memory: bool = False, drop_last: bool = False, generator: Any = None) -> Any:
    """A DataLoader with its own generator, so creating an iterator never draws from the
    global RNG that dropout uses (which would make resumed runs diverge)."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, collate_fn=collate,
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False,
                      drop_last=drop_last, generator=generator if generator is not None else torch.Generator(),
                      worker_init_fn=ignore_signals_in_worker if num_workers else None)


def move(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """The batch's tensors on `device` (non-blocking: pinned host memory overlaps the copy)."""
    return {k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v) for k, v in batch.items()}


class TaskForward(torch.nn.Module):
    """Calls task.forward(model, batch) as a module's forward, so that DDP and FSDP see
    every forward pass even when a task reaches into submodules (the MLM head)."""

    def __init__(self, model: Any, task: Any, fused: bool = False):
        super().__init__()
        self.model = model
        self.task = task
        self.fused = fused   # trainer.kernels=triton: the task's fused loss in training, where it has one

    def forward(self, batch: dict[str, Any]) -> Any:
        if self.fused and self.model.training:
            outputs = self.task.fused_forward(self.model, batch)
            if outputs is not None:
                return outputs
        return self.task.forward(self.model, batch)


def evaluate(model: Any, task: Any, loader: Any, device: str, precision: Precision, forward: Any = None,
             metrics: Any = None, progress: Any = None) -> Any:
    """One pass over `loader`; returns the metrics accumulator (`metrics`, else the task's
    new_metrics()). `forward` (a wrapped TaskForward) replaces task.forward(model, batch)
    under DDP/FSDP; `progress` (an EvalProgress) hears of every batch."""
    metrics = metrics if metrics is not None else task.new_metrics()
    was_training = model.training
    model.eval()
    if type(task).eval_forward is not Task.eval_forward:  # tasks that generate at evaluation call the plain model
        forward = lambda batch: task.eval_forward(model, batch)  # noqa: E731
    elif forward is None:
        forward = lambda batch: task.forward(model, batch)  # noqa: E731
    with torch.inference_mode(), precision.autocast():
        for batch in loader:
            batch.pop("num_tokens", None)
            batch = move(batch, device)
            outputs = forward(batch)
            loss = task.loss(outputs, batch) if task.has_targets(batch) else None
            metrics.update(outputs, batch, loss)
            if progress is not None:
                progress.advance(batch_size(batch))
    model.train(was_training)
    return metrics


class Evaluator:
    """The evaluation phase of fit(): score the validation set (with the averaged weights
    under EMA), log it, track the best model and save its weights, and write the training
    state when trainer.checkpoint_every leaves that to evaluations."""

    def __init__(self, parts: "Parts", task: Any, progress: "Progress", best: "BestTracker", saver: "Checkpointer",
                 report: "Reporter"):
        self.parts = parts
        self.task = task
        self.progress = progress
        self.best = best
        self.saver = saver
        self.report = report

    def __call__(self) -> bool:
        """Evaluate at the current step; True when early stopping says stop."""
        p, progress = self.parts, self.progress
        progress.last_eval_step = progress.step
        if p.eval_loader is None:
            return False
        with p.ema.applied(p.model) if p.ema is not None else contextlib.nullcontext():
            stop = self._score_and_track()
        if p.trainer.checkpoint_every is None:
            self.saver.save()
        return stop

    def _score_and_track(self) -> bool:
        # Every rank scores the whole validation set (identical numbers, so identical
        # best-model and early-stopping decisions without another collective).
        p, progress = self.parts, self.progress
        display = self.report.display
        with EvalProgress(len(p.eval_loader), display.console, display.mode, "validation", display) as shown:
            scored = evaluate(p.model, self.task, p.eval_loader, p.device, p.precision,
                              forward=p.net if p.dist.enabled else None, progress=shown)
        values = {f"val/{k}": v for k, v in scored.compute().items()}
        values["epoch"] = round(progress.step / p.steps_per_epoch, 4)
        progress.last_metrics = values
        self.report.eval(values)
        if self.best.update(values):
            self.saver.save_weights("best", self.best.info())
        return self.best.should_stop

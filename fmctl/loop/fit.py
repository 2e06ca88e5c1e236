"""fit(): the one training loop every verb uses.

It knows nothing about tasks beyond the contract (forward, loss, new_metrics): batches
go in, the task turns them into a loss, and the loop owns everything else. It reads as
its phases, each in a module of its own: set-up and restore (setup.py), the step
(step.py), logging (reporting.py, throughput.py), evaluation with best-model tracking
(evaluation.py, best.py) and checkpointing (checkpointing.py). The one host
synchronisation per optimizer step is the finiteness check of that step's loss;
everything else stays on the device until a logging step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from fmctl.checkpoint import RunFolder
from fmctl.config.schema import RunConfig, TrainerConfig
from fmctl.errors import FmctlError
from fmctl.loop.best import BestTracker, monitored
from fmctl.loop.checkpointing import Checkpointer
from fmctl.loop.distributed import Dist
from fmctl.loop.evaluation import Evaluator, TaskForward, evaluate, make_loader, move
from fmctl.loop.hooks import LoopHooks, NoHooks
from fmctl.loop.preemption import PREEMPTED_EXIT, StopRequest
from fmctl.loop.reporting import Reporter, RunningLoss
from fmctl.loop.setup import (Parts, begin_epoch, build, describe, enable_gradient_checkpointing, restore,
                              seed_everything)
from fmctl.loop.state import Progress
from fmctl.loop.step import Stepper
from fmctl.loop.throughput import Throughput

# Imported from here by the verbs and the tests; they live in the phase modules.
__all__ = ["FitResult", "NonFiniteLoss", "Preempted", "TaskForward", "enable_gradient_checkpointing", "evaluate",
           "fit", "make_loader", "move", "seed_everything"]


class Preempted(FmctlError):
    """Training stopped on request after writing a checkpoint; resume with trainer.resume=auto."""

    exit_code = PREEMPTED_EXIT


class NonFiniteLoss(FmctlError):
    """The loss stopped being a number; the last good state is checkpointed."""


@dataclass
class FitResult:
    steps: int
    epochs: float
    best_step: int | None
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    precision: str
    device: str
    kernels: str = "torch"
    dropout_masks: str = "torch"
    stopped_early: bool = False
    nonfinite_skipped: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def fit(model: Any, task: Any, data: Any, run: RunConfig, folder: RunFolder | None, console: Any,
        resume: dict[str, Any] | None = None, dist: Dist | None = None, loss_hook: Any = None,
        hooks: LoopHooks | None = None) -> FitResult:
    """Train `model` on data.train; `resume` is a checkpoint's state (see fmctl.loop.state).
    Under torchrun every rank calls fit; only rank 0 has a `folder` to write.
    `loss_hook(loss, outputs, batch) -> loss` adds to the training loss (distillation); it
    runs under the same autocast as the forward pass. Evaluation reports the task's loss.
    `hooks` (fmctl.loop.hooks.LoopHooks) run at fixed points of every micro-batch; the
    reliability tests' fault injection comes in this way (fmctl.loop.faults)."""
    trainer = run.trainer
    hooks = hooks if hooks is not None else NoHooks()
    # ---- set-up: device, precision, kernels, wrapped net, data order, optimizer, EMA ----
    parts = build(model, task, data, run, dist or Dist())
    # ---- restore: a checkpoint's optimizer, schedule, counters and RNG states ----------
    progress = restore(parts, resume) if resume is not None else Progress()
    best = BestTracker(progress, *monitored(task, trainer), patience=trainer.early_stopping_patience)
    report = Reporter(parts, run, folder, console, progress, resumed=resume is not None)
    report.message(describe(parts, task, progress.step if resume is not None else None))
    window = Throughput.measured(task.flops_per_token(model, run.data.max_length), parts.device,
                                 parts.precision.name)
    if window.flops_per_token:  # pretraining tasks report model FLOPs utilisation
        report.message(window.describe(parts.precision.name))
    running = RunningLoss(progress, parts.dist, parts.device)
    saver = Checkpointer(parts, folder, progress, running)
    evaluate_now = Evaluator(parts, task, progress, best, saver, report)
    stepper = Stepper(parts, task, hooks, loss_hook)
    report.start_clock()

    stopped_early = False
    parts.optimizer.zero_grad(set_to_none=True)
    done = progress.step >= parts.total_steps
    with StopRequest() as stop:
        while not done:
            begin_epoch(parts, data, progress)
            micro, step_loss = 0, torch.zeros((), device=parts.device)
            for batch in parts.train_loader:
                # ---- the step: micro-batches accumulate, the last one updates ----------
                hooks.on_batch(progress.step, micro)
                num_tokens = batch.pop("num_tokens", 0)
                batch = move(batch, parts.device)
                last_micro = (micro + 1 >= trainer.grad_accum
                              or progress.batches_into_epoch + 1 >= parts.batches_per_epoch)
                attempt = progress.step + progress.nonfinite_skipped + 1
                step_loss += stepper.micro_step(batch, last_micro, attempt)
                window.count(int(next(iter(batch.values())).shape[0]), num_tokens)
                micro += 1
                progress.batches_into_epoch += 1
                if not last_micro:
                    continue
                stepped = stepper.update(step_loss, bool(stop.requested))
                if stepped:
                    running.add(step_loss / micro)
                    progress.step += 1
                micro, step_loss = 0, torch.zeros((), device=parts.device)
                if not stepped:
                    _skip_nonfinite(progress, trainer, report, saver)
                    _preempt_if_asked(_stop_signal(parts, stepper, stop), progress, saver, report, folder)
                    continue
                # ---- logging --------------------------------------------------------------
                report.step(report.train(running, window, stepper.grad_norm) if report.due() else None)
                # ---- evaluation (best model, early stopping) and checkpointing ------------
                paused = False
                if trainer.eval_every and progress.step % trainer.eval_every == 0 \
                        and progress.last_eval_step != progress.step:
                    paused = True
                    if evaluate_now():
                        stopped_early = done = True
                if trainer.checkpoint_every and progress.step % trainer.checkpoint_every == 0:
                    paused = True
                    saver.save()
                _preempt_if_asked(_stop_signal(parts, stepper, stop), progress, saver, report, folder)
                if paused:  # throughput counts training time only
                    window.reset()
                if progress.step >= parts.total_steps or done:
                    done = True
                    break
            if not done:
                progress.epoch += 1
                progress.batches_into_epoch = 0
                if trainer.eval_every is None:
                    if evaluate_now():
                        stopped_early = done = True
                    window.reset()
    # ---- the end: a last evaluation, the weights model/ will receive -------------------
    if progress.last_eval_step != progress.step:
        evaluate_now()
    if parts.ema is not None:
        parts.ema.copy_to(model)  # model/ gets the averaged weights when no best checkpoint is kept
    if parts.sharded and progress.best_step is None:  # model/ needs unsharded weights
        saver.save_weights("final", {"step": progress.step})
    report.close()
    if stopped_early:
        report.message(f"early stopping after {trainer.early_stopping_patience} evaluations without improvement "
                       f"of {best.metric}")
    return FitResult(steps=progress.step, epochs=round(progress.step / parts.steps_per_epoch, 4),
                     best_step=progress.best_step, best_metrics=progress.best_metrics,
                     last_metrics=progress.last_metrics, precision=parts.precision.name, device=parts.device,
                     kernels=parts.kernels, dropout_masks=parts.masks_name, stopped_early=stopped_early,
                     nonfinite_skipped=progress.nonfinite_skipped,
                     train_seconds=time.perf_counter() - report.started, history=report.history)


def _skip_nonfinite(progress: Progress, trainer: TrainerConfig, report: Reporter, saver: Checkpointer) -> None:
    """Count a step whose update was skipped; stop (with a checkpoint of the last good
    state) when trainer.on_nonfinite=stop or past trainer.max_nonfinite_skips."""
    step = progress.step + 1
    progress.nonfinite_skipped += 1
    report.nonfinite(trainer.on_nonfinite)
    limit_hit = progress.nonfinite_skipped > trainer.max_nonfinite_skips
    if trainer.on_nonfinite == "stop" or limit_hit:
        where = saver.save()
        reason = (f"non-finite loss at step {step}" if trainer.on_nonfinite == "stop" else
                  f"{progress.nonfinite_skipped} steps with a non-finite loss (trainer.max_nonfinite_skips="
                  f"{trainer.max_nonfinite_skips}), the last at step {step}")
        raise NonFiniteLoss(f"{reason}; last good checkpoint: {where}; lower optim.lr or check the data, then "
                            f"resume with trainer.resume=auto")
    report.message(f"step {step}: non-finite loss, update skipped ({progress.nonfinite_skipped} so far)")


def _stop_signal(parts: Parts, stepper: Stepper, stop: StopRequest) -> str | None:
    """The stop request this process acts on: its own signal, or under torch.distributed
    any rank's (voted in the step's all-reduce, so every rank stops at the same step)."""
    if parts.dist.enabled:
        return "SIGTERM" if stepper.stop_vote else None
    return stop.requested


def _preempt_if_asked(signal_name: str | None, progress: Progress, saver: Checkpointer, report: Reporter,
                      folder: RunFolder | None) -> None:
    """On a stop request: checkpoint, close the logs and raise Preempted."""
    if not signal_name:
        return
    where = saver.save()
    report.close()
    raise Preempted(f"stopped by {signal_name} at step {progress.step}; checkpoint {where}; continue with the "
                    f"same command plus trainer.resume=auto run_dir={folder.path if folder else '...'}")

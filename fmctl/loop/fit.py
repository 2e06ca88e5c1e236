"""fit(): the one training loop every verb uses.

It knows nothing about tasks beyond the contract (forward, loss, new_metrics): batches
go in, the task turns them into a loss, and the loop owns everything else — precision,
accumulation, clipping, schedule, evaluation, best-model tracking, checkpoints, exact
resume, preemption, non-finite guards, logs. The one host synchronisation per optimizer
step is the finiteness check of that step's loss; everything else stays on the device
until a logging step.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from fmctl.checkpoint import RunFolder
from fmctl.config.schema import RunConfig
from fmctl.errors import FmctlError
from fmctl.loop import distributed
from fmctl.loop.best import BestTracker, monitored
from fmctl.loop.distributed import Dist
from fmctl.loop.dropout_masks import dropout_masks, resolve_dropout_masks
from fmctl.loop.hooks import LoopHooks, NoHooks
from fmctl.loop.optim import apply_configured_hyperparameters, build_optimizer, configured_hyperparameters
from fmctl.loop.precision import Precision, pick_device, resolve_precision
from fmctl.loop.preemption import PREEMPTED_EXIT, StopRequest, ignore_signals_in_worker
from fmctl.loop.sampler import EpochSampler
from fmctl.loop.schedule import build_scheduler
from fmctl.loop.state import Progress, capture_rng, restore_rng
from fmctl.loop.throughput import Throughput
from fmctl.loop.tracking import Display, MetricsLog
from fmctl.tasks.base import Task


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


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_loader(dataset: Any, batch_size: int, collate: Any, sampler: Any = None, num_workers: int = 0,
                pin_memory: bool = False, drop_last: bool = False, generator: Any = None) -> Any:
    """A DataLoader with its own generator, so creating an iterator never draws from the
    global RNG that dropout uses (which would make resumed runs diverge)."""
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, collate_fn=collate,
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False,
                      drop_last=drop_last, generator=generator if generator is not None else torch.Generator(),
                      worker_init_fn=ignore_signals_in_worker if num_workers else None)


def enable_gradient_checkpointing(model: Any) -> None:
    """transformers' per-layer checkpointing (non-reentrant, so frozen inputs and LoRA work)
    or timm's; a model with neither is an error rather than a silent no-op."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5 (the older name is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    else:
        from fmctl.errors import ConfigError

        raise ConfigError(f"trainer.gradient_checkpointing: {type(model).__name__} supports no activation "
                          f"checkpointing; set trainer.gradient_checkpointing=false")


def move(batch: dict[str, Any], device: str) -> dict[str, Any]:
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


def evaluate(model: Any, task: Any, loader: Any, device: str, precision: Precision, forward: Any = None) -> Any:
    """One pass over `loader`; returns the task's metrics accumulator. `forward` (a
    wrapped TaskForward) replaces task.forward(model, batch) under DDP/FSDP."""
    import torch

    metrics = task.new_metrics()
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
    model.train(was_training)
    return metrics


def fit(model: Any, task: Any, data: Any, run: RunConfig, folder: RunFolder | None, console: Any,
        resume: dict[str, Any] | None = None, dist: Dist | None = None, loss_hook: Any = None,
        hooks: LoopHooks | None = None) -> FitResult:
    """Train `model` on data.train; `resume` is a checkpoint's state (see fmctl.loop.state).
    Under torchrun every rank calls fit; only rank 0 has a `folder` to write.
    `loss_hook(loss, outputs, batch) -> loss` adds to the training loss (distillation); it
    runs under the same autocast as the forward pass. Evaluation reports the task's loss.
    `hooks` (fmctl.loop.hooks.LoopHooks) run at fixed points of every micro-batch; the
    reliability tests' fault injection comes in this way (fmctl.loop.faults)."""
    import torch

    trainer = run.trainer
    d = dist or Dist()
    device = pick_device(trainer.device)
    precision = Precision(resolve_precision(trainer.precision, device), device)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    model.to(device)
    model.train()
    if trainer.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    from fmctl.kernels import choose

    kernels = choose(trainer.kernels, device)
    if kernels == "triton":
        from fmctl.kernels.patch import apply as patch_kernels

        patched = patch_kernels(model)
    masks_name = resolve_dropout_masks(trainer.dropout_masks, device, trainer.gradient_checkpointing, trainer.compile)
    masks = dropout_masks(masks_name)
    net = distributed.wrap(TaskForward(model, task, fused=kernels == "triton"), model, trainer.strategy, d, device)
    # dynamic=True: length-grouped batches change the sequence length every step, and one
    # graph with a symbolic length beats a recompile per length.
    train_forward = torch.compile(net, dynamic=True) if trainer.compile else net
    ddp = d.enabled and trainer.strategy == "ddp"
    sharded = d.enabled and trainer.strategy == "fsdp"
    hooks = hooks if hooks is not None else NoHooks()

    lengths = data.train.lengths() if run.data.group_by_length and hasattr(data.train, "lengths") else None
    sampler = EpochSampler(len(data.train), seed=trainer.seed, rank=d.rank, world_size=d.world_size,
                           lengths=lengths, batch_size=trainer.batch_size)
    loader_rng = torch.Generator()
    pin = device == "cuda"
    train_loader = make_loader(data.train, trainer.batch_size, data.collate, sampler, run.data.num_workers, pin,
                               drop_last=trainer.drop_last, generator=loader_rng)
    eval_loader = None
    if data.validation is not None and len(data.validation):
        eval_loader = make_loader(data.validation, trainer.eval_batch_size or trainer.batch_size * 2, data.collate,
                                  None, run.data.num_workers, pin)
    size = sampler.per_rank
    batches_per_epoch = size // trainer.batch_size if trainer.drop_last else math.ceil(size / trainer.batch_size)
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / trainer.grad_accum))
    total_steps = trainer.max_steps or max(1, math.ceil(trainer.epochs * steps_per_epoch))
    optimizer = build_optimizer(model, run.optim, device)
    scheduler = build_scheduler(optimizer, run.sched, total_steps)
    scaler = precision.scaler()
    ema = None
    if trainer.ema.decay is not None:
        from fmctl.loop.ema import EMA

        ema = EMA(model, trainer.ema.decay)

    progress = Progress()
    if resume is not None:
        configured = configured_hyperparameters(optimizer)
        if "optimizer" in resume:
            if sharded:
                from fmctl.errors import ConfigError

                raise ConfigError("trainer.strategy: this checkpoint was written without FSDP; resume it with "
                                  "trainer.strategy=ddp (or one process)")
            optimizer.load_state_dict(resume["optimizer"])
        else:
            from fmctl.loop.sharded import load_sharded

            load_sharded(resume["dcp"], model, optimizer)  # resharded to this world size
        scheduler.load_state_dict(resume["scheduler"])
        apply_configured_hyperparameters(optimizer, scheduler, configured)
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        progress = Progress.from_dict(resume["progress"])
        restore_rng(resume["rng"])
        if ema is not None and resume.get("ema"):
            ema.load_state_dict(resume["ema"])

    best = BestTracker(progress, *monitored(task, trainer), patience=trainer.early_stopping_patience)
    log = MetricsLog(folder.path if folder else None, resume_step=progress.step if resume is not None else None)
    display = Display(trainer.progress if d.is_main else "off", total_steps, console)
    display.message(f"training {total_steps} steps ({steps_per_epoch}/epoch), batch {trainer.batch_size}"
                    f"×{trainer.grad_accum}, precision {precision.name}, device {device}, kernels {kernels}"
                    + (f" ({patched['layer_norms']} LayerNorms, {patched['bias_gelu']} bias+GELU, fused LM loss: "
                       f"{'yes' if type(task).fused_forward is not Task.fused_forward else 'no'})" if kernels == "triton" else "")
                    + f", dropout masks {masks_name}" + (", torch.compile" if trainer.compile else "")
                    + (f", resumed at step {progress.step}" if resume is not None else ""))

    window = Throughput.measured(task.flops_per_token(model, run.data.max_length), device, precision.name)
    if window.flops_per_token:  # pretraining tasks report model FLOPs utilisation
        display.message(window.describe(precision.name))

    running_loss = torch.tensor(progress.running_loss, dtype=torch.float32, device=device)
    grad_norm = None
    stopped_early = False
    train_start = time.perf_counter()
    history: list[dict[str, Any]] = []

    def checkpoint_state() -> dict[str, Any]:
        state = {"scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                 "progress": progress.to_dict(), "sampler": sampler.state_dict(), "rng": capture_rng(),
                 "world_size": d.world_size, "strategy": trainer.strategy if d.enabled else "single"}
        if not sharded:  # FSDP keeps the optimizer in the sharded dcp/ folder
            state["optimizer"] = optimizer.state_dict()
        if ema is not None:
            state["ema"] = ema.state_dict()
        return state

    def save_state() -> str | None:
        # Every rank arrives here at the same step: store the ranks' mean running loss so a
        # resumed run logs the same averages whatever rank reads the checkpoint.
        shared = distributed.all_reduce_sum(d, running_loss.detach().clone()) / d.world_size
        progress.running_loss = float(shared)
        name, info = f"step_{progress.step:08d}", {"step": progress.step, "epoch": progress.epoch}
        if sharded:
            from fmctl.loop.sharded import save_sharded

            path = save_sharded(folder, d, name, model, optimizer, checkpoint_state() if folder else {}, info)
        elif folder is not None:
            path = str(folder.save_checkpoint(name, model, checkpoint_state(), info))
        else:
            return None
        if folder is not None:
            folder.prune_checkpoints(trainer.keep_last)
        return path

    def do_eval() -> bool:
        """Evaluate (with the averaged weights under EMA), track the best model, write the
        training state; True when early stopping says stop."""
        progress.last_eval_step = progress.step
        if eval_loader is None:
            return False
        with ema.applied(model) if ema is not None else contextlib.nullcontext():
            stop_now = score_and_track()
        if trainer.checkpoint_every is None:
            save_state()
        return stop_now

    def score_and_track() -> bool:
        # Every rank scores the whole validation set (identical numbers, so identical
        # best-model and early-stopping decisions without another collective).
        scored = evaluate(model, task, eval_loader, device, precision, forward=net if d.enabled else None)
        values = {f"val/{k}": v for k, v in scored.compute().items()}
        values["epoch"] = round(progress.step / steps_per_epoch, 4)
        progress.last_metrics = values
        log.write("eval", progress.step, values)
        history.append({"event": "eval", "step": progress.step, **values})
        display.message(f"eval @ step {progress.step}: "
                        + "  ".join(f"{k} {v:.4f}" for k, v in values.items() if k != "epoch"))
        if best.update(values):
            if sharded:
                from fmctl.loop.sharded import save_full_weights

                save_full_weights(folder, "best", model, best.info())
            elif folder:
                folder.save_checkpoint("best", model, None, best.info())
        return best.should_stop

    def apply_step(step_loss: Any) -> bool:
        """Clip and step; False (update skipped) when the loss or gradients are not finite."""
        nonlocal grad_norm
        if scaler:
            scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.grad_clip) if trainer.grad_clip else None
        if norm is not None and hasattr(norm, "full_tensor"):  # a DTensor under FSDP
            norm = norm.full_tensor()
        check = step_loss if norm is None or scaler else step_loss + norm  # fp16 overflow is the scaler's job
        if d.enabled:  # every rank must take the same decision (and learn of a stop request)
            flags = torch.stack([(~torch.isfinite(check)).float(), torch.tensor(float(bool(stop.requested)),
                                                                                 device=check.device)])
            distributed.all_reduce_sum(d, flags)
            stop_votes[0] = bool(flags[1] > 0)
            bad = bool(flags[0] > 0)
        else:
            bad = not bool(torch.isfinite(check))  # the one host sync per optimizer step
        if bad:
            optimizer.zero_grad(set_to_none=True)
            if scaler:
                scaler.update()
            return False
        grad_norm = norm
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if ema is not None:
            ema.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return True

    def on_nonfinite() -> None:
        step = progress.step + 1
        progress.nonfinite_skipped += 1
        log.write("nonfinite", progress.step, {"at_step": step, "skipped_total": progress.nonfinite_skipped,
                                               "action": trainer.on_nonfinite})
        limit_hit = progress.nonfinite_skipped > trainer.max_nonfinite_skips
        if trainer.on_nonfinite == "stop" or limit_hit:
            where = save_state()
            reason = (f"non-finite loss at step {step}" if trainer.on_nonfinite == "stop" else
                      f"{progress.nonfinite_skipped} steps with a non-finite loss (trainer.max_nonfinite_skips="
                      f"{trainer.max_nonfinite_skips}), the last at step {step}")
            raise NonFiniteLoss(f"{reason}; last good checkpoint: {where}; lower optim.lr or check the data, then "
                                f"resume with trainer.resume=auto")
        display.message(f"step {step}: non-finite loss, update skipped ({progress.nonfinite_skipped} so far)")

    def preempt(signal_name: str) -> None:
        where = save_state()
        log.close()
        display.close()
        raise Preempted(f"stopped by {signal_name} at step {progress.step}; checkpoint {where}; continue with the "
                        f"same command plus trainer.resume=auto run_dir={folder.path if folder else '...'}")

    def stop_requested() -> str | None:
        if d.enabled:
            return "SIGTERM" if stop_votes[0] else None
        return stop.requested

    stop_votes = [False]
    optimizer.zero_grad(set_to_none=True)
    done = progress.step >= total_steps
    with StopRequest() as stop:
        while not done:
            sampler.set_epoch(progress.epoch, start=progress.batches_into_epoch * trainer.batch_size)
            if hasattr(data.train, "set_epoch"):  # per-epoch randomness inside examples (MLM masks)
                data.train.set_epoch(progress.epoch)
            loader_rng.manual_seed(trainer.seed * 1_000_003 + progress.epoch)  # workers' seeds, per epoch
            micro = 0
            step_loss = torch.zeros((), device=device)
            for batch in train_loader:
                hooks.on_batch(progress.step, micro)
                num_tokens = batch.pop("num_tokens", 0)
                batch = move(batch, device)
                last_micro = micro + 1 >= trainer.grad_accum or progress.batches_into_epoch + 1 >= batches_per_epoch
                sync = contextlib.nullcontext() if not ddp or last_micro else net.no_sync()  # one all-reduce per step
                if d.enabled and not ddp:
                    net.set_requires_gradient_sync(last_micro)
                with sync:
                    with precision.autocast(), masks:
                        outputs = train_forward(batch)
                        loss = task.loss(outputs, batch)
                        if loss_hook is not None:
                            loss = loss_hook(loss, outputs, batch)
                    loss = hooks.on_loss(loss, progress.step + progress.nonfinite_skipped + 1)
                    scaled = loss / trainer.grad_accum
                    (scaler.scale(scaled) if scaler else scaled).backward()
                step_loss += loss.detach()
                window.count(int(next(iter(batch.values())).shape[0]), num_tokens)
                micro += 1
                progress.batches_into_epoch += 1
                if micro < trainer.grad_accum and progress.batches_into_epoch < batches_per_epoch:
                    continue
                stepped = apply_step(step_loss)
                if stepped:
                    running_loss += step_loss / micro
                    progress.running_count += 1
                    progress.step += 1
                micro = 0
                step_loss = torch.zeros((), device=device)
                if not stepped:
                    on_nonfinite()
                    if stop_requested():
                        preempt(stop_requested())
                    continue
                stats = None
                if progress.running_count and (progress.step % trainer.log_every == 0 or progress.step == total_steps):
                    elapsed = window.elapsed()
                    # Averages over all ranks' examples, throughput summed over ranks.
                    totals = torch.stack([running_loss.detach().clone(),
                                          torch.tensor(float(window.samples), device=device),
                                          torch.tensor(float(window.tokens), device=device)])
                    distributed.all_reduce_sum(d, totals)
                    window.samples, window.tokens = int(totals[1]), int(totals[2])
                    stats = {"epoch": round(progress.step / steps_per_epoch, 4),
                             "loss": (totals[0] / (progress.running_count * d.world_size)).item(),
                             "lr": run.optim.lr * scheduler.lr_lambdas[0](scheduler.last_epoch),
                             "samples_per_s": window.samples_per_s(elapsed),
                             "elapsed_s": time.perf_counter() - train_start}
                    if grad_norm is not None:
                        stats["grad_norm"] = float(grad_norm)
                    if device == "cuda":  # what the step needs at its peak, for sizing batches
                        stats["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
                    stats.update(window.token_rates(elapsed))
                    log.write("train", progress.step, stats)
                    history.append({"event": "train", "step": progress.step, **stats})
                    running_loss.zero_()
                    progress.running_count = 0
                    window.reset()
                display.step(progress.step, stats)
                paused = False
                if trainer.eval_every and progress.step % trainer.eval_every == 0 and progress.last_eval_step != progress.step:
                    paused = True
                    if do_eval():
                        stopped_early = done = True
                if trainer.checkpoint_every and progress.step % trainer.checkpoint_every == 0:
                    paused = True
                    save_state()
                if stop_requested():
                    preempt(stop_requested())
                if paused:  # throughput counts training time only
                    window.reset()
                if progress.step >= total_steps or done:
                    done = True
                    break
            if not done:
                progress.epoch += 1
                progress.batches_into_epoch = 0
                if trainer.eval_every is None:
                    if do_eval():
                        stopped_early = done = True
                    window.reset()
    if progress.last_eval_step != progress.step:
        do_eval()
    if ema is not None:
        ema.copy_to(model)  # model/ gets the averaged weights when no best checkpoint is kept
    if sharded and progress.best_step is None:  # model/ needs unsharded weights
        from fmctl.loop.sharded import save_full_weights

        save_full_weights(folder, "final", model, {"step": progress.step})
    display.close()
    log.close()
    if stopped_early:
        display.message(f"early stopping after {trainer.early_stopping_patience} evaluations without improvement "
                        f"of {best.metric}")
    return FitResult(steps=progress.step, epochs=round(progress.step / steps_per_epoch, 4),
                     best_step=progress.best_step, best_metrics=progress.best_metrics,
                     last_metrics=progress.last_metrics, precision=precision.name, device=device, kernels=kernels,
                     dropout_masks=masks_name, stopped_early=stopped_early, nonfinite_skipped=progress.nonfinite_skipped,
                     train_seconds=time.perf_counter() - train_start, history=history)

"""fit(): the one training loop every verb uses.

It knows nothing about tasks beyond the contract (forward, loss, new_metrics): batches
go in, the task turns them into a loss, and the loop owns everything else — precision,
accumulation, clipping, schedule, evaluation, best-model tracking, checkpoints, logs.
The loss is read back to the host only at logging steps, so the device never waits.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from fmctl.checkpoint import RunFolder
from fmctl.config.schema import RunConfig
from fmctl.loop.optim import build_optimizer
from fmctl.loop.precision import Precision, pick_device, resolve_precision
from fmctl.loop.sampler import EpochSampler
from fmctl.loop.schedule import build_scheduler
from fmctl.loop.tracking import Display, MetricsLog


@dataclass
class FitResult:
    steps: int
    epochs: float
    best_step: int | None
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    precision: str
    device: str
    stopped_early: bool = False
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_loader(dataset: Any, batch_size: int, collate: Any, sampler: Any = None, num_workers: int = 0,
                pin_memory: bool = False) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, collate_fn=collate,
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0,
                      drop_last=False)


def move(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v) for k, v in batch.items()}


def evaluate(model: Any, task: Any, loader: Any, device: str, precision: Precision) -> Any:
    """One pass over `loader`; returns the task's metrics accumulator."""
    import torch

    metrics = task.new_metrics()
    was_training = model.training
    model.eval()
    with torch.inference_mode(), precision.autocast():
        for batch in loader:
            batch.pop("num_tokens", None)
            batch = move(batch, device)
            outputs = task.forward(model, batch)
            loss = task.loss(outputs, batch) if "labels" in batch else None
            metrics.update(outputs, batch, loss)
    model.train(was_training)
    return metrics


def fit(model: Any, task: Any, data: Any, run: RunConfig, folder: RunFolder | None, console: Any) -> FitResult:
    import torch

    trainer = run.trainer
    device = pick_device(trainer.device)
    precision = Precision(resolve_precision(trainer.precision, device), device)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    model.to(device)
    model.train()

    sampler = EpochSampler(len(data.train), seed=trainer.seed)
    pin = device == "cuda"
    train_loader = make_loader(data.train, trainer.batch_size, data.collate, sampler, run.data.num_workers, pin)
    eval_loader = None
    if data.validation is not None and len(data.validation):
        eval_loader = make_loader(data.validation, trainer.eval_batch_size or trainer.batch_size * 2, data.collate,
                                  None, run.data.num_workers, pin)
    steps_per_epoch = max(1, math.ceil(len(train_loader) / trainer.grad_accum))
    total_steps = trainer.max_steps or max(1, math.ceil(trainer.epochs * steps_per_epoch))
    optimizer = build_optimizer(model, run.optim, device)
    scheduler = build_scheduler(optimizer, run.sched, total_steps)
    scaler = precision.scaler()

    monitor = trainer.monitor or f"val/{task.main_metric}"
    mode = trainer.monitor_mode or (task.main_mode if monitor == f"val/{task.main_metric}"
                                    else ("min" if monitor.endswith("loss") else "max"))
    log = MetricsLog(folder.path if folder else None)
    display = Display(trainer.progress, total_steps, console)
    display.message(f"training {total_steps} steps ({steps_per_epoch}/epoch), batch {trainer.batch_size}"
                    f"×{trainer.grad_accum}, precision {precision.name}, device {device}")

    step, epoch, micro = 0, 0, 0
    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, float] = {}
    last_metrics: dict[str, float] = {}
    stale_evals = 0
    stopped_early = False
    last_eval_step = -1
    running_loss = torch.zeros((), device=device)
    running_count = 0
    grad_norm = None
    window = {"samples": 0, "tokens": 0, "start": time.perf_counter()}
    train_start = time.perf_counter()
    history: list[dict[str, Any]] = []

    def do_eval() -> bool:
        """Evaluate, track the best model; True when early stopping says stop."""
        nonlocal best_value, best_step, best_metrics, last_metrics, stale_evals, last_eval_step
        last_eval_step = step
        if eval_loader is None:
            return False
        values = {f"val/{k}": v for k, v in evaluate(model, task, eval_loader, device, precision).compute().items()}
        values["epoch"] = round(step / steps_per_epoch, 4)
        last_metrics = values
        log.write("eval", step, values)
        history.append({"event": "eval", "step": step, **values})
        display.message(f"eval @ step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in values.items() if k != "epoch"))
        current = values.get(monitor)
        if current is None:
            from fmctl.errors import ConfigError

            raise ConfigError(f"trainer.monitor: '{monitor}' is not among the evaluation metrics "
                              f"({', '.join(k for k in values if k != 'epoch')})")
        improved = best_value is None or (current > best_value if mode == "max" else current < best_value)
        if improved:
            best_value, best_step, best_metrics, stale_evals = current, step, values, 0
            if folder:
                folder.save_checkpoint("best", model, None, {"step": step, "monitor": monitor, "value": current})
        else:
            stale_evals += 1
        if folder and trainer.checkpoint_every is None:
            save_state()
        return trainer.early_stopping_patience is not None and stale_evals >= trainer.early_stopping_patience

    def save_state() -> None:
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict() if scaler else None, "step": step, "epoch": epoch,
                 "sampler": sampler.state_dict(), "rng": _rng_state()}
        folder.save_checkpoint(f"step_{step:08d}", model, state, {"step": step, "epoch": epoch})
        folder.prune_checkpoints(trainer.keep_last)

    def optimizer_step() -> None:
        nonlocal grad_norm
        if scaler:
            scaler.unscale_(optimizer)
        if trainer.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    optimizer.zero_grad(set_to_none=True)
    done = False
    while not done:
        sampler.set_epoch(epoch)
        batches_in_epoch = len(train_loader)
        for index, batch in enumerate(train_loader):
            num_tokens = batch.pop("num_tokens", 0)
            batch = move(batch, device)
            with precision.autocast():
                outputs = task.forward(model, batch)
                loss = task.loss(outputs, batch)
            scaled = loss / trainer.grad_accum
            (scaler.scale(scaled) if scaler else scaled).backward()
            running_loss += loss.detach()
            running_count += 1
            window["samples"] += int(batch["labels"].shape[0]) if "labels" in batch else 0
            window["tokens"] += num_tokens
            micro += 1
            if micro % trainer.grad_accum and index + 1 < batches_in_epoch:
                continue
            micro = 0
            optimizer_step()
            step += 1
            stats = None
            if step % trainer.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - window["start"]
                stats = {"epoch": round(step / steps_per_epoch, 4), "loss": (running_loss / running_count).item(),
                         "lr": scheduler.get_last_lr()[0],
                         "samples_per_s": window["samples"] / elapsed, "elapsed_s": time.perf_counter() - train_start}
                if grad_norm is not None:
                    stats["grad_norm"] = float(grad_norm)
                if window["tokens"]:
                    stats["tokens_per_s"] = window["tokens"] / elapsed
                log.write("train", step, stats)
                history.append({"event": "train", "step": step, **stats})
                running_loss.zero_()
                running_count = 0
                window.update(samples=0, tokens=0, start=time.perf_counter())
            display.step(step, stats)
            paused = False
            if trainer.eval_every and step % trainer.eval_every == 0:
                paused = True
                if do_eval():
                    stopped_early, done = True, True
            if folder and trainer.checkpoint_every and step % trainer.checkpoint_every == 0:
                paused = True
                save_state()
            if paused:  # throughput counts training time only
                window.update(samples=0, tokens=0, start=time.perf_counter())
            if step >= total_steps or done:
                done = True
                break
        epoch += 1
        if not done and trainer.eval_every is None:
            if do_eval():
                stopped_early, done = True, True
            window.update(samples=0, tokens=0, start=time.perf_counter())
    if last_eval_step != step:
        do_eval()
    display.close()
    log.close()
    if stopped_early:
        display.message(f"early stopping after {trainer.early_stopping_patience} evaluations without improvement "
                        f"of {monitor}")
    return FitResult(steps=step, epochs=round(step / steps_per_epoch, 4), best_step=best_step,
                     best_metrics=best_metrics, last_metrics=last_metrics, precision=precision.name, device=device,
                     stopped_early=stopped_early, train_seconds=time.perf_counter() - train_start, history=history)


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state

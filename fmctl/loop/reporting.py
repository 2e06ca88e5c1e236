"""The logging phase: train/eval/nonfinite events into metrics.jsonl and TensorBoard,
the console line or bar, and the history FitResult returns.

Values stay on the device between log lines; a log step costs one all-reduce (losses
averaged over every rank's examples, throughput summed over ranks) and one host read.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from fmctl.checkpoint import RunFolder
from fmctl.config.schema import RunConfig
from fmctl.loop import distributed
from fmctl.loop.distributed import Dist
from fmctl.loop.setup import Parts
from fmctl.loop.state import Progress
from fmctl.loop.throughput import Throughput
from fmctl.loop.tracking import Display, MetricsLog


class RunningLoss:
    """Sum of optimizer-step losses since the last log line, kept on the device so that
    adding a step's loss costs no host synchronisation; the count is progress's."""

    def __init__(self, progress: Progress, dist: Dist, device: str):
        self.progress = progress
        self.dist = dist
        self.total = torch.tensor(progress.running_loss, dtype=torch.float32, device=device)

    def add(self, step_loss: Any) -> None:
        self.total += step_loss
        self.progress.running_count += 1

    def reset(self) -> None:
        self.total.zero_()
        self.progress.running_count = 0

    def store(self) -> None:
        """progress.running_loss := the ranks' mean, so a resumed run logs the same averages
        whatever rank reads the checkpoint (a collective: every rank calls it)."""
        shared = distributed.all_reduce_sum(self.dist, self.total.detach().clone()) / self.dist.world_size
        self.progress.running_loss = float(shared)


class Reporter:
    """Where the loop's events go. Only rank 0 has a folder and a visible display."""

    def __init__(self, parts: Parts, run: RunConfig, folder: RunFolder | None, console: Any, progress: Progress,
                 resumed: bool):
        self.parts = parts
        self.progress = progress
        self.log_every = run.trainer.log_every
        self.base_lr = run.optim.lr
        # A resumed run drops the events the interrupted one logged after its checkpoint.
        self.log = MetricsLog(folder.path if folder else None, resume_step=progress.step if resumed else None)
        self.display = Display(run.trainer.progress if parts.dist.is_main else "off", parts.total_steps, console,
                               start_step=progress.step if resumed else 0)
        self.history: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    def start_clock(self) -> None:
        """Training starts now: elapsed_s and FitResult.train_seconds count from here."""
        self.started = time.perf_counter()

    def message(self, text: str) -> None:
        self.display.message(text)

    def due(self) -> bool:
        """A train event at every log_every-th step and at the last one (with steps to report)."""
        p = self.progress
        return bool(p.running_count) and (p.step % self.log_every == 0 or p.step == self.parts.total_steps)

    def train(self, running: RunningLoss, window: Throughput, grad_norm: Any) -> dict[str, Any]:
        """Log the window's averages; reset the running loss and the throughput window."""
        p, d, device = self.progress, self.parts.dist, self.parts.device
        elapsed = window.elapsed()
        # Averages over all ranks' examples, throughput summed over ranks.
        totals = torch.stack([running.total.detach().clone(), torch.tensor(float(window.samples), device=device),
                              torch.tensor(float(window.tokens), device=device)])
        distributed.all_reduce_sum(d, totals)
        window.samples, window.tokens = int(totals[1]), int(totals[2])
        scheduler = self.parts.scheduler
        stats = {"epoch": round(p.step / self.parts.steps_per_epoch, 4),
                 "loss": (totals[0] / (p.running_count * d.world_size)).item(),
                 "lr": self.base_lr * scheduler.lr_lambdas[0](scheduler.last_epoch),
                 "samples_per_s": window.samples_per_s(elapsed),
                 "elapsed_s": time.perf_counter() - self.started}
        if grad_norm is not None:
            stats["grad_norm"] = float(grad_norm)
        if device == "cuda":  # what the step needs at its peak, for sizing batches
            stats["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        stats.update(window.token_rates(elapsed))
        if window.note:
            self.display.message(window.note)
            window.note = None
        self.log.write("train", p.step, stats)
        self.history.append({"event": "train", "step": p.step, **stats})
        running.reset()
        window.reset()
        return stats

    def step(self, stats: dict[str, Any] | None) -> None:
        """The progress bar (or log line) after an optimizer step."""
        self.display.step(self.progress.step, stats)

    def eval(self, values: dict[str, float]) -> None:
        step = self.progress.step
        self.log.write("eval", step, values)
        self.history.append({"event": "eval", "step": step, **values})
        self.display.message(f"eval @ step {step}: "
                             + "  ".join(f"{k} {v:.4f}" for k, v in values.items() if k != "epoch"))

    def nonfinite(self, action: str) -> None:
        """A skipped (or fatal) step, counted in progress.nonfinite_skipped already."""
        p = self.progress
        self.log.write("nonfinite", p.step, {"at_step": p.step + 1, "skipped_total": p.nonfinite_skipped,
                                             "action": action})

    def close(self) -> None:
        self.display.close()
        self.log.close()

"""Where the loop's numbers go: metrics.jsonl, TensorBoard, and the console.

Timing fields (throughput, elapsed time, and the CUDA allocator's peak) are listed in
TIMING_KEYS: they are the only values allowed to differ between two runs of the same
config and seed.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

TIMING_KEYS = frozenset({"samples_per_s", "tokens_per_s", "elapsed_s", "step_time_s", "mfu", "peak_memory_mb"})


class MetricsLog:
    """Appends one JSON object per event and mirrors the numbers into TensorBoard."""

    def __init__(self, folder: Path | None, resume_step: int | None = None):
        """With resume_step, events logged after that step by the interrupted process are
        dropped first (they will be logged again), so the file reads as one clean run."""
        self.folder = folder
        self.handle = None
        self.tb = None
        if folder is None:
            return
        path = folder / "metrics.jsonl"
        if resume_step is not None and path.is_file():
            from fmctl.checkpoint import atomic_write_text

            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and _step_of(line) <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        self.handle = open(path, "a", encoding="utf-8")
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None
        self.tb = SummaryWriter(log_dir=str(folder / "tb"), purge_step=purge)

    def write(self, event: str, step: int, values: dict[str, Any]) -> None:
        record = {"event": event, "step": step, **{k: _clean(v) for k, v in values.items()}}
        if self.handle:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
        if self.tb:
            prefix = "train/" if event == "train" else ""
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                    self.tb.add_scalar(f"{prefix}{key}", value, step)

    def close(self) -> None:
        if self.handle:
            self.handle.close()
        if self.tb:
            self.tb.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 10**12  # a torn last line from a killed process: drop it


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return value


class Display:
    """A rich progress bar on a terminal, plain log lines elsewhere (CI logs), or nothing."""

    def __init__(self, mode: str, total_steps: int, console: Any, start_step: int = 0):
        """`start_step`: where a resumed run starts, so the ETA divides the time since then
        by the steps since then (not by every step of the run)."""
        self.console = console
        self.total = total_steps
        self.start_step = start_step
        if mode == "auto":
            mode = "bar" if console.is_terminal else "log"
        self.mode = mode
        self.start = time.perf_counter()
        self.progress = None
        if mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False)
            self.task = self.progress.add_task("train", total=total_steps, completed=start_step, stats="")
            self.progress.start()

    def step(self, step: int, stats: dict[str, Any] | None = None) -> None:
        if stats is not None:
            text = _format_stats(stats)
            if self.progress is not None:
                self.progress.update(self.task, completed=step, stats=text)
            elif self.mode == "log":
                elapsed = time.perf_counter() - self.start
                eta = elapsed / max(step - self.start_step, 1) * (self.total - step)
                self.console.print(f"step {step}/{self.total}  {text}  eta {eta:.0f}s", highlight=False, soft_wrap=True)
        elif self.progress is not None:
            self.progress.update(self.task, completed=step)

    def message(self, text: str) -> None:
        if self.mode != "off":
            self.console.print(text, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _format_stats(stats: dict[str, Any]) -> str:
    parts = []
    for key, label, fmt in (("loss", "loss", "{:.4f}"), ("lr", "lr", "{:.2e}"), ("samples_per_s", "samples/s", "{:.0f}"),
                            ("tokens_per_s", "tokens/s", "{:.0f}"), ("mfu", "MFU", "{:.1%}")):
        if key in stats:
            parts.append(f"{label} {fmt.format(stats[key])}")
    return "  ".join(parts)

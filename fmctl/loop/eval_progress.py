"""Progress of one evaluation pass: examples done, examples/s and the time left.

Why: a 100k-row `fmctl eval` ran for 339 s without a word, and a long validation pass
inside training froze the training bar. On a terminal the pass gets a bar (its own, or
the training bar's stats field while training shows one: rich allows one live display);
in logs (CI, files) a line every LOG_EVERY_S seconds, and none for a pass that ends
sooner; `off` shows nothing.
"""
from __future__ import annotations

import time
from typing import Any

# Seconds between two log lines of a pass (and before the first one).
LOG_EVERY_S = 10.0


class EvalProgress:
    """Call `advance(examples)` after every batch and `close()` at the end."""

    def __init__(self, total_batches: int, console: Any, mode: str, label: str = "eval", display: Any = None):
        """`display`: the training Display whose bar should carry this pass (its stats
        field is borrowed and given back on close)."""
        self.total = max(int(total_batches), 0)
        self.console = console
        self.label = label
        self.batches = 0
        self.examples = 0
        self.started = self.last_line = time.perf_counter()
        if mode == "auto":
            mode = "bar" if console is not None and console.is_terminal else "log"
        self.mode = mode
        self.bar = None
        self.borrowed = None
        self.kept_stats = ""
        if mode == "bar":
            if display is not None and getattr(display, "progress", None) is not None:
                self.borrowed = display
                self.kept_stats = next((t.fields.get("stats", "") for t in display.progress.tasks
                                        if t.id == display.task), "")
            else:
                self._start_own_bar()

    def _start_own_bar(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("batches  {task.fields[rate]}"), TextColumn("eta"), TimeRemainingColumn(),
                            console=self.console, transient=True)
        self.task = self.bar.add_task(self.label, total=self.total or None, rate="")
        self.bar.start()

    def rate(self) -> float:
        """Examples per second so far."""
        return self.examples / max(time.perf_counter() - self.started, 1e-9)

    def eta(self) -> float:
        """Seconds left at the mean time per batch so far."""
        elapsed = time.perf_counter() - self.started
        return elapsed / max(self.batches, 1) * max(self.total - self.batches, 0)

    def advance(self, examples: int) -> None:
        self.batches += 1
        self.examples += int(examples)
        if self.mode == "off":
            return
        text = f"{self.rate():,.0f} examples/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=self.batches, rate=text)
        elif self.borrowed is not None:
            shown = (f"{self.label} {self.batches}/{self.total} batches  {text}  eta {self.eta():.0f}s")
            self.borrowed.progress.update(self.borrowed.task, stats=shown)
        elif self.mode == "log" and time.perf_counter() - self.last_line >= LOG_EVERY_S:
            self.last_line = time.perf_counter()
            self.console.print(f"{self.label} {self.batches}/{self.total} batches ({self.examples:,} examples)  "
                               f"{text}  eta {self.eta():.0f}s", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        if self.borrowed is not None:
            self.borrowed.progress.update(self.borrowed.task, stats=self.kept_stats)
            self.borrowed = None
        elif self.mode == "log" and self.last_line > self.started:  # a pass long enough to have logged
            seconds = time.perf_counter() - self.started
            self.console.print(f"{self.label}: {self.examples:,} examples in {seconds:.0f}s ({self.rate():,.0f} "
                               f"examples/s)", highlight=False, soft_wrap=True)

    def __enter__(self) -> "EvalProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def batch_size(batch: dict[str, Any]) -> int:
    """Examples in a batch: the first dimension of its first tensor."""
    for value in batch.values():
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape):
            return int(shape[0])
    return 0

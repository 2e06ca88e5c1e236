"""Training throughput over a window of steps: examples, tokens and the time they took.

The window opens at the start of training, after every log line, and again after each
pause for evaluation or checkpointing, so the figures count training time only. Counts
are host integers (the batch size and the collator's token count), never device values,
so counting costs no synchronisation.
"""
from __future__ import annotations

import time
from typing import Any


class Throughput:
    """samples/s, tokens/s and (with a FLOP count per token and a measured peak) MFU."""

    def __init__(self, flops_per_token: float | None = None, peak_flops: float | None = None,
                 remeasure: Any = None):
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.remeasure = remeasure          # () -> a fresh matmul peak, for an MFU above 100%
        self.note: str | None = None        # said once on the console, then cleared by the reporter
        self._gave_up = False
        self.reset()

    @classmethod
    def measured(cls, flops_per_token: float | None, device: str, precision: str) -> "Throughput":
        """A window that reports MFU when the task counts FLOPs per token: the matmul peak is
        measured here, leaving the training RNG where it was."""
        if not flops_per_token:
            return cls()
        import torch

        from fmctl.loop.flops import measure_peak_flops

        def measure(fresh: bool = False) -> float:
            rng_state = torch.get_rng_state()
            try:
                return (measure_peak_flops.__wrapped__ if fresh else measure_peak_flops)(device, precision)
            finally:
                torch.set_rng_state(rng_state)

        return cls(flops_per_token, measure(), remeasure=lambda: measure(fresh=True))

    def reset(self) -> None:
        """Open a new window now."""
        self.samples = 0
        self.tokens = 0
        self.start = time.perf_counter()

    def count(self, samples: int, tokens: int) -> None:
        """One micro-batch of this rank's: its examples and real (non-padding) tokens."""
        self.samples += samples
        self.tokens += tokens

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def samples_per_s(self, elapsed: float) -> float:
        return self.samples / elapsed

    def token_rates(self, elapsed: float) -> dict[str, Any]:
        """tokens_per_s and mfu where they apply (text with a token count; a FLOP count)."""
        if not self.tokens:
            return {}
        rates = {"tokens_per_s": self.tokens / elapsed}
        if self.flops_per_token and not self._gave_up:
            mfu = self._mfu(rates["tokens_per_s"])
            if mfu is not None:
                rates["mfu"] = mfu
        return rates

    def _mfu(self, tokens_per_s: float) -> float | None:
        """Model FLOPs over the peak. Above 100% the peak was measured while the machine was
        busy: it is measured again (the best kept, at most twice), and if the rate still
        beats it, MFU is not reported for the rest of the run (and the console says why)."""
        flops = tokens_per_s * self.flops_per_token
        for _ in range(2):
            if flops <= self.peak_flops or self.remeasure is None:
                break
            self.peak_flops = max(self.peak_flops, self.remeasure())
        if flops <= self.peak_flops:
            return flops / self.peak_flops
        self._gave_up = True
        self.note = (f"MFU not reported from here: the training runs at {flops / 1e9:.1f} GFLOP/s, above the matmul "
                     f"peak measured in this process ({self.peak_flops / 1e9:.1f} GFLOP/s, best of three), so that "
                     f"peak was measured while the machine was busy")
        return None

    def describe(self, precision: str) -> str:
        """The console line that says what MFU is measured against."""
        return (f"matmul peak {self.peak_flops / 1e9:.1f} GFLOP/s ({precision}); "
                f"{self.flops_per_token / 1e6:.1f} MFLOP per token")

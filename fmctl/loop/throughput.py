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

    def __init__(self, flops_per_token: float | None = None, peak_flops: float | None = None):
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.reset()

    @classmethod
    def measured(cls, flops_per_token: float | None, device: str, precision: str) -> "Throughput":
        """A window that reports MFU when the task counts FLOPs per token: the matmul peak is
        measured here, leaving the training RNG where it was."""
        if not flops_per_token:
            return cls()
        import torch

        from fmctl.loop.flops import measure_peak_flops

        rng_state = torch.get_rng_state()
        peak = measure_peak_flops(device, precision)
        torch.set_rng_state(rng_state)
        return cls(flops_per_token, peak)

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
        if self.flops_per_token:
            rates["mfu"] = rates["tokens_per_s"] * self.flops_per_token / self.peak_flops
        return rates

    def describe(self, precision: str) -> str:
        """The console line that says what MFU is measured against."""
        return (f"matmul peak {self.peak_flops / 1e9:.1f} GFLOP/s ({precision}); "
                f"{self.flops_per_token / 1e6:.1f} MFLOP per token")

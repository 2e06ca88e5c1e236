"""The machine's matrix-multiply rate, measured in-process, as the denominator of model
FLOPs utilisation (MFU). Measured rather than looked up, because on shared machines the
datasheet peak says little about what this process can get."""
from __future__ import annotations

import time
from functools import lru_cache


@lru_cache(maxsize=None)
def measure_peak_flops(device: str, precision: str, size: int = 2048, seconds: float = 0.5,
                       clock: str = "wall") -> float:
    """FLOP/s of repeated size x size matmuls in the dtype training runs in. clock='cpu'
    divides by process CPU time instead (benchmarks on a shared machine, one thread)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    a = torch.randn(size, size, device=device, generator=None).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    now = time.process_time if clock == "cpu" else time.perf_counter
    runs, start = 0, now()
    while now() - start < seconds:
        a @ b
        runs += 1
        if device == "cuda" and runs % 10:
            continue
        sync()
    sync()
    return 2 * size**3 * runs / (now() - start)

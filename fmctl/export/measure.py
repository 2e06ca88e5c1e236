"""Latency of a model on this CPU: median of repeated runs on a fixed real batch."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def latency_ms(run: Callable[[], Any], min_runs: int = 7, min_seconds: float = 0.3, max_runs: int = 50,
               warmup: int = 2) -> float:
    """Median wall time of `run()` in milliseconds, after `warmup` calls; at least
    `min_runs` timed calls and enough of them to fill `min_seconds` (at most `max_runs`),
    so a tiny model is not timed from a couple of noisy calls and a large one stays brief."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - started < min_seconds):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 4)


def latency_table(runners: dict[str, Callable[[Any], Any]], feeds: dict[int, Any]) -> dict[str, dict[str, float]]:
    """{runner: {'batch_1': ms, 'batch_32': ms, 'batch_32_per_s': samples/s}} for each feed."""
    table: dict[str, dict[str, float]] = {}
    for name, runner in runners.items():
        row: dict[str, float] = {}
        for size, feed in feeds.items():
            ms = latency_ms(lambda: runner(feed))
            row[f"batch_{size}_ms"] = ms
            row[f"batch_{size}_per_s"] = round(1000 * size / ms, 1) if ms > 0 else float("inf")
        table[name] = row
    return table


def latency_record(runners: dict[str, Callable[[Any], Any]], feeds: dict[int, Any], threads: int,
                   what: str = "real validation inputs") -> dict[str, Any]:
    """The manifest's `latency`: the table, and what it was measured under (threads, the
    machine's load, its CPU flags), since the figures mean little without them."""
    import os

    from fmctl import cpu

    return {"threads": threads, "load_average_1min": round(os.getloadavg()[0], 2), "cpu": cpu.describe(),
            "precision": {name: ("int8" if "int8" in name else "fp32") for name in runners},
            "method": f"median of >=7 timed runs (>=0.3 s) after 2 warm-up runs, on {what}",
            "results": latency_table(runners, feeds)}

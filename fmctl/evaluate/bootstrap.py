"""A confidence interval for a task's main metric by resampling the evaluated examples.

A task's metrics object opts in with `bootstrap_statistics()`, returning per-example
columns (correct or not; a squared error; true/false positives and negatives) and a
function that turns their sums or means along an axis into the metric. scipy's
`bootstrap` then resamples the examples with replacement (paired: an example keeps all
its columns), seeded, in batches that bound memory, and reads the percentile interval.
Percentile, not BCa: BCa's jackknife costs N passes over N examples, too slow for the
100k-row evaluations this is meant for, and the two agree closely at these sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

# Elements of the resampled columns held at once (about 32 MB of float64).
_MEMORY = 1 << 22


@dataclass
class Statistics:
    """`columns`: equal-length 1-D arrays, one value per example; `statistic(*columns,
    axis)` computes the metric along `axis` (vectorised, as scipy calls it)."""

    metric: str
    columns: Sequence[Any]
    statistic: Callable[..., Any]


def confidence_interval(stats: Statistics, resamples: int, confidence: float, seed: int) -> dict[str, Any] | None:
    """{'metric', 'low', 'high', 'confidence', 'resamples', 'seed', 'method'}, or None with
    fewer than two examples (nothing to resample)."""
    import numpy as np
    from scipy.stats import bootstrap

    columns = tuple(np.asarray(c, dtype=np.float64) for c in stats.columns)
    n = len(columns[0])
    if n < 2 or resamples < 1:
        return None
    batch = max(1, _MEMORY // (n * len(columns)))
    with np.errstate(invalid="ignore", divide="ignore"):
        result = bootstrap(columns, stats.statistic, n_resamples=resamples, batch=batch, vectorized=True,
                           paired=True, confidence_level=confidence, method="percentile",
                           rng=np.random.default_rng(seed))
    return {"metric": stats.metric, "low": float(result.confidence_interval.low),
            "high": float(result.confidence_interval.high), "standard_error": float(result.standard_error),
            "confidence": confidence, "resamples": resamples, "seed": seed, "method": "percentile"}


def mean(column: Any, axis: int = -1) -> Any:
    """The statistic of a metric that is a mean over examples (accuracy, MSE, exact match)."""
    return column.mean(axis=axis)


def f1_from_counts(tp: Any, fp: Any, fn: Any, axis: int = -1) -> Any:
    """Micro F1 = 2 TP / (2 TP + FP + FN) of the summed per-example counts; 0 where there is
    nothing to count (scikit-learn's zero_division=0)."""
    import numpy as np

    t, f, n = tp.sum(axis=axis), fp.sum(axis=axis), fn.sum(axis=axis)
    denominator = 2 * t + f + n
    return np.where(denominator > 0, 2 * t / np.maximum(denominator, 1e-12), 0.0)

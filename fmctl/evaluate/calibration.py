"""Calibration of class probabilities: the expected calibration error, the reliability
diagram's numbers, and one softmax temperature fitted on a validation pass.

Both accumulate batch by batch in memory that does not grow with the number of classes
or rows (a few numbers per bin, one sum per candidate temperature), so a 50k-class model
scored on a million rows needs no N x C probability matrix.

The expected calibration error follows Guo et al. 2017 ("On Calibration of Modern
Neural Networks"): confidences (the largest class probability) fall into M equal-width
bins (m-1)/M < p <= m/M, and ECE = sum over bins of (n_m / N) |accuracy_m - confidence_m|.
Temperature scaling divides the logits by one T > 0 chosen to minimise the negative
log-likelihood of the validation labels; it leaves every argmax, so accuracy, unchanged.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# Candidate temperatures: 0.05 to 20, five per cent apart; the best is refined between
# its neighbours by a parabola in log T (the NLL is smooth and convex there).
GRID_LOW, GRID_HIGH, GRID_POINTS = 0.05, 20.0, 121
# Elements of one (temperatures x rows x classes) block while scoring the grid.
_BLOCK = 1 << 24


class ConfidenceBins:
    """Per equal-width confidence bin: how many predictions, their summed confidence and
    how many were right."""

    def __init__(self, bins: int = 15):
        import numpy as np

        self.bins = int(bins)
        self.count = np.zeros(self.bins, dtype=np.int64)
        self.confidence = np.zeros(self.bins, dtype=np.float64)
        self.correct = np.zeros(self.bins, dtype=np.float64)

    def add(self, confidence: Any, correct: Any) -> None:
        """`confidence`: each row's largest probability; `correct`: whether its argmax is the label."""
        import numpy as np

        confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
        index = np.clip(np.ceil(confidence * self.bins).astype(np.int64) - 1, 0, self.bins - 1)
        self.count += np.bincount(index, minlength=self.bins)
        self.confidence += np.bincount(index, weights=confidence, minlength=self.bins)
        self.correct += np.bincount(index, weights=np.asarray(correct, dtype=np.float64).reshape(-1),
                                    minlength=self.bins)

    def ece(self) -> float:
        total = int(self.count.sum())
        if not total:
            return float("nan")
        gaps = abs(self.correct - self.confidence)  # n_m |acc_m - conf_m| = |correct_m - conf_sum_m|
        return float(gaps.sum() / total)

    def table(self) -> list[dict[str, Any]]:
        """One row per bin: its bounds, how many predictions, mean confidence and accuracy
        (null for an empty bin)."""
        rows = []
        for m in range(self.bins):
            n = int(self.count[m])
            rows.append({"lower": round(m / self.bins, 6), "upper": round((m + 1) / self.bins, 6), "count": n,
                         "confidence": float(self.confidence[m] / n) if n else None,
                         "accuracy": float(self.correct[m] / n) if n else None})
        return rows


class TemperatureFit:
    """A metrics accumulator (update(logits, batch, loss)) that sums the negative
    log-likelihood of the labels at every candidate temperature; `temperature()` is the
    one that minimises it. Why a grid and not an optimiser over the stored logits: the
    logits of a large validation split with many classes do not fit in memory, and one
    pass over the data gives every candidate's exact NLL."""

    def __init__(self) -> None:
        import numpy as np

        self.grid = np.geomspace(GRID_LOW, GRID_HIGH, GRID_POINTS)
        self.nll = np.zeros(GRID_POINTS, dtype=np.float64)
        self.nll_at_one = 0.0
        self.rows = 0

    def update(self, logits: Any, batch: dict[str, Any], loss: Any) -> None:
        import torch

        if "labels" not in batch:
            return
        z = logits.float()
        labels = batch["labels"].to(z.device)
        picked = z.gather(1, labels[:, None])[:, 0]
        inverse = torch.as_tensor(1.0 / self.grid, dtype=torch.float32, device=z.device)
        step = max(1, _BLOCK // max(1, z.numel()))
        sums = []
        for start in range(0, len(self.grid), step):
            inv = inverse[start:start + step]
            scaled = z[None] * inv[:, None, None]
            sums.append((torch.logsumexp(scaled, dim=-1) - picked[None] * inv[:, None]).sum(1))
        self.nll += torch.cat(sums).double().cpu().numpy()
        self.nll_at_one += float((torch.logsumexp(z, dim=-1) - picked).double().sum())
        self.rows += int(labels.shape[0])

    def temperature(self) -> float:
        """The minimiser: the best grid point, refined by the vertex of the parabola through
        it and its neighbours in log T (the grid's end when the best is there)."""
        if not self.rows:
            raise ValueError("no labelled rows to fit a temperature on")
        i = int(self.nll.argmin())
        if i == 0 or i == len(self.grid) - 1:
            return float(self.grid[i])
        x0, x1, x2 = (math.log(t) for t in self.grid[i - 1:i + 2])
        y0, y1, y2 = self.nll[i - 1:i + 2]
        denominator = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denominator
        b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denominator
        if a <= 0:
            return float(self.grid[i])
        return float(math.exp(min(max(-b / (2 * a), x0), x2)))

    def summary(self) -> dict[str, Any]:
        """What the fit saw: rows, the mean NLL at T=1 and at the best grid temperature."""
        i = int(self.nll.argmin())
        return {"examples": self.rows, "nll_before": self.nll_at_one / max(self.rows, 1),
                "nll_after": float(self.nll[i] / max(self.rows, 1))}

    def compute(self) -> dict[str, float]:
        return {"temperature": self.temperature()} if self.rows else {}


def reliability_png(before: list[dict[str, Any]], after: list[dict[str, Any]] | None, temperature: float | None,
                    path: Path, title: str) -> None:
    """Accuracy against confidence per bin (the diagonal is perfect calibration), before and,
    with a temperature, after scaling; the bin counts below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = before[0]["upper"] - before[0]["lower"]
    centres = [(row["lower"] + row["upper"]) / 2 for row in before]
    series = [("before", before, "tab:red")] + ([(f"after (T={temperature:.3g})", after, "tab:blue")] if after else [])
    for k, (name, rows, colour) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * width / len(series)
        heights = [row["accuracy"] or 0.0 for row in rows]
        top.bar([c + offset for c in centres], heights, width=width / len(series), color=colour, alpha=0.7,
                label=name, edgecolor="black", linewidth=0.3)
        bottom.bar([c + offset for c in centres], [row["count"] for row in rows], width=width / len(series),
                   color=colour, alpha=0.7)
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlabel("confidence (largest class probability)")
    bottom.set_ylabel("predictions")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

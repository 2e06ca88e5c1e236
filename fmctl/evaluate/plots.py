"""Plots written next to evaluation metrics (matplotlib, no display needed)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: Path, dpi: int = 120) -> None:
    """A PNG written beside its final name and renamed: a reader never sees half a picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=dpi, format="png")
    os.replace(tmp, path)


def confusion_matrix_png(matrix: list[list[int]], label_names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.asarray(matrix)
    size = min(24.0, max(4.0, 0.5 * len(label_names) + 2))  # at most 2,880 px a side at 120 dpi
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(values, cmap="Blues")
    if len(label_names) <= 50:  # more tick labels than that overlap into a black band
        ax.set_xticks(range(len(label_names)), labels=label_names, rotation=45, ha="right")
        ax.set_yticks(range(len(label_names)), labels=label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(label_names) <= 30:
        threshold = values.max() / 2 if values.size else 0
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                ax.text(j, i, str(values[i, j]), ha="center", va="center",
                        color="white" if values[i, j] > threshold else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

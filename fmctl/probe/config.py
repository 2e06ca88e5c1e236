"""The settings of `fmctl probe` (key=value words on its command line)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from fmctl.config.schema import DataConfig, bounded


@dataclass
class ProbeConfig:
    # The labelled examples to embed: data=topics / data=digits (built in), or data.train=FILE
    # (with data.validation, data.test); a fine-tuned run folder's own data by default.
    data: DataConfig = field(default_factory=DataConfig)
    # Text: one vector per example from the token states, "mean" over real tokens, "cls"
    # (an encoder's first token) or "last" (a decoder's last real token), as the family
    # offers; auto: mean. Images: the model's own pooling ("pooled").
    pooling: str = "auto"
    # A two-tower backbone (CLIP): the tower to probe; null: the backbone's only modality.
    tower: Optional[Literal["image", "text"]] = None
    # random: the same architecture with fresh weights (seeded by `seed`), the baseline a
    # pretrained backbone has to beat.
    init: Literal["pretrained", "random"] = "pretrained"
    # Inverse regularisation strengths of the logistic regression; the one with the best
    # validation accuracy is reported (features standardised on train first).
    C: list[float] = field(default_factory=lambda: [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0])
    max_iter: int = bounded(1000, ge=10)
    # k nearest training examples by cosine similarity, majority vote.
    k: int = bounded(20, ge=1)
    seed: int = 0
    batch_size: int = bounded(64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = bounded(None, ge=1)
    progress: Literal["auto", "bar", "log", "off"] = "auto"
    # Output folder; null: SOURCE/probe (probe-random with init=random) for a run folder,
    # else runs/probe/<source name>/probe[-random].
    out: Optional[str] = None

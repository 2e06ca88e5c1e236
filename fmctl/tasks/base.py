"""The task contract: everything task-specific the shared loop and verbs need."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from fmctl.config.schema import RunConfig


@dataclass
class PreparedData:
    """Datasets ready for DataLoaders, plus what model/ must carry to be reused."""

    train: Any | None
    validation: Any | None
    test: Any | None
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    label_names: list[str]
    preprocessor: Any = None               # tokenizer, or image preprocessing dict
    sources: dict[str, Any] = field(default_factory=dict)   # split -> file fingerprint
    rows: dict[str, list[Any]] = field(default_factory=dict)  # split -> raw rows, for predictions files


class Metrics(Protocol):
    def update(self, outputs: Any, batch: dict[str, Any], loss: Any) -> None: ...
    def compute(self) -> dict[str, float]: ...


class Task(Protocol):
    name: str
    main_metric: str        # monitored by default, as 'val/<main_metric>'
    main_mode: str          # 'max' or 'min'
    metric_names: tuple[str, ...]  # what evaluation reports, so trainer.monitor is checked up front

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None, splits: tuple[str, ...] = ...) -> PreparedData:
        """Read and encode the splits; with model_dir, reuse its tokenizer/labels (eval)."""

    def build_model(self, run: RunConfig, data: PreparedData) -> Any: ...

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        """Model outputs (logits) for a batch; runs under the loop's autocast."""

    def loss(self, outputs: Any, batch: dict[str, Any]) -> Any: ...

    def new_metrics(self) -> Metrics: ...

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None: ...

    def load_model(self, folder: Path) -> Any: ...

    def example_fields(self, row: Any) -> dict[str, Any]:
        """What identifies a raw example in a predictions file (its text, its image path)."""

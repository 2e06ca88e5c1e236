"""The task contract: everything task-specific the shared loop and verbs need."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

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
    # Problems the data had that were worked around (skipped rows, ...), printed by the verb.
    warnings: list[str] = field(default_factory=list)


class Metrics(Protocol):
    def update(self, outputs: Any, batch: dict[str, Any], loss: Any) -> None: ...
    def compute(self) -> dict[str, float]: ...


class EvalMetrics(Metrics, Protocol):
    """What `fmctl eval` needs on top of training-time metrics."""

    def report(self) -> dict[str, Any]:
        """metrics.json: flat numbers (with 'num_examples') plus the task's tables."""

    def records(self, rows: list[Any], example_fields: Callable[[Any], dict[str, Any]]) -> Iterable[dict[str, Any]]:
        """predictions.jsonl: one record per raw row, in order."""

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        """Extra files for eval/ (a confusion-matrix plot, SQuAD-format predictions, ...)."""

    def tables(self, report: dict[str, Any]) -> list[Any]:
        """Rich tables printed after the headline metrics."""


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

    # Optional: `eval_forward(model, batch)`, the outputs of an evaluation batch when the
    # metrics need more than the loss does (generated text); the loop falls back to forward.
    # Optional: `minimized`, names of metrics where lower is better (besides *loss), so
    # trainer.monitor=val/<name> tracks the right direction.

    def loss(self, outputs: Any, batch: dict[str, Any]) -> Any: ...

    def new_metrics(self) -> EvalMetrics: ...

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None: ...

    def load_model(self, folder: Path) -> Any: ...

    def example_fields(self, row: Any) -> dict[str, Any]:
        """What identifies a raw example in a predictions file (its text, its image path)."""

"""The task contract: everything task-specific the shared loop and verbs need.

A task class subclasses `Task` explicitly: the protocol's optional hooks have default
bodies, so a task writes only what it changes, and the loop calls every hook without
asking whether it exists. What a task is (names, metrics, backbones, serving) is its
`TaskDeclaration` (declare.py); the instance reads it back through `declaration`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from fmctl.config.schema import RunConfig

if TYPE_CHECKING:
    from fmctl.tasks.declare import TaskDeclaration


@dataclass
class PreparedData:
    """Datasets ready for DataLoaders, plus what model/ must carry to be reused.

    `preprocessors` holds one preprocessor per modality the model reads ("text": a
    tokenizer, "image": the image preprocessing dict), so a model that reads images and
    text keeps both; `preprocessor` is the only one of a single-modality task."""

    train: Any | None
    validation: Any | None
    test: Any | None
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    label_names: list[str]
    preprocessors: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)   # split -> file fingerprint
    rows: dict[str, list[Any]] = field(default_factory=dict)  # split -> raw rows, for predictions files
    # Problems the data had that were worked around (skipped rows, ...), printed by the verb.
    warnings: list[str] = field(default_factory=list)

    @property
    def preprocessor(self) -> Any:
        if len(self.preprocessors) > 1:
            raise AttributeError(f"this data has a preprocessor per modality ({', '.join(self.preprocessors)}); "
                                 f"use preprocessors[<modality>]")
        return next(iter(self.preprocessors.values()), None)

    @preprocessor.setter
    def preprocessor(self, value: Any) -> None:
        """The single preprocessor, filed under its modality (a tokenizer is text)."""
        self.preprocessors = {} if value is None else {"image" if isinstance(value, dict) else "text": value}


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
    """Subclass it; `cfg` is the task's config (its declaration's `config` dataclass)."""

    cfg: Any

    # ---- what the task is: read from its declaration ---------------------------------
    @property
    def declaration(self) -> "TaskDeclaration":
        from fmctl.tasks import declaration

        return declaration(self.cfg.name)

    @property
    def name(self) -> str:
        """The name the config chose (an alias such as seq2seq stays as written)."""
        return self.cfg.name

    @property
    def main_metric(self) -> str:
        return self.declaration.main_metric

    @property
    def main_mode(self) -> str:
        return self.declaration.main_mode

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.declaration.metrics

    @property
    def minimized(self) -> tuple[str, ...]:
        return self.declaration.minimized

    # ---- what every task writes ----------------------------------------------------------
    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        """Read and encode the splits; with model_dir, reuse its tokenizer/labels (eval)."""
        ...

    def build_model(self, run: RunConfig, data: PreparedData) -> Any: ...

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        """Model outputs (logits) for a batch; runs under the loop's autocast.

        Under DDP every rank sees its own batch; a loss that needs every rank's outputs
        (contrastive negatives) gathers them with fmctl.loop.distributed.gather_with_grad."""
        ...

    def loss(self, outputs: Any, batch: dict[str, Any]) -> Any: ...

    def new_metrics(self) -> EvalMetrics: ...

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None: ...

    def load_model(self, folder: Path) -> Any: ...

    # ---- optional hooks: override where the default does not fit ------------------------
    def eval_forward(self, model: Any, batch: dict[str, Any]) -> Any:
        """Outputs of an evaluation batch, when the metrics need more than the loss does
        (generated text); the plain model is called, outside any DDP wrapper."""
        return self.forward(model, batch)

    def fused_forward(self, model: Any, batch: dict[str, Any]) -> Any:
        """A training batch's loss computed by fused kernels (trainer.kernels=triton),
        returned as a value `loss` accepts; None when the task has no fused path."""
        return None

    def has_targets(self, batch: dict[str, Any]) -> bool:
        """Whether an evaluation batch can be scored (pretraining text is its own target)."""
        return "labels" in batch

    def flops_per_token(self, model: Any, seq_len: int) -> float | None:
        """Model FLOPs per trained token, for the MFU figure; None: not reported."""
        return None

    def example_fields(self, row: Any) -> dict[str, Any]:
        """What identifies a raw example in a predictions file (its text, its image path)."""
        return {}

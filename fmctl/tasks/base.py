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

    # Optional: `bootstrap_statistics() -> fmctl.evaluate.bootstrap.Statistics | None`, the
    # per-example columns the task's main metric is computed from, for `fmctl eval`'s
    # confidence interval. A metrics object without it gets no interval (eval says so).


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

    # ---- evaluation: what `fmctl eval`, `fmctl probe` and learning curves ask --------
    def eval_metrics(self, settings: Any, temperature: float | None) -> EvalMetrics:
        """The metrics `fmctl eval` fills, given its settings (the `eval:` config group) and
        the temperature model/ carries (None: none). Default: the training metrics; a
        classifier adds calibration."""
        return self.new_metrics()

    def temperature_fitter(self) -> Metrics | None:
        """A metrics accumulator whose pass over the validation split fits one softmax
        temperature (fmctl.evaluate.calibration.TemperatureFit) and returns it from
        `temperature()`; None: the task's outputs are not class logits to scale."""
        return None

    def prepare_with(self, run: RunConfig, preprocessor: Any, splits: tuple[str, ...]) -> PreparedData:
        """The splits encoded for a model that brings its own preprocessor (the tokenizer or
        image preprocessing of `fmctl probe`'s frozen backbone), labels from the data.
        Tasks whose declaration sets probe_data implement it."""
        from fmctl.errors import ConfigError

        raise ConfigError(f"task '{self.name}': cannot encode its data for a given model's preprocessor")

    def read_rows(self, run: RunConfig, splits: tuple[str, ...], warnings: list[str] | None = None
                  ) -> dict[str, list[Any]] | None:
        """The splits' raw rows, read but not encoded, each with a `.label` (label budgets
        and `fmctl probe` count and sample them); None: the task does not read single-label rows."""
        return None

    def more_evaluations(self, model: Any, run: RunConfig, model_dir: Path, device: str,
                         precision: Any) -> dict[str, tuple[EvalMetrics, list[Any]]]:
        """Evaluations `fmctl eval` runs besides the split's own (a two-tower model's zero-shot
        classification of an image folder): name -> (scored metrics, their rows), each
        written to eval/<name>/ like the main one."""
        return {}

    # ---- serving: how export and predict meet the trained model ------------------------
    # The defaults describe a classifier (one logit per label, softmax); a task whose
    # model is served otherwise overrides the ones that differ.
    def output_specs(self, label_names: list[str]) -> list[dict[str, Any]]:
        """Names, dtypes and symbolic shapes of the exported outputs (the manifest declares them)."""
        return [{"name": "logits", "dtype": "float32", "shape": ["batch", len(label_names)]}]

    def parity_measure(self) -> Any:
        """What agreement of an export's predictions with PyTorch's means (fmctl.export.measures)."""
        from fmctl.export.measures import ArgmaxLabel

        return ArgmaxLabel()

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        """How outputs become predictions: the export manifest's `postprocessing`, and what
        predict decodes a run folder's outputs with (its `kind` names the decoder). Called
        on a task that has not prepared data (predict on a run folder). A temperature that
        `fmctl eval eval.temperature_scaling=true` saved in model/ divides the logits
        before the softmax."""
        from fmctl.models.saved import saved_temperature

        post: dict[str, Any] = {"kind": "softmax_label", "output": "logits", "labels": "label_names"}
        temperature = saved_temperature(model_dir)
        if temperature is not None:
            post["temperature"] = temperature
        return post

    def export_preprocessing(self, run: RunConfig, data: PreparedData, preprocessing: dict[str, Any]) -> dict[str, Any]:
        """The manifest's preprocessing (tokenizer or image transform, written by the export)
        with what this task adds to it (words, windows, source column)."""
        return preprocessing

    def image_preprocessing(self, run: RunConfig, model_dir: Path) -> dict[str, Any]:
        """What an image model saved in model_dir reads (predict on a run folder): the
        backbone family that saved it says, from its own files."""
        from fmctl import backbones

        return backbones.of_folder(model_dir).preprocessor(run.backbone, folder=model_dir)

    def served_label_names(self, model_dir: Path, data: PreparedData) -> list[str]:
        """The names of the served outputs, in order (labels, or a regression target)."""
        return list(data.label_names)

    def auto_class(self, model_dir: Path) -> str:
        """The transformers class that rebuilds model/ (export manifests name it)."""
        return self.declaration.serving.auto_class

    def export_data(self, run: RunConfig, model_dir: Path, split: str) -> PreparedData:
        """One split, encoded as model/ expects, for an export's checks and calibration."""
        return self.prepare(run, model_dir=model_dir, splits=(split,))

    def export_module(self, model: Any, graph: str, input_names: list[str]) -> Any:
        """The module an export writes as `graph` (positional inputs in `input_names` order,
        the graph's outputs), for a task declaring several graphs (serving.graphs); None: the
        model itself, called by keyword (text) or position (images)."""
        return None

    def graph_measure(self, graph: str, model: Any, data: PreparedData, input_names: dict[str, list[str]]) -> Any:
        """What agreement means for one graph of a several-graph export; `input_names` holds
        each graph's inputs. Default: the task's parity_measure()."""
        return self.parity_measure()

    def export_model(self, folder: Path) -> Any:
        """The model an export serves, from a model/ folder (a pretraining run serves its encoder)."""
        return self.load_model(folder)

    def save_export(self, model: Any, data: PreparedData, folder: Path) -> None:
        """An hf export's model/ folder, in the layout `export_model` loads back."""
        self.save_model(model, data, folder)

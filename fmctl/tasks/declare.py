"""What a task says about itself, in one value per task.

A task module ends with a `TaskDeclaration` (or several): its names, its config
dataclass, the backbones it sits on, which training verbs run it, the data it
reads, which customizations apply, its config checks, its metrics, and how predict and
export serve it. The registry (fmctl/tasks/__init__.py) holds the declarations, and
every question the rest of fmctl asks about a task by name (which schema validates
`task.*`, which pairs with which backbone, which formats it exports to, what predict
reads) is answered from them; no other table keyed by task name exists.

Only dataclasses and typing are imported here, so declarations are read without torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

# Export formats: one forward pass with named outputs (onnx, torchscript), the weights
# alone, or a folder the model's own library loads.
ALL_FORMATS = ("onnx", "torchscript", "safetensors", "hf")
WEIGHT_FORMATS = ("safetensors", "hf")
# Model inputs an export may feed, in this order, when the task's data provides them.
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
IMAGE_INPUTS = ("pixel_values",)


@dataclass(frozen=True)
class Graph:
    """One exported forward pass: its file stem (`image_encoder` -> image_encoder.onnx),
    the model inputs it feeds and the outputs it names."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def modality(self) -> str:
        return "image" if self.inputs == IMAGE_INPUTS else "text"


@dataclass(frozen=True)
class Serving:
    """How `fmctl predict` and `fmctl export` meet a task's trained model.

    `reads` is predict's input kind: text (and its pair), words (a tag per word), qa
    (question + context), image, source (text to translate), prompt (text a causal LM
    continues) or image_text (a two-tower model: zero-shot labels, retrieval, embeddings);
    None when predict does not serve the task, and `elsewhere` then says what
    to do with such a run instead. `decoder` names how outputs become predictions
    (fmctl.predict.decode.DECODERS, the export manifest's postprocessing kind), or is the
    decoder class itself for a task that brings its own. `measure` is the same for what
    agreement with PyTorch means in an export's parity check (fmctl.export.measures).
    `graphs`, for a model served as several forward passes (a two-tower model's image and
    text encoders), lists them; each is exported and parity-checked on its own. Empty: one
    graph, `model`, with `inputs` and `outputs`."""

    reads: Literal["text", "words", "qa", "image", "source", "prompt", "image_text"] | None = None
    elsewhere: str = ""
    inputs: tuple[str, ...] = TEXT_INPUTS
    outputs: tuple[str, ...] = ("logits",)
    decoder: str | type | None = None
    measure: str | type = "argmax_label"
    formats: tuple[str, ...] = ALL_FORMATS
    # Why --quantize is refused for this task; empty: int8 is offered.
    not_quantizable: str = ""
    # How a user rebuilds model/ with transformers (the hf and safetensors manifests say it).
    auto_class: str = "AutoModelForSequenceClassification"
    graphs: tuple[Graph, ...] = ()

    @property
    def modality(self) -> str:
        return "image" if self.inputs == IMAGE_INPUTS else "text"

    def exported_graphs(self) -> tuple[Graph, ...]:
        """The forward passes an export writes: the declared graphs, else one named `model`."""
        return self.graphs or (Graph("model", self.inputs, self.outputs),)


@dataclass(frozen=True)
class Length:
    """A sequence length a model must hold: `key` is the setting to lower, `formula` how
    the length is made up of settings (empty: it is that setting), `why` the reason."""

    key: str
    length: int
    formula: str = ""
    why: str = ""
    advice: str = ""


@dataclass(frozen=True)
class TaskDeclaration:
    name: str
    config: type                      # the task's config dataclass (the `task:` group)
    implementation: type              # the class the loop and verbs call (fmctl.tasks.base.Task)
    backbones: tuple[str, ...]        # backbone families it sits on, the first the suggested one
    aliases: tuple[str, ...] = ()     # other names for the same task (seq2seq for translation)
    metrics: tuple[str, ...] = ("loss",)   # what evaluation reports, as val/<name>
    main_metric: str = "loss"         # monitored by default
    main_mode: Literal["max", "min"] = "min"
    # Metrics besides *loss where lower is better, so trainer.monitor=val/<name> runs the right way.
    minimized: tuple[str, ...] = ()
    # The training verbs that run it: fine-tuning tasks run under `fmctl finetune` (and `fmctl
    # customize`, where `customize` allows it), pretraining objectives under `fmctl pretrain`;
    # a task that is both (contrastive image-text training) lists both.
    verbs: tuple[str, ...] = ("finetune", "customize")
    # Where its examples come from: labelled files (data.train=...) or a corpus written by
    # `fmctl data prepare` (data.prepared=...).
    reads: Literal["files", "prepared"] = "files"
    builtin_data: tuple[str, ...] = ()     # built-in datasets labelled for it (data.builtin)
    # Its labelled data (one label per example, read by the task's read_rows/prepare) feeds
    # `fmctl probe` and label budgets for backbones of its serving modality.
    probe_data: bool = False
    customize: bool = False           # `fmctl customize` operations apply
    distill: bool = False             # customize.distill applies (a teacher's class probabilities)
    task_head: bool = True            # a head over the backbone that customize.head re-initialises or replaces
    # Rules over several keys that only this task has (a stride shorter than the window);
    # each problem is "<dotted.key>: <what is wrong>".
    checks: Callable[[Any], list[str]] | None = None
    # The sequence lengths a model must hold under this config (checked against
    # backbone.max_positions and a pretrained model's own position table); None: data.max_length.
    lengths: Callable[[Any], list[Length]] | None = None
    serving: Serving = field(default_factory=Serving)

    @property
    def pretraining(self) -> bool:
        """Run by `fmctl pretrain` (an objective whose run feeds backbone.pretrained=)."""
        return "pretrain" in self.verbs

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def sequence_lengths(self, run: Any) -> list[Length]:
        if self.lengths is not None:
            return self.lengths(run)
        return [Length("data.max_length", run.data.max_length)]

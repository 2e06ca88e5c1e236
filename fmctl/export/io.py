"""A run's model as an export sees it: named inputs, real batches, declared outputs.

An export needs the model as a module taking positional tensors in a fixed, named order
and returning its named outputs; which axes are dynamic; real inputs from the run's
validation data (for the parity check, the metrics and the latency figures); what
agreement means for the task's predictions; the preprocessing a deployment must
reproduce and the post-processing that turns outputs into answers.

Nothing here is written per task. What is the same for every text model or every image
model (token ids and their tokenizer, pixels and their transform) is an input kind
below; what belongs to the task (its outputs, parity measure, post-processing, the
extras of its preprocessing) is asked of the task (fmctl.tasks.base.Task's serving
hooks), and which kind applies is the graph's modality. A task served as several forward
passes (serving.graphs: a two-tower model's image and text encoders) gets one ExportIO per
graph (`for_graph`), sharing the data and the loaded model; a single-graph task has one
graph, `model`, as before.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from fmctl.config.schema import RunConfig


@dataclass
class Batch:
    """One batch of real model inputs (torch tensors, in `input_names()` order) and the
    gold label ids when the data has them."""

    inputs: dict[str, Any]
    labels: Any | None


def positional(model: Any, names: list[str], outputs: tuple[str, ...], by_keyword: bool) -> Any:
    """An nn.Module whose forward takes the inputs positionally and returns its outputs as
    a tensor (one output) or a tuple in `outputs` order: exporters and tracers need a plain
    signature and plain tensor outputs. Text models are called by keyword; image models
    take the pixels positionally. A transformers model's named outputs are read by name."""
    import torch

    from fmctl.models.outputs import named_outputs

    class Outputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: Any) -> Any:
            result = self.model(**dict(zip(names, inputs))) if by_keyword else self.model(*inputs)
            values = named_outputs(result, outputs)
            return values[0] if len(values) == 1 else values

    return Outputs().eval()


class TextInputs:
    """Token ids, attention mask (token type ids for BERT-style pairs, decoder ids for an
    encoder-decoder): whichever of the task's declared inputs its collator emits."""

    def __init__(self, io: "ExportIO"):
        self.io = io
        self._names: list[str] | None = None

    def names(self) -> list[str]:
        if self._names is None:
            sample = self.io.data.collate([self.io.data.validation[0]])
            self._names = [name for name in self.io.graph.inputs if name in sample]
        return self._names

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {name: {0: "batch", 1: "sequence"} for name in self.names()}

    def specs(self) -> list[dict[str, Any]]:
        return [{"name": name, "dtype": "int64", "shape": ["batch", "sequence"]} for name in self.names()]

    def max_sequence(self) -> int | None:
        config = json.loads((self.io.model_dir / "config.json").read_text(encoding="utf-8"))
        found = config.get("max_position_embeddings") or config.get("n_positions")
        if found is None and self.io.serving.graphs:  # a composed model: its text tower's table
            from fmctl import backbones

            found = backbones.family(self.io.run.backbone.name).position_table(self.io.load_model())
        return int(found or 4096)

    def write(self, folder: Path) -> dict[str, Any]:
        """Copies the tokenizer next to the model: what `fmctl predict` (and anyone with the
        `tokenizers` library) needs to turn text into these inputs."""
        tokenizer = self.io.data.preprocessors["text"]
        tokenizer.save_pretrained(str(folder / "tokenizer"))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return {
            "kind": "text",
            "tokenizer": "tokenizer",
            "tokenizer_file": "tokenizer/tokenizer.json",
            "max_length": int(tokenizer.model_max_length),
            "truncation": "longest_first",
            "padding": "right",
            "pad_to_multiple_of": int(getattr(self.io.data.collate, "multiple_of", 1)),
            # GPT-2-style tokenizers have no pad token; padded positions are masked out anyway
            "pad_token_id": int(pad),
            "text_column": self.io.run.data.text_column,
            "text_pair_column": self.io.run.data.text_pair_column,
        }


class ImageInputs:
    """Normalised NCHW float32 pixels."""

    def __init__(self, io: "ExportIO"):
        self.io = io

    def names(self) -> list[str]:
        return ["pixel_values"]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"pixel_values": {0: "batch"}}

    def specs(self) -> list[dict[str, Any]]:
        prep = self.io.data.preprocessors["image"]
        return [{"name": "pixel_values", "dtype": "float32",
                 "shape": ["batch", prep["in_chans"], prep["image_size"], prep["image_size"]]}]

    def max_sequence(self) -> int | None:
        return None

    def write(self, folder: Path) -> dict[str, Any]:
        """timm's evaluation transform, spelled out: resize the short side to
        floor(image_size / crop_pct) and centre-crop image_size (crop_mode 'center'), or
        resize both sides to image_size ('squash'); scale to [0, 1], normalise."""
        prep = dict(self.io.data.preprocessors["image"])
        return {"kind": "image", "image_size": prep["image_size"], "in_chans": prep["in_chans"],
                "color_mode": "L" if prep["in_chans"] == 1 else "RGB", "mean": prep["mean"], "std": prep["std"],
                "crop_pct": prep["crop_pct"], "crop_mode": prep.get("crop_mode", "center"),
                "interpolation": prep["interpolation"], "layout": "NCHW", "scale": "1/255 then (x - mean) / std"}


class ExportIO:
    """Reads the run's validation split through the task's own encoding, so the parity
    inputs are exactly what training and `fmctl eval` feed the model."""

    def __init__(self, run: RunConfig, run_dir: Path, graph: Any = None, shared: "ExportIO | None" = None):
        from fmctl import tasks

        self.run = run
        self.run_dir = Path(run_dir)
        self.model_dir = self.run_dir / "model"
        self.task = shared.task if shared is not None else tasks.create(run.task)
        self.serving = self.task.declaration.serving
        self.graph = graph or self.serving.exported_graphs()[0]
        self.inputs = ImageInputs(self) if self.graph.modality == "image" else TextInputs(self)
        self._data: Any = shared.data if shared is not None else None
        self.parity_split = shared.parity_split if shared is not None else "validation"  # "train" without validation
        self._model: Any = shared._model if shared is not None else None

    def for_graph(self, graph: Any) -> "ExportIO":
        """The same run's export IO for one of the task's graphs (data and model shared)."""
        return ExportIO(self.run, self.run_dir, graph, shared=self)

    @property
    def file_stem(self) -> str:
        """The graph's file name without suffix: model.onnx, image_encoder.onnx, ..."""
        return self.graph.name

    @property
    def task_name(self) -> str:
        return self.run.task.name

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    @property
    def auto_class(self) -> str:
        return self.task.auto_class(self.model_dir)

    @property
    def data(self) -> Any:
        if self._data is None:
            data = self.task.export_data(self.run, self.model_dir, "validation")
            if data.validation is None or len(data.validation) == 0:
                # e.g. pretraining on a corpus prepared with validation_fraction=0: the
                # export is still checked, on training examples (the manifest says which)
                data = self.task.export_data(self.run, self.model_dir, "train")
                data.validation, self.parity_split = data.train, "train"
            self._data = data
        return self._data

    @property
    def label_names(self) -> list[str]:
        return self.task.served_label_names(self.model_dir, self.data)

    def load_model(self) -> Any:
        """The model as the task serves it (loaded once; a graph's IO shares it)."""
        if self._model is None:
            self._model = self.task.export_model(self.model_dir).eval()
        return self._model

    def save_model(self, model: Any, folder: Path) -> None:
        """The hf export's model/ folder (the task's own save_pretrained layout)."""
        self.task.save_export(model, self.data, folder)

    def reload(self, folder: Path) -> Any:
        """An hf export's model/ folder loaded back, as a deployment loads it."""
        return self.task.export_model(folder).eval()

    def module(self, model: Any) -> Any:
        own = self.task.export_module(model, self.graph.name, self.input_names()) if self.serving.graphs else None
        if own is not None:
            return own
        return positional(model, self.input_names(), tuple(self.output_names), self.graph.modality == "text")

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        """Real validation batches: first a single example (batch 1 is what a service
        sees), then `batch_size` at a time, up to `limit` examples in all."""
        dataset = self.data.validation
        total = len(dataset) if limit is None else min(limit, len(dataset))
        start, first = 0, True
        while start < total:
            size = 1 if first else min(batch_size, total - start)
            first = False
            yield self._batch([dataset[i] for i in range(start, start + size)])
            start += size

    def batch_of(self, size: int) -> Batch:
        """A batch of exactly `size` real examples (repeating them if the split is smaller)."""
        dataset = self.data.validation
        return self._batch([dataset[i % len(dataset)] for i in range(size)])

    def _batch(self, examples: list[Any]) -> Batch:
        collated = self.data.collate(examples)
        return Batch({name: collated[name] for name in self.input_names()}, collated.get("labels"))

    def num_examples(self) -> int:
        return len(self.data.validation)

    def input_names(self) -> list[str]:
        return self.inputs.names()

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return self.inputs.dynamic_axes()

    def input_specs(self) -> list[dict[str, Any]]:
        return self.inputs.specs()

    def max_sequence(self) -> int | None:
        return self.inputs.max_sequence()

    def write_preprocessing(self, folder: Path) -> dict[str, Any]:
        return self.task.export_preprocessing(self.run, self.data, self.inputs.write(folder))

    def output_specs(self) -> list[dict[str, Any]]:
        specs = self.task.output_specs(self.label_names)
        return [spec for spec in specs if spec["name"] in self.graph.outputs] if self.serving.graphs else specs

    def output_axes(self) -> dict[str, dict[int, str]]:
        return {spec["name"]: {i: d for i, d in enumerate(spec["shape"]) if isinstance(d, str)}
                for spec in self.output_specs()}

    def measure(self) -> Any:
        if not self.serving.graphs:
            return self.task.parity_measure()
        names = {graph.name: self.for_graph(graph).input_names() for graph in self.serving.graphs}
        return self.task.graph_measure(self.graph.name, self.load_model(), self.data, names)

    def postprocessing(self) -> dict[str, Any]:
        return self.task.postprocessing(self.run, self.label_names, self.model_dir)

    @property
    def generates_text(self) -> bool:
        """A causal LM served to --prompt: its ONNX export carries a key/value cache."""
        return self.serving.reads == "prompt"

    @property
    def translates(self) -> bool:
        """A model that generates text from a source (translation): its ONNX export is a
        generator's graphs (an encoder and a decoder with a key/value cache, or the
        decoder alone), checked by decoding (fmctl.export.translation)."""
        return self.serving.reads == "source"

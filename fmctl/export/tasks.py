"""How each task's model meets the outside world: named inputs, real batches, preprocessing.

An export needs, per task: the model as a module taking positional tensors in a fixed,
named order and returning one output; which axes are dynamic; real inputs from the run's
validation data (for the parity check, the metrics and the latency figures); and a
description of the preprocessing a deployment must reproduce. A new task (token
classification, QA, seq2seq) plugs in by adding a class here and a row in TASK_IO.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from fmctl.config.schema import RunConfig


@dataclass
class Batch:
    """One batch of real model inputs (torch tensors, in `TaskIO.input_names` order) and
    the gold label ids when the data has them."""

    inputs: dict[str, Any]
    labels: Any | None


class _Positional:
    """Builds an nn.Module whose forward takes the inputs positionally and returns logits;
    exporters and tracers need a plain signature and a single tensor output."""

    @staticmethod
    def wrap(model: Any, names: list[str], call: str) -> Any:
        import torch

        class Logits(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *inputs: Any) -> Any:
                if call == "kwargs":
                    return self.model(**dict(zip(names, inputs))).logits
                return self.model(*inputs)

        return Logits().eval()


class TaskIO:
    """Shared part: reads the run's validation split through the task's own `prepare`,
    so the parity inputs are exactly what training and `fmctl eval` feed the model."""

    task_name = ""
    output_names = ["logits"]

    def __init__(self, run: RunConfig, run_dir: Path):
        from fmctl.tasks import get_task

        self.run = run
        self.run_dir = Path(run_dir)
        self.model_dir = self.run_dir / "model"
        self.task = get_task(run.task)
        self._data: Any = None

    @property
    def label_names(self) -> list[str]:
        return self.data.label_names

    @property
    def data(self) -> Any:
        if self._data is None:
            self._data = self.task.prepare(self.run, model_dir=self.model_dir, splits=("validation",))
        return self._data

    def load_model(self) -> Any:
        return self.task.load_model(self.model_dir).eval()

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        """Real validation batches: first a single example (batch 1 is what a service
        sees), then `batch_size` at a time, up to `limit` examples in all."""
        dataset = self.data.validation
        total = len(dataset) if limit is None else min(limit, len(dataset))
        start, first = 0, True
        while start < total:
            size = 1 if first else min(batch_size, total - start)
            first = False
            collated = self.data.collate([dataset[i] for i in range(start, start + size)])
            yield Batch({name: collated[name] for name in self.input_names()}, collated.get("labels"))
            start += size

    def batch_of(self, size: int) -> Batch:
        """A batch of exactly `size` real examples (repeating them if the split is smaller)."""
        dataset = self.data.validation
        collated = self.data.collate([dataset[i % len(dataset)] for i in range(size)])
        return Batch({name: collated[name] for name in self.input_names()}, collated.get("labels"))

    def num_examples(self) -> int:
        return len(self.data.validation)

    # per task -----------------------------------------------------------------------
    def input_names(self) -> list[str]:
        raise NotImplementedError

    def module(self, model: Any) -> Any:
        raise NotImplementedError

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        raise NotImplementedError

    def input_specs(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def write_preprocessing(self, folder: Path) -> dict[str, Any]:
        raise NotImplementedError

    def max_sequence(self) -> int | None:
        return None


class TextClassificationIO(TaskIO):
    """Token ids, attention mask (and token type ids for BERT-style pairs) in; logits out."""

    task_name = "text_classification"

    def input_names(self) -> list[str]:
        # The collator emits token_type_ids only when the tokenizer makes them (BERT, not GPT).
        if not hasattr(self, "_names"):
            sample = self.data.collate([self.data.validation[0]])
            self._names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample]
        return self._names

    def module(self, model: Any) -> Any:
        return _Positional.wrap(model, self.input_names(), "kwargs")

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {name: {0: "batch", 1: "sequence"} for name in self.input_names()}

    def input_specs(self) -> list[dict[str, Any]]:
        return [{"name": name, "dtype": "int64", "shape": ["batch", "sequence"]} for name in self.input_names()]

    def max_sequence(self) -> int | None:
        config = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        return int(config.get("max_position_embeddings") or config.get("n_positions") or 4096)

    def write_preprocessing(self, folder: Path) -> dict[str, Any]:
        """Copies the tokenizer next to the model: what `fmctl predict` (and anyone with
        the `tokenizers` library) needs to turn text into these inputs."""
        tokenizer = self.data.preprocessor
        tokenizer.save_pretrained(str(folder / "tokenizer"))
        return {
            "kind": "text",
            "tokenizer": "tokenizer",
            "tokenizer_file": "tokenizer/tokenizer.json",
            "max_length": int(tokenizer.model_max_length),
            "truncation": "longest_first",
            "padding": "right",
            "pad_to_multiple_of": int(getattr(self.data.collate, "multiple_of", 1)),
            "pad_token_id": int(tokenizer.pad_token_id),
            "text_column": self.run.data.text_column,
            "text_pair_column": self.run.data.text_pair_column,
        }


class ImageClassificationIO(TaskIO):
    """Normalised NCHW float32 pixels in; logits out."""

    task_name = "image_classification"

    def input_names(self) -> list[str]:
        return ["pixel_values"]

    def module(self, model: Any) -> Any:
        return _Positional.wrap(model, self.input_names(), "positional")

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"pixel_values": {0: "batch"}}

    def _prep(self) -> dict[str, Any]:
        return self.data.preprocessor

    def input_specs(self) -> list[dict[str, Any]]:
        prep = self._prep()
        return [{"name": "pixel_values", "dtype": "float32",
                 "shape": ["batch", prep["in_chans"], prep["image_size"], prep["image_size"]]}]

    def write_preprocessing(self, folder: Path) -> dict[str, Any]:
        """timm's evaluation transform, spelled out: resize the short side to
        floor(image_size / crop_pct), centre-crop image_size, scale to [0, 1], normalise."""
        prep = dict(self._prep())
        cfg = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8")).get("pretrained_cfg", {})
        return {"kind": "image", "image_size": prep["image_size"], "in_chans": prep["in_chans"],
                "color_mode": "L" if prep["in_chans"] == 1 else "RGB", "mean": prep["mean"], "std": prep["std"],
                "crop_pct": prep["crop_pct"], "crop_mode": cfg.get("crop_mode", "center"),
                "interpolation": prep["interpolation"], "layout": "NCHW", "scale": "1/255 then (x - mean) / std"}


TASK_IO: dict[str, type[TaskIO]] = {
    "text_classification": TextClassificationIO,
    "image_classification": ImageClassificationIO,
}

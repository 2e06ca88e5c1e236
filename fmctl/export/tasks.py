"""How each task's model meets the outside world: named inputs, real batches, preprocessing.

An export needs, per task: the model as a module taking positional tensors in a fixed,
named order and returning its named outputs (one, or several such as QA's start_logits and
end_logits); which axes are dynamic; real inputs from the run's validation data (for the
parity check, the metrics and the latency figures); what agreement means for the task's
predictions (measures.py); a description of the preprocessing a deployment must
reproduce and of the post-processing that turns outputs into answers. A new task plugs in
by adding a class here and a row in TASK_IO (and its formats in formats.SUPPORTED).
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
    """Builds an nn.Module whose forward takes the inputs positionally and returns its
    outputs as a tensor (one output) or a tuple of tensors in `outputs` order; exporters
    and tracers need a plain signature and plain tensor outputs."""

    @staticmethod
    def wrap(model: Any, names: list[str], call: str, outputs: tuple[str, ...] = ("logits",)) -> Any:
        import torch

        class Outputs(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *inputs: Any) -> Any:
                if call != "kwargs":
                    return self.model(*inputs)
                result = self.model(**dict(zip(names, inputs)))
                values = tuple(getattr(result, name) for name in outputs)
                return values[0] if len(values) == 1 else values

        return Outputs().eval()


class TaskIO:
    """Shared part: reads the run's validation split through the task's own `prepare`,
    so the parity inputs are exactly what training and `fmctl eval` feed the model."""

    task_name = ""
    output_names = ["logits"]
    # How a user rebuilds model/ with transformers (the hf and safetensors manifests say it).
    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, run: RunConfig, run_dir: Path):
        from fmctl.tasks import get_task

        self.run = run
        self.run_dir = Path(run_dir)
        self.model_dir = self.run_dir / "model"
        self.task = get_task(run.task)
        self._data: Any = None
        self.parity_split = "validation"  # "train" for a run that had no validation examples

    @property
    def label_names(self) -> list[str]:
        return self.data.label_names

    @property
    def data(self) -> Any:
        if self._data is None:
            data = self.task.prepare(self.run, model_dir=self.model_dir, splits=("validation",))
            if data.validation is None or len(data.validation) == 0:
                # e.g. pretraining on a corpus prepared with validation_fraction=0: the
                # export is still checked, on training examples (the manifest says which)
                data = self.task.prepare(self.run, model_dir=self.model_dir, splits=("train",))
                data.validation, self.parity_split = data.train, "train"
            self._data = data
        return self._data

    def load_model(self) -> Any:
        return self.task.load_model(self.model_dir).eval()

    def save_model(self, model: Any, folder: Path) -> None:
        """The hf export's model/ folder (the task's own save_pretrained layout)."""
        self.task.save_model(model, self.data, folder)

    def reload(self, folder: Path) -> Any:
        """An hf export's model/ folder loaded back, as a deployment loads it."""
        return self.task.load_model(folder).eval()

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

    def output_specs(self) -> list[dict[str, Any]]:
        """Names, dtypes and symbolic shapes of the outputs (what the manifest declares)."""
        return [{"name": "logits", "dtype": "float32", "shape": ["batch", len(self.label_names)]}]

    def output_axes(self) -> dict[str, dict[int, str]]:
        return {spec["name"]: {i: d for i, d in enumerate(spec["shape"]) if isinstance(d, str)}
                for spec in self.output_specs()}

    def measure(self) -> Any:
        """What agreement of predictions means for this task (fmctl.export.measures)."""
        from fmctl.export.measures import ArgmaxLabel

        return ArgmaxLabel()

    def postprocessing(self) -> dict[str, Any]:
        """How outputs become predictions, for the manifest (and for fmctl predict)."""
        return {"kind": "softmax_label", "output": "logits", "labels": "label_names"}


class TextClassificationIO(TaskIO):
    """Token ids, attention mask (and token type ids for BERT-style pairs) in; logits out."""

    task_name = "text_classification"
    model_inputs = ("input_ids", "attention_mask", "token_type_ids")

    def input_names(self) -> list[str]:
        # The collator emits token_type_ids only when the tokenizer makes them (BERT, not GPT).
        if not hasattr(self, "_names"):
            sample = self.data.collate([self.data.validation[0]])
            self._names = [name for name in self.model_inputs if name in sample]
        return self._names

    def module(self, model: Any) -> Any:
        return _Positional.wrap(model, self.input_names(), "kwargs", tuple(self.output_names))

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
            # GPT-2-style tokenizers have no pad token; padded positions are masked out anyway
            "pad_token_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id),
            "text_column": self.run.data.text_column,
            "text_pair_column": self.run.data.text_pair_column,
        }


class RegressionIO(TextClassificationIO):
    """Text (pairs) in; one number per example out, compared by its difference alone."""

    task_name = "regression"

    @property
    def label_names(self) -> list[str]:
        from fmctl.tasks.text_inputs import saved_label_names

        return saved_label_names(self.model_dir) or ["score"]

    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": "logits", "dtype": "float32", "shape": ["batch", 1]}]

    def measure(self) -> Any:
        from fmctl.export.measures import DifferenceOnly

        return DifferenceOnly()

    def postprocessing(self) -> dict[str, Any]:
        return {"kind": "regression", "output": "logits", "value": "logits[:, 0]", "target": self.label_names[0]}


class MultilabelIO(TextClassificationIO):
    """Text (pairs) in; one logit per label out; a label is predicted at sigmoid >= threshold."""

    task_name = "multilabel_classification"

    def measure(self) -> Any:
        from fmctl.export.measures import ThresholdSet

        return ThresholdSet(self.run.task.threshold)

    def postprocessing(self) -> dict[str, Any]:
        return {"kind": "sigmoid_threshold", "output": "logits", "threshold": float(self.run.task.threshold),
                "labels": "label_names"}


class TokenClassificationIO(TextClassificationIO):
    """Words (split into pieces) in; a tag distribution per token out, read back per word
    from each word's first piece."""

    task_name = "token_classification"
    auto_class = "AutoModelForTokenClassification"

    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", len(self.label_names)]}]

    def measure(self) -> Any:
        from fmctl.export.measures import TokenArgmax

        return TokenArgmax()

    def write_preprocessing(self, folder: Path) -> dict[str, Any]:
        prep = super().write_preprocessing(folder)
        prep.update(words="split on whitespace (or given as a list of words)", is_split_into_words=True,
                    truncation="longest_first", tokens_column=self.run.data.tokens_column, text_pair_column=None)
        return prep

    def postprocessing(self) -> dict[str, Any]:
        return {"kind": "word_tags", "output": "logits", "labels": "label_names",
                "word_tag": "argmax of the word's first piece", "fill_label": self.task.fill_label}


class ExtractiveQAIO(TextClassificationIO):
    """Question + context windows in; start_logits and end_logits per token out; the answer
    is the best span over all windows of a question, mapped back to context characters."""

    task_name = "extractive_qa"
    output_names = ["start_logits", "end_logits"]
    auto_class = "AutoModelForQuestionAnswering"

    @property
    def label_names(self) -> list[str]:
        return []

    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": name, "dtype": "float32", "shape": ["batch", "sequence"]} for name in self.output_names]

    def measure(self) -> Any:
        from fmctl.export.measures import SpanMatch

        return SpanMatch(self.run.task.max_answer_length)

    def write_preprocessing(self, folder: Path) -> dict[str, Any]:
        prep = super().write_preprocessing(folder)
        tokenizer = self.data.preprocessor
        prep.update(truncation="only_second", stride=int(self.run.task.doc_stride), return_overflowing_tokens=True,
                    return_offsets_mapping=True, cls_token_id=tokenizer.cls_token_id, text_column=None,
                    text_pair_column=None, question_column="question", context_column="context",
                    windows="question + context; contexts longer than max_length are cut into windows that "
                            "overlap by `stride` tokens")
        return prep

    def postprocessing(self) -> dict[str, Any]:
        cfg = self.run.task
        return {"kind": "answer_span", "outputs": list(self.output_names), "max_answer_length": cfg.max_answer_length,
                "n_best": cfg.n_best, "doc_stride": cfg.doc_stride, "allow_no_answer": bool(self.task.allow_no_answer),
                "null_score_threshold": cfg.null_score_threshold,
                "span": "best start + end logit over every window of the question: context tokens only, end >= "
                        "start, at most max_answer_length tokens; characters from the offset mapping"}


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


class _LanguageModelIO(TextClassificationIO):
    """Generation and masked-modelling heads (formats.SUPPORTED says which formats each
    takes), checked on real validation blocks/pairs by the vocabulary logits and their
    argmax token over the real tokens."""

    @property
    def label_names(self) -> list[str]:
        return []

    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", "vocab"]}]

    def measure(self) -> Any:
        from fmctl.export.measures import TokenArgmax

        return TokenArgmax(score=False)

    def postprocessing(self) -> dict[str, Any]:
        return {"kind": "vocabulary_logits", "output": "logits"}


class CausalLMIO(_LanguageModelIO):
    task_name = "clm"
    auto_class = "AutoModelForCausalLM"

    def postprocessing(self) -> dict[str, Any]:
        return {"kind": "generate", "output": "logits", "max_positions": self.max_sequence(),
                "how": "fmctl predict RUN_OR_EXPORT --prompt TEXT, or transformers' generate() on the hf folder"}


class MaskedLMIO(_LanguageModelIO):
    """Validation blocks with their masked positions; scored on the masked tokens."""

    task_name = "mlm"
    auto_class = "AutoModelForMaskedLM"

    def measure(self) -> Any:
        from fmctl.export.measures import TokenArgmax

        return TokenArgmax()


class Seq2SeqIO(_LanguageModelIO):
    """GPT: source <sep> target as one sequence; T5: source in, teacher-forced target
    (decoder_input_ids) out. Generation settings go to the manifest for fmctl predict."""

    task_name = "translation"
    model_inputs = ("input_ids", "attention_mask", "decoder_input_ids")

    @property
    def auto_class(self) -> str:  # type: ignore[override]
        self.data  # noqa: B018  prepare decides decoder_only from model/config.json
        return "AutoModelForCausalLM" if self.task.decoder_only else "AutoModelForSeq2SeqLM"

    def load_model(self) -> Any:
        self.data  # noqa: B018  GPT or T5 head: prepare reads it from model/config.json
        return super().load_model()

    def write_preprocessing(self, folder: Path) -> dict[str, Any]:
        prep = super().write_preprocessing(folder)
        prep.update(max_length=int(self.run.data.max_length), source_column=self.run.data.source_column,
                    text_column=None, text_pair_column=None,
                    padding="left (GPT prompts)" if self.task.decoder_only else "right")
        return prep

    def postprocessing(self) -> dict[str, Any]:
        from dataclasses import asdict

        cfg = self.run.task
        return {"kind": "generate", "output": "logits", "separator": cfg.separator, "source_prefix": cfg.source_prefix,
                "decoder_only": bool(self.task.decoder_only), "generation": asdict(cfg.generation)}


class MaskedImageIO(ImageClassificationIO):
    """A SimMIM run keeps only its ViT encoder in model/ (timm layout): exported as weights
    or an hf (timm) folder and checked on the pooled features of validation images."""

    task_name = "mim"
    output_names = ["features"]

    @property
    def label_names(self) -> list[str]:
        return []

    @property
    def data(self) -> Any:
        if self._data is None:
            from fmctl.data.images import build_transform
            from fmctl.data.images import collate_images
            from fmctl.models import vision

            data = self.task.prepare(self.run, model_dir=self.model_dir, splits=("validation",))
            data.preprocessor = vision.preprocessing(self.load_model())
            data.validation.transform = build_transform(data.preprocessor, train=False, augment=False)
            data.collate = collate_images
            self._data = data
        return self._data

    def load_model(self) -> Any:
        from fmctl.models import vision

        return vision.load_for_inference(self.model_dir).eval()

    def save_model(self, model: Any, folder: Path) -> None:
        from fmctl.models import vision

        vision.save(model, folder, [])

    def reload(self, folder: Path) -> Any:
        from fmctl.models import vision

        return vision.load_for_inference(folder).eval()

    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": "features", "dtype": "float32", "shape": ["batch", "features"]}]

    def measure(self) -> Any:
        from fmctl.export.measures import DifferenceOnly

        return DifferenceOnly()

    def postprocessing(self) -> dict[str, Any]:
        return {"kind": "features", "output": "features", "use": "a starting point for fine-tuning "
                "(fmctl finetune backbone.pretrained=...)"}


TASK_IO: dict[str, type[TaskIO]] = {
    "text_classification": TextClassificationIO,
    "image_classification": ImageClassificationIO,
    "token_classification": TokenClassificationIO,
    "extractive_qa": ExtractiveQAIO,
    "regression": RegressionIO,
    "multilabel_classification": MultilabelIO,
    "translation": Seq2SeqIO,
    "seq2seq": Seq2SeqIO,
    "clm": CausalLMIO,
    "mlm": MaskedLMIO,
    "mim": MaskedImageIO,
}

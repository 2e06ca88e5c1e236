"""Translation and other text-to-text jobs, with a GPT (decoder-only) or T5
(encoder-decoder) backbone; the same data, loss and metrics for both.

GPT reads `source <sep> target <eos>` as one sequence and is trained on the target
tokens only (the source and separator are masked out of the loss); at evaluation it
continues `source <sep>` (prompts padded on the left so new tokens follow the last real
one). T5 encodes `source </s>` and decodes `target </s>` from its pad token. Generation is
transformers' generate(): greedy, or beam search with task.generation.num_beams and
length_penalty. Without a tokenizer from the backbone, one tokenizer is trained on both
sides of the training pairs. An encoder_decoder backbone (transformers' EncoderDecoderModel,
warm-started from a BERT/MiniLM or an fmctl pretraining run) reads `[CLS] source [SEP]`, as
its encoder was pretrained, and decodes `target [SEP]` from [CLS] (Rothe et al. 2020);
its decoder may write with a tokenizer of its own (`backbone.target_tokenizer`), which
then encodes the targets and decodes what is generated.
Sources longer than data.max_length tokens are cut, and the count is reported. Hypotheses
are scored against the references with sacrebleu (corpus BLEU and chrF, their default
settings, signatures saved in metrics.json).
model/ is AutoModelForCausalLM (GPT) or AutoModelForSeq2SeqLM (T5, EncoderDecoderModel)
with its generation_config.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fmctl import backbones
from fmctl.config.schema import RunConfig, bounded
from fmctl.data.collate import IGNORE_INDEX, PadCollator
from fmctl.data.pairs import PairRow, read_pairs
from fmctl.data.sources import split_paths
from fmctl.data.text import EncodedDataset
from fmctl.errors import ModelError
from fmctl.models.saved import saved_config
from fmctl.tasks.base import PreparedData, Task
from fmctl.tasks.classification import read_splits
from fmctl.tasks.declare import WEIGHT_FORMATS, Length, Serving, TaskDeclaration
from fmctl.tasks.text_inputs import fingerprints, tokenizer_for
from fmctl.tasks.translation_metrics import Generated, TranslationMetrics, translation_scores
from fmctl.tasks.vocabulary_serving import VocabularyLogitsServing

__all__ = ["Seq2Seq", "Seq2SeqTaskConfig", "GenerationConfig", "Generated", "translation_scores", "TASKS"]


@dataclass
class GenerationConfig:
    # 1 is greedy decoding; more is beam search.
    num_beams: int = bounded(1, ge=1)
    max_new_tokens: int = bounded(64, ge=1)
    # Beam search only: > 1 favours longer outputs, < 1 shorter ones (transformers' meaning).
    length_penalty: float = 1.0


@dataclass
class Seq2SeqTaskConfig:
    name: Literal["translation", "seq2seq"] = "translation"
    # GPT only: the token between source and target. Added to the tokenizer as a special
    # token when it is not one already (a pretrained model's embeddings grow by one row).
    separator: str = "<sep>"
    # Put before every source text, e.g. 'translate English to German: ' for pretrained T5.
    source_prefix: str = ""
    label_smoothing: float = bounded(0.0, ge=0.0, lt=1.0)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


class Seq2Seq(VocabularyLogitsServing, Task):
    def __init__(self, cfg: Seq2SeqTaskConfig):
        self.cfg = cfg
        self.decoder_only = True
        self.tokenizer: Any = None           # reads the sources
        self.target_tokenizer: Any = None    # writes the targets: the same one unless the decoder has its own
        self.pairs: list[PairRow] = []       # every split's pairs; batches carry indices into it
        self.composed = False                # an EncoderDecoderModel: [CLS] source [SEP], decoding from [CLS]
        self.cut: dict[str, int] = {}        # sources cut to data.max_length, per split
        self.last_cut = 0                    # sources cut by the last source_ids call (predict reports it)

    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        paths = split_paths(run.data)
        rows = read_splits(run.data, paths, lambda p: read_pairs(p, run.data), splits)
        self.decoder_only = not _encoder_decoder(model_dir) if model_dir else run.backbone.name == "gpt"
        self.composed = _composed(model_dir) if model_dir else getattr(run.backbone, "decoder", None) is not None

        def training_texts():
            for r in rows["train"]:
                yield r.source
                yield r.target

        tokenizer = tokenizer_for(run, model_dir, training_texts)
        self.target_tokenizer = self._own_target_tokenizer(run, model_dir, rows.get("train", [])) or tokenizer
        if self.decoder_only:
            self._add_separator(tokenizer)
            tokenizer.model_max_length = _gpt_row(run.data)
            # Batched generation needs prompts padded on the left; init_kwargs is what
            # save_pretrained writes, so model/ hands the setting on.
            tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"
        if self.target_tokenizer.eos_token_id is None:
            raise ModelError("backbone.tokenizer: the tokenizer has no end-of-sequence token to end targets with")
        self.tokenizer = tokenizer
        datasets = {split: self._encode(split_rows, tokenizer, run.data.max_length, run.data.max_target_length, split)
                    for split, split_rows in rows.items()}
        pad = tokenizer.pad_token_id
        collate = PadCollator({"input_ids": pad, "labels": IGNORE_INDEX, "prompt_ids": pad,
                               "decoder_input_ids": self.target_tokenizer.pad_token_id},
                              masks={"input_ids": "attention_mask", "prompt_ids": "prompt_mask"},
                              left=frozenset({"prompt_ids"}),
                              max_width=run.backbone.max_positions if self.decoder_only else None)
        return PreparedData(
            train=datasets.get("train"), validation=datasets.get("validation"), test=datasets.get("test"),
            collate=collate, label_names=[], preprocessors={"text": tokenizer}, sources=fingerprints(paths), rows=rows,
            warnings=_cut_warnings(self.cut, rows, run.data.max_length))

    def _own_target_tokenizer(self, run: RunConfig, model_dir: Path | None, train: list[PairRow]) -> Any:
        """An encoder_decoder decoder's own tokenizer (model/'s or backbone.target_tokenizer;
        `auto` trains it on the `train` pairs' targets), else None: targets are written with
        the source tokenizer."""
        if not self.composed:
            return None
        family = backbones.of_folder(model_dir) if model_dir else backbones.family(run.backbone.name)
        targets = (lambda: (r.target for r in train)) if model_dir is None else None
        own = family.target_preprocessor(None if model_dir else run.backbone, folder=model_dir,
                                         training_targets=targets)
        if own is not None:
            own.model_max_length = run.data.max_target_length
        return own

    def attach(self, model_dir: Path) -> None:
        """Read model/ as this task's run wrote it (its kind of model and its tokenizers),
        to translate with it outside a run (fmctl predict on a run or an hf export)."""
        from fmctl.models.text import load_tokenizer_only

        self.decoder_only = not _encoder_decoder(model_dir)
        self.composed = _composed(model_dir)
        self.tokenizer = load_tokenizer_only(model_dir)
        self.target_tokenizer = (backbones.of_folder(model_dir).target_preprocessor(None, folder=model_dir)
                                 if self.composed else None) or self.tokenizer

    def _add_separator(self, tokenizer: Any) -> None:
        from tokenizers import AddedToken

        if self.cfg.separator not in tokenizer.get_vocab():
            tokenizer.add_tokens([AddedToken(self.cfg.separator, special=True, normalized=False)],
                                 special_tokens=True)

    def _encode(self, rows: list[PairRow], tokenizer: Any, max_source: int, max_target: int,
                split: str = "train") -> EncodedDataset:
        sources = tokenizer([self.cfg.source_prefix + r.source for r in rows], add_special_tokens=False)["input_ids"]
        writer = self.target_tokenizer
        targets = writer([r.target for r in rows], add_special_tokens=False)["input_ids"]
        eos = writer.eos_token_id
        # T5 starts decoding from its pad token, an EncoderDecoderModel from its bos ([CLS])
        start = writer.bos_token_id if self.composed else writer.pad_token_id
        self.cut[split] = self.cut.get(split, 0) + sum(len(s) > max_source - self._source_room() for s in sources)
        features = []
        for source, target in zip(sources, targets):
            target = target[:max_target - 1] + [eos]
            if self.decoder_only:
                prompt = source[:max_source] + [tokenizer.convert_tokens_to_ids(self.cfg.separator)]
                features.append({"input_ids": prompt + target, "labels": [IGNORE_INDEX] * len(prompt) + target,
                                 "prompt_ids": prompt, "pair": len(self.pairs) + len(features)})
            else:
                features.append({"input_ids": self._source(source, max_source), "labels": target,
                                 "decoder_input_ids": [start] + target[:-1], "pair": len(self.pairs) + len(features)})
        self.pairs += rows
        return EncodedDataset(features, None)

    def _source_room(self) -> int:
        """Special tokens around an encoder's source: </s> (T5), [CLS] and [SEP] (composed)."""
        if self.decoder_only:
            return 0
        return 2 if self.composed and self.tokenizer.cls_token_id is not None else 1

    def source_frame(self) -> tuple[list[int], list[int]]:
        """The special tokens an encoder reads around a source: `source </s>` (T5),
        `[CLS] source [SEP]` (an EncoderDecoderModel over a BERT-style encoder, as it was
        pretrained); an ONNX export records them for its torch-free loop."""
        tokenizer = self.tokenizer
        if self.composed and tokenizer.cls_token_id is not None:
            end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
            return [tokenizer.cls_token_id], [end]
        return [], [tokenizer.eos_token_id]

    def _source(self, ids: list[int], max_source: int) -> list[int]:
        """What an encoder reads: the source in its frame, cut to max_source in all."""
        start, end = self.source_frame()
        return start + ids[:max_source - len(start) - len(end)] + end

    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        tokenizer = data.preprocessor
        self.backbone = backbones.family(run.backbone.name)
        if self.decoder_only:
            model = self.backbone.build(run.backbone, "causal_lm", tokenizer, grow_vocab=True)
            positions = getattr(model.config, "max_position_embeddings", None)
            if positions and isinstance(data.collate, PadCollator):  # a pretrained GPT's own table
                data.collate.max_width = min(data.collate.max_width or positions, positions)
        else:
            own = {"target_preprocessor": self.target_tokenizer} if self.target_tokenizer is not tokenizer else {}
            model = self.backbone.build(run.backbone, "seq2seq_lm", tokenizer, **own)
            if model.config.decoder_start_token_id is None:
                model.config.decoder_start_token_id = self.target_tokenizer.pad_token_id
        model.generation_config.update(**self._generation_settings(model))
        return model

    def _generation_settings(self, model: Any) -> dict[str, Any]:
        gen = self.cfg.generation
        settings = {"max_new_tokens": gen.max_new_tokens, "num_beams": gen.num_beams, "do_sample": False,
                    "eos_token_id": self.target_tokenizer.eos_token_id,
                    "pad_token_id": self.target_tokenizer.pad_token_id}
        if gen.num_beams > 1:  # transformers warns when it is set for greedy decoding
            settings["length_penalty"] = gen.length_penalty
        if not self.decoder_only:
            settings["decoder_start_token_id"] = model.config.decoder_start_token_id
        return settings

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        if self.decoder_only:
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     decoder_input_ids=batch["decoder_input_ids"]).logits

    def eval_forward(self, model: Any, batch: dict[str, Any]) -> Generated:
        logits = self.forward(model, batch)
        settings = self._generation_settings(model)
        if self.decoder_only:
            prompts = batch["prompt_ids"]
            settings["max_new_tokens"] = _room_after(prompts.shape[1], batch["prompt_mask"], model, settings)
            out = model.generate(input_ids=prompts, attention_mask=batch["prompt_mask"], **settings)
            sequences = out[:, prompts.shape[1]:]
        else:
            sequences = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **settings)
        return Generated(logits, sequences)

    def translate(self, model: Any, sources: list[str], max_source: int) -> list[str]:
        """Generated targets for new sources, encoded and decoded exactly as evaluation does
        it (prefix, separator or </s>, left-padded prompts for GPT, the saved generation
        settings); `self.tokenizer` must be the run's."""
        return self.texts(self.generate_ids(model, self.source_ids(sources, max_source)))

    def source_ids(self, sources: list[str], max_source: int) -> list[list[int]]:
        """What the model reads for each source: the prefix, no special tokens, cut to
        max_source, then the separator (GPT) or cut to max_source - 1, then </s> (T5), or
        [CLS] source [SEP] in max_source (an EncoderDecoderModel)."""
        tokenizer = self.tokenizer
        ids = tokenizer([self.cfg.source_prefix + s for s in sources], add_special_tokens=False)["input_ids"]
        if self.decoder_only:
            separator = tokenizer.convert_tokens_to_ids(self.cfg.separator)
            self.last_cut = sum(len(x) > max_source for x in ids)
            return [x[:max_source] + [separator] for x in ids]
        self.last_cut = sum(len(x) > max_source - self._source_room() for x in ids)
        return [self._source(x, max_source) for x in ids]

    def generate_ids(self, model: Any, prompts: list[list[int]], num_beams: int | None = None) -> list[list[int]]:
        """The generated ids for each prompt (`source_ids`), cut after the end token;
        `num_beams` overrides the run's (1: greedy, as an ONNX export decodes)."""
        import torch

        pad = self.tokenizer.pad_token_id
        # GPT prompts are read left-padded (prompt_ids); the collator counts input_ids
        features = [{"input_ids": p, "prompt_ids": p} if self.decoder_only else {"input_ids": p} for p in prompts]
        batch = PadCollator({"input_ids": pad, "prompt_ids": pad}, masks={"input_ids": "attention_mask",
                            "prompt_ids": "prompt_mask"}, left=frozenset({"prompt_ids"}))(features)
        settings = self._generation_settings(model)
        if num_beams is not None:
            settings["num_beams"] = num_beams
            if num_beams == 1:
                settings.pop("length_penalty", None)
        with torch.inference_mode():
            if self.decoder_only:
                prompts_t = batch["prompt_ids"]
                settings["max_new_tokens"] = _room_after(prompts_t.shape[1], batch["prompt_mask"], model, settings)
                out = model.generate(input_ids=prompts_t, attention_mask=batch["prompt_mask"], **settings)
                sequences = out[:, prompts_t.shape[1]:]
            else:
                sequences = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                           **settings)
                sequences = sequences[:, 1:]  # the decoder's start token
        eos = self.target_tokenizer.eos_token_id
        rows = [row.tolist() for row in sequences]
        return [row[: row.index(eos) + 1] if eos in row else row for row in rows]

    def texts(self, generated: list[list[int]]) -> list[str]:
        texts = self.target_tokenizer.batch_decode(generated, skip_special_tokens=True,
                                                   clean_up_tokenization_spaces=False)
        return [t.strip() for t in texts]

    def loss(self, outputs: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        logits = outputs.logits if isinstance(outputs, Generated) else outputs
        labels = batch["labels"]
        if self.decoder_only:  # token t predicts token t + 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                               label_smoothing=self.cfg.label_smoothing)

    def new_metrics(self) -> "TranslationMetrics":
        return TranslationMetrics(self.pairs, self.target_tokenizer)

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        kept = getattr(model.config, "task_specific_params", None) or {}  # a tied encoder-decoder's flag
        if self.decoder_only:  # what a user needs to build prompts without fmctl
            model.config.task_specific_params = {**kept, self.name: {"separator": self.cfg.separator,
                                                                     "prefix": self.cfg.source_prefix}}
        elif self.cfg.source_prefix:
            model.config.task_specific_params = {**kept, self.name: {"prefix": self.cfg.source_prefix}}
        own = {"target_preprocessor": self.target_tokenizer} if self.target_tokenizer is not self.tokenizer else {}
        self.backbone.save(model, folder, data.preprocessor, **own)

    def load_model(self, folder: Path) -> Any:
        head = "seq2seq_lm" if _encoder_decoder(folder) else "causal_lm"
        self.backbone = backbones.of_folder(folder)
        model, _ = self.backbone.load(folder, head)
        return model

    def example_fields(self, row: PairRow) -> dict[str, Any]:
        return {"source": row.source}

    def auto_class(self, model_dir: Path) -> str:
        return "AutoModelForSeq2SeqLM" if _encoder_decoder(model_dir) else "AutoModelForCausalLM"

    def export_preprocessing(self, run: RunConfig, data: PreparedData, preprocessing: dict[str, Any]) -> dict[str, Any]:
        return {**preprocessing, "max_length": int(run.data.max_length), "source_column": run.data.source_column,
                "text_column": None, "text_pair_column": None,
                "padding": "left (GPT prompts)" if self.decoder_only else "right"}

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        """Generation settings, for fmctl predict on the export (transformers generate)."""
        from dataclasses import asdict

        return {"kind": "generate", "output": "logits", "separator": self.cfg.separator,
                "source_prefix": self.cfg.source_prefix, "decoder_only": not _encoder_decoder(model_dir),
                "generation": asdict(self.cfg.generation)}


def _room_after(width: int, prompt_mask: Any, model: Any, settings: dict[str, Any]) -> int:
    """New tokens a GPT can add after left-padded prompts before its learned positions run
    out. generate() numbers real tokens from 0 (from the attention mask), so the longest
    real prompt decides; the padded width bounds it from above for models that do not."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if not limit:
        return settings["max_new_tokens"]
    longest = int(prompt_mask.sum(dim=1).max()) if prompt_mask is not None else width
    return max(1, min(settings["max_new_tokens"], limit - max(longest, 1)))


def _composed(model_dir: Path) -> bool:
    """Whether model/ is transformers' EncoderDecoderModel (two text models composed)."""
    return saved_config(model_dir).get("model_type") == "encoder-decoder"


def _cut_warnings(cut: dict[str, int], rows: dict[str, list[PairRow]], max_length: int) -> list[str]:
    """One line per split whose sources were cut: how many, and the setting that cut them."""
    return [f"{n} of {len(rows[split])} {split} sources are longer than data.max_length={max_length} tokens "
            f"(with the special tokens) and were cut; raise data.max_length to keep them whole"
            for split, n in cut.items() if n and split in rows]


def _encoder_decoder(model_dir: Path) -> bool:
    """T5-style (encoder-decoder) or GPT-style (decoder-only), as model/config.json says."""
    return bool(saved_config(model_dir).get("is_encoder_decoder", False))


def _gpt_row(data: Any) -> int:
    """A GPT's training row: the source, the separator, the target and its end token."""
    return data.max_length + data.max_target_length + 2


def _lengths(run: RunConfig) -> list[Length]:
    """A GPT reads the source, the separator and the target as one sequence, and
    generates after the source and separator: the sums must fit its positions."""
    lengths = [Length("data.max_length", run.data.max_length)]
    if getattr(run.backbone, "decoder", None) is not None:  # an EncoderDecoderModel's learned decoder positions
        gen = run.task.generation
        lengths += [Length("data.max_target_length", run.data.max_target_length),
                    Length("task.generation.max_new_tokens", gen.max_new_tokens)]
    if run.backbone.name == "gpt":
        data, gen = run.data, run.task.generation
        lengths += [Length("data.max_target_length", _gpt_row(data),
                           "data.max_length + data.max_target_length + 2", "a GPT reads source and target as one sequence"),
                    Length("task.generation.max_new_tokens", data.max_length + 1 + gen.max_new_tokens,
                           "data.max_length + 1 + task.generation.max_new_tokens",
                           "a GPT generates after the source and separator",
                           "lower max_new_tokens or raise backbone.max_positions")]
    return lengths


TASKS = (TaskDeclaration(
    name="translation", aliases=("seq2seq",), config=Seq2SeqTaskConfig, implementation=Seq2Seq,
    backbones=("gpt", "t5", "encoder_decoder"), metrics=("bleu", "chrf", "loss"), main_metric="bleu", main_mode="max",
    lengths=_lengths, customize=True, task_head=False,
    # ONNX: the generator's graphs with a key/value cache, checked by greedy translation
    # (fmctl.export.translation); TorchScript would hold one forward pass, not a decoder.
    serving=Serving(reads="source", inputs=("input_ids", "attention_mask", "decoder_input_ids"),
                    formats=("onnx", *WEIGHT_FORMATS), auto_class="AutoModelForSeq2SeqLM")),)

"""Image captioning: an image encoder (`backbone=vit` or `backbone=cvt`) and a GPT-2 style
decoder (`task.decoder.*`) that cross-attends to the image, trained on tables of
image-caption pairs (the image_text data of contrastive training, `fmctl data icons`).

The model is transformers' VisionEncoderDecoderModel (fmctl.models.captioning): a ViT
encoder is transformers' ViTModel at fmctl's ViT sizes (random init: fmctl's ViT family
is timm's, which VisionEncoderDecoderModel cannot hold), a CvT the CvT family's CvtModel
(random or a local CvT folder). The decoder is the gpt family's, from scratch with a
BPE tokenizer trained on the training captions, or a local GPT-2 folder; its blocks get
cross-attention (new weights for a pretrained decoder). Training is teacher forcing:
the decoder reads <start> caption and predicts caption <end>. Evaluation generates with
translation's settings (`task.generation.*`: greedy or beam search) and scores the
captions with sacrebleu's corpus BLEU and chrF and with CIDEr-D (fmctl.evaluate.cider).
`fmctl predict RUN --images DIR` writes one caption per image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fmctl import backbones
from fmctl.config.schema import RunConfig, TextBackboneConfig, bounded
from fmctl.data.collate import IGNORE_INDEX
from fmctl.errors import ModelError
from fmctl.tasks.base import PreparedData, Task
from fmctl.tasks.declare import IMAGE_INPUTS, Serving, TaskDeclaration
from fmctl.tasks.seq2seq import GenerationConfig

NAME = "captioning"
# Decoder families that can attend to an image (their causal LM takes add_cross_attention).
DECODERS = ("gpt",)


def _decoder_default() -> TextBackboneConfig:
    return TextBackboneConfig(name="gpt", vocab_size=2000, max_positions=128)


@dataclass
class CaptioningTaskConfig:
    name: Literal["captioning"] = "captioning"
    # The text decoder: a gpt backbone config (size, or a local GPT-2 folder in `pretrained`,
    # whose blocks get new cross-attention weights); its tokenizer is trained on the training
    # captions unless `pretrained` or `tokenizer` brings one.
    decoder: TextBackboneConfig = field(default_factory=_decoder_default)
    # Translation's settings: num_beams (1 greedy), max_new_tokens, length_penalty.
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=32))
    label_smoothing: float = bounded(0.0, ge=0.0, lt=1.0)


@dataclass
class Generated:
    """An evaluation batch's outputs: logits for the loss, generated ids for the scores."""

    logits: Any
    sequences: Any


class Captioning(Task):
    def __init__(self, cfg: CaptioningTaskConfig):
        self.cfg = cfg
        self.tokenizer: Any = None
        self.rows: list[Any] = []     # every split's pairs; batches carry indices into it
        self.augment = False

    # ---- data ------------------------------------------------------------------------
    def prepare(self, run: RunConfig, *, model_dir: Path | None = None,
                splits: tuple[str, ...] = ("train", "validation", "test")) -> PreparedData:
        from fmctl.data.image_text import read_image_text
        from fmctl.data.sources import split_paths
        from fmctl.tasks.classification import read_splits
        from fmctl.tasks.text_inputs import fingerprints

        paths = split_paths(run.data)
        warnings: list[str] = []
        rows = read_splits(run.data, paths, lambda p: read_image_text(p, run.data, warnings), splits)
        if model_dir:
            from fmctl.models.text import load_tokenizer_only

            tokenizer = load_tokenizer_only(model_dir)
        else:
            decoder = self.cfg.decoder
            tokenizer = backbones.family(decoder.name).preprocessor(
                decoder, training_texts=lambda: (r.text for r in rows["train"]))
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ModelError("task.decoder.tokenizer: the tokenizer needs an end-of-text and a pad token "
                             "to end and batch captions")
        self.tokenizer = tokenizer
        datasets = {split: self._dataset(split_rows, run.data.max_target_length)
                    for split, split_rows in rows.items()}
        data = PreparedData(train=datasets.get("train"), validation=datasets.get("validation"),
                            test=datasets.get("test"), collate=CaptionCollator(tokenizer.pad_token_id),
                            label_names=[], preprocessors={"text": tokenizer}, sources=fingerprints(paths), rows=rows,
                            warnings=warnings)
        self.augment = run.data.augment
        if model_dir:
            self._attach_images(data, self.image_preprocessing(run, model_dir))
        return data

    def _dataset(self, rows: list[Any], max_target: int) -> "CaptionDataset":
        tokenizer = self.tokenizer
        ids = tokenizer([r.text for r in rows], add_special_tokens=False)["input_ids"]
        start = _start_id(tokenizer)
        encoded = []
        for i, caption in enumerate(ids):
            target = caption[:max_target - 1] + [tokenizer.eos_token_id]
            encoded.append({"input_ids": [start] + target[:-1], "labels": target, "pair": len(self.rows) + i})
        self.rows += rows
        return CaptionDataset(rows, encoded)

    def _attach_images(self, data: PreparedData, prep: dict[str, Any]) -> None:
        """Images follow the encoder's input size and normalisation, known once it exists."""
        from fmctl.data.images import build_transform

        data.preprocessors = {**data.preprocessors, "image": prep}
        for split in ("train", "validation", "test"):
            dataset = getattr(data, split)
            if dataset is not None:
                dataset.transform = build_transform(prep, train=split == "train", augment=self.augment)
                dataset.mode = "L" if prep["in_chans"] == 1 else "RGB"

    # ---- model -----------------------------------------------------------------------
    def build_model(self, run: RunConfig, data: PreparedData) -> Any:
        from fmctl.models import captioning

        tokenizer = self.tokenizer
        encoder = captioning.build_encoder(run.backbone.name, run.backbone)
        decoder = self._decoder(tokenizer)
        ids = {"bos": _start_id(tokenizer), "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
        model = captioning.build(encoder, decoder, run.backbone.name, ids, self._generation())
        self._attach_images(data, captioning.encoder_preprocessing(run.backbone.name, run.backbone, encoder))
        return model

    def _decoder(self, tokenizer: Any) -> Any:
        """The gpt family's causal LM with cross-attention in every block; a decoder whose
        architecture has none (transformers ignores add_cross_attention for it) is refused."""
        cfg = self.cfg.decoder
        decoder = backbones.family(cfg.name).build(cfg, "causal_lm", tokenizer, grow_vocab=True,
                                                   is_decoder=True, add_cross_attention=True)
        if not any(_cross_attention(name) for name, _ in decoder.named_parameters()):
            kind = getattr(decoder.config, "model_type", "this")
            raise ModelError(f"task.decoder.pretrained: '{cfg.pretrained}' is a {kind} decoder, which has no "
                             f"cross-attention to read the image with; captioning needs a GPT-2 decoder "
                             f"(model_type gpt2), or leave task.decoder.pretrained unset to train one")
        return decoder

    def _generation(self) -> dict[str, Any]:
        gen = self.cfg.generation
        settings: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "num_beams": gen.num_beams,
                                    "do_sample": False}
        if gen.num_beams > 1:
            settings["length_penalty"] = gen.length_penalty
        return settings

    def forward(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])

    def eval_forward(self, model: Any, batch: dict[str, Any]) -> Generated:
        return Generated(self.forward(model, batch), model.generate(batch["pixel_values"], **self._generation()))

    def loss(self, outputs: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        logits = outputs.logits if isinstance(outputs, Generated) else outputs
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX,
                               label_smoothing=self.cfg.label_smoothing)

    def new_metrics(self) -> Any:
        from fmctl.evaluate.captioning import CaptionMetrics

        return CaptionMetrics(self.rows, self.tokenizer)

    def save_model(self, model: Any, data: PreparedData, folder: Path) -> None:
        from fmctl.models import captioning

        captioning.save(model, folder, data.preprocessors["text"], data.preprocessors["image"])

    def load_model(self, folder: Path) -> Any:
        from fmctl.models import captioning

        return captioning.load(folder)

    def example_fields(self, row: Any) -> dict[str, Any]:
        return {"image": str(row.path)}

    # ---- serving -----------------------------------------------------------------------
    def image_preprocessing(self, run: RunConfig, model_dir: Path) -> dict[str, Any]:
        from fmctl.models.captioning import read_config

        return dict(read_config(model_dir)["image_preprocessing"])

    def served_label_names(self, model_dir: Path, data: PreparedData) -> list[str]:
        return []

    def auto_class(self, model_dir: Path) -> str:
        return "VisionEncoderDecoderModel"

    def output_specs(self, label_names: list[str]) -> list[dict[str, Any]]:
        return [{"name": "sequences", "dtype": "int64", "shape": ["batch", "new_tokens"]}]

    def parity_measure(self) -> Any:
        """An export must generate the same token ids as PyTorch for every image."""
        from fmctl.export.measures import SameSequence

        return SameSequence()

    def postprocessing(self, run: RunConfig, label_names: list[str], model_dir: Path) -> dict[str, Any]:
        """Generated token ids back into text with the saved tokenizer (predict on a run folder)."""
        import json
        from dataclasses import asdict

        saved = json.loads((Path(model_dir) / "generation_config.json").read_text(encoding="utf-8"))
        # The tokenizer sits in model/ of the run folder and of an hf export alike.
        return {"kind": "caption", "output": "sequences", "tokenizer": "model",
                "eos_token_id": int(saved["eos_token_id"]), "generation": asdict(self.cfg.generation)}


class CaptionDataset:
    """Images decoded lazily through the encoder's transform; captions tokenised up front."""

    def __init__(self, rows: list[Any], encoded: list[dict[str, Any]]):
        self.rows = rows
        self.encoded = encoded
        self.transform: Any = None
        self.mode = "RGB"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from fmctl.data.image_text import pixels_of

        return {"pixel_values": pixels_of(self.rows[index], self.transform, self.mode), **self.encoded[index]}


class CaptionCollator:
    """Stacked pixels; decoder inputs right-padded with their mask, targets with IGNORE_INDEX."""

    def __init__(self, pad_token_id: int):
        from fmctl.data.collate import PadCollator

        self.text = PadCollator({"input_ids": pad_token_id, "labels": IGNORE_INDEX}, masks={"input_ids": "attention_mask"})

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.text([{k: v for k, v in it.items() if k != "pixel_values"} for it in items])
        batch["pixel_values"] = torch.stack([it["pixel_values"] for it in items])
        return batch


def _start_id(tokenizer: Any) -> int:
    """The decoder's first token: the tokenizer's start token, else its end token (GPT-2's
    <|endoftext|> is both)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def _cross_attention(name: str) -> bool:
    return any(marker in name for marker in ("crossattention", "cross_attn", "encoder_attn"))


def _checks(run: Any) -> list[str]:
    decoder, data, gen = run.task.decoder, run.data, run.task.generation
    problems = []
    # The decoder reads its start token and the caption, and generates after its start token.
    for key, length in (("data.max_target_length", data.max_target_length),
                        ("task.generation.max_new_tokens", gen.max_new_tokens + 1)):
        if length > decoder.max_positions:
            problems.append(f"{key}: the decoder reads {length} positions, more than task.decoder.max_positions "
                            f"({decoder.max_positions}); lower it or raise task.decoder.max_positions")
    if decoder.name not in DECODERS:
        problems.append(f"task.decoder.name: '{decoder.name}' gives no decoder that cross-attends to an image; "
                        f"captioning's decoder is a GPT-2 style one: task.decoder.name=gpt")
    if run.backbone.name == "vit" and getattr(run.backbone, "pretrained", None):
        problems.append("backbone.pretrained: captioning builds its ViT encoder in transformers (ViTModel) from "
                        "backbone.size, and fmctl's pretrained ViTs are timm's; leave backbone.pretrained unset, or "
                        "use backbone=cvt with a local CvT folder")
    if run.backbone.name == "vit" and getattr(run.backbone, "arch", None):
        problems.append("backbone.arch: a timm architecture; captioning's ViT encoder is transformers' ViTModel "
                        "at backbone.size (leave backbone.arch unset)")
    return problems


TASKS = (TaskDeclaration(
    name=NAME, config=CaptioningTaskConfig, implementation=Captioning, backbones=("vit", "cvt"),
    metrics=("bleu", "chrf", "cider", "loss"), main_metric="cider", main_mode="max", checks=_checks,
    # Export: the hf folder only (model/ as VisionEncoderDecoderModel saves it; the bare
    # safetensors export rebuilds a model with from_config, which this class lacks); an ONNX
    # captioner would need an encoder graph and a decoder graph with a key/value cache and a
    # greedy-decoding parity check, which is not built yet.
    serving=Serving(reads="image", inputs=IMAGE_INPUTS, outputs=("sequences",), formats=("hf",),
                    not_quantizable="captioning generates text; int8 is not offered for it yet",
                    auto_class="VisionEncoderDecoderModel")),)

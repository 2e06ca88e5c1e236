"""An image captioner: a transformers image encoder (ViT or CvT) and a GPT-2 decoder whose
blocks cross-attend to the image, held as transformers' VisionEncoderDecoderModel.

model/ is that model's save_pretrained folder (config.json, model.safetensors,
generation_config.json) with the decoder's tokenizer and an image processor beside it, so
`VisionEncoderDecoderModel.from_pretrained(model_dir)` reloads it without fmctl and its
generation settings carry fmctl's token ids (the start, end and pad tokens of the
caption tokenizer, not GPT-2's 50256). config.json also keeps, under `fmctl_captioning`,
the encoder's backbone family and fmctl's image preprocessing dict.

Why a wrapper (Captioner) around the transformers model: CvtModel's last hidden state is
a (batch, channels, height, width) grid, and VisionEncoderDecoderModel hands the
encoder's first output to cross-attention as it is; Captioner encodes the pixels itself
and flattens a grid into (batch, height * width, channels) tokens, the class token first
where the last stage has one, then passes them as `encoder_outputs`. A ViT's states are
already tokens and go through unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmctl.errors import ModelError, RunFolderError

MARKER = "fmctl_captioning"
# A ViT encoder built from scratch without backbone.image_size / patch_size (as fmctl's timm ViT).
FRESH_IMAGE_SIZE, FRESH_PATCH_SIZE = 32, 4


class Captioner(nn.Module):
    """pixels and decoder tokens -> next-token logits; pixels alone -> generated token ids
    (what predict's runner and `generate` give: the caption, start token dropped)."""

    def __init__(self, model: Any, encoder_family: str):
        super().__init__()
        self.model = model
        self.encoder_family = encoder_family
        # How fmctl.backbones reads it: the encoder is a tower of its family, the decoder a GPT
        # tower; the cross-attention projection (enc_to_dec_proj) is the model's own head.
        self.fmctl_towers = {"image": (encoder_family, "model.encoder"), "text": ("gpt", "model.decoder")}

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def generation_config(self) -> Any:
        return self.model.generation_config

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        """trainer.gradient_checkpointing: the transformers model's own, encoder and decoder."""
        self.model.activation_checkpointing_enable(**kwargs)

    def encode(self, pixel_values: torch.Tensor) -> Any:
        from transformers.modeling_outputs import BaseModelOutput

        out = self.model.encoder(pixel_values=pixel_values, return_dict=True)
        states = out.last_hidden_state
        if states.ndim == 4:  # CvT: a grid of channels, read as one token per position
            states = states.flatten(2).transpose(1, 2)
            cls = getattr(out, "cls_token_value", None)
            if cls is not None:
                states = torch.cat([cls, states], dim=1)
        return BaseModelOutput(last_hidden_state=states)

    def forward(self, pixel_values: torch.Tensor, decoder_input_ids: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if decoder_input_ids is None:
            return self.generate(pixel_values)
        return self.model(encoder_outputs=self.encode(pixel_values), decoder_input_ids=decoder_input_ids,
                          decoder_attention_mask=decoder_attention_mask).logits

    def generate(self, pixel_values: torch.Tensor, **settings: Any) -> torch.Tensor:
        """Token ids of each image's caption under the saved generation settings (or
        `settings`), without the start token; rows end with the end token or padding."""
        out = self.model.generate(encoder_outputs=self.encode(pixel_values), **settings)
        return out[:, 1:]


def build_encoder(family: str, cfg: Any) -> Any:
    """The transformers image encoder VisionEncoderDecoderModel holds: a ViTModel at fmctl's
    ViT size (random init), or the CvT family's CvtModel (random or a local CvT folder)."""
    from fmctl import backbones

    if family == "cvt":
        encoder = backbones.family("cvt").build(cfg, "features")
        # VisionEncoderDecoderModel compares encoder and decoder widths through hidden_size,
        # which CvtConfig lacks: the last stage's width is the one cross-attention reads.
        encoder.config.hidden_size = int(encoder.config.embed_dim[-1])
        return encoder
    from transformers import ViTConfig, ViTModel

    from fmctl.models.sizes import shape_for

    shape = shape_for(cfg.size, cfg.hidden_size, cfg.num_layers, cfg.num_heads)
    image_size, patch_size = cfg.image_size or FRESH_IMAGE_SIZE, cfg.patch_size or FRESH_PATCH_SIZE
    if image_size % patch_size:
        raise ModelError(f"backbone.patch_size: {patch_size} does not divide backbone.image_size {image_size}")
    config = ViTConfig(hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
                       num_attention_heads=shape.num_heads, intermediate_size=shape.intermediate_size,
                       image_size=image_size, patch_size=patch_size, num_channels=cfg.in_chans,
                       hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
    return ViTModel(config, add_pooling_layer=False)


def encoder_preprocessing(family: str, cfg: Any, encoder: Any) -> dict[str, Any]:
    """fmctl's image preprocessing dict for the encoder: the CvT family's, or a ViT's from
    scratch (mean and std 0.5 as fmctl's timm ViT; the whole image squashed to size, as
    ViTImageProcessor resizes, so model/ reads images alike with or without fmctl)."""
    if family == "cvt":
        from fmctl import backbones

        return backbones.family("cvt").preprocessor(cfg, model=encoder)
    channels = int(encoder.config.num_channels)
    return {"image_size": int(encoder.config.image_size), "in_chans": channels, "mean": [0.5] * channels,
            "std": [0.5] * channels, "crop_pct": 1.0, "crop_mode": "squash", "interpolation": "bilinear"}


def build(encoder: Any, decoder: Any, family: str, ids: dict[str, int], generation: dict[str, Any]) -> Captioner:
    """Join the encoder and the decoder (built with add_cross_attention) and set every id
    generation and shift_tokens_right read, on the config and the generation config."""
    from transformers import GenerationConfig, VisionEncoderDecoderModel

    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    for key, value in (("decoder_start_token_id", ids["bos"]), ("pad_token_id", ids["pad"]),
                       ("eos_token_id", ids["eos"]), ("bos_token_id", ids["bos"])):
        setattr(model.config, key, value)
    model.generation_config = GenerationConfig(decoder_start_token_id=ids["bos"], bos_token_id=ids["bos"],
                                               eos_token_id=ids["eos"], pad_token_id=ids["pad"], **generation)
    return Captioner(model, family)


def save(captioner: Captioner, folder: Path, tokenizer: Any, prep: dict[str, Any]) -> None:
    """save_pretrained, the tokenizer and the image processor (ViTImageProcessor for a
    ViT encoder, the CvT family's ConvNextImageProcessor)."""
    from fmctl.models.text import _quiet_transformers

    _quiet_transformers()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = captioner.model
    setattr(model.config, MARKER, {"encoder_family": captioner.encoder_family, "image_preprocessing": prep})
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    image_processor(captioner.encoder_family, prep).save_pretrained(str(folder))


def image_processor(family: str, prep: dict[str, Any]) -> Any:
    if family == "cvt":
        from fmctl.models.cvt import image_processor as cvt_processor

        return cvt_processor(prep)
    from transformers import ViTImageProcessor

    size = int(prep["image_size"])
    return ViTImageProcessor(do_resize=True, size={"height": size, "width": size}, resample=2, do_rescale=True,
                             rescale_factor=1 / 255, do_normalize=True, image_mean=list(prep["mean"]),
                             image_std=list(prep["std"]))


def read_config(folder: Path) -> dict[str, Any]:
    """model/'s `fmctl_captioning` entry (encoder family, image preprocessing)."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: cannot read ({exc})") from None
    if MARKER not in config:
        raise RunFolderError(f"{folder}: not a captioning model/ (its config.json has no {MARKER})")
    return config[MARKER]


def load(folder: Path) -> Captioner:
    import torch
    from transformers import VisionEncoderDecoderModel

    from fmctl.models.text import _quiet_transformers

    _quiet_transformers()
    saved = read_config(folder)
    model = VisionEncoderDecoderModel.from_pretrained(str(folder), dtype=torch.float32)
    return Captioner(model, saved["encoder_family"])

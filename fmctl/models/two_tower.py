"""CLIP's model: an image tower and a text tower, each projected into one shared space,
and a learnable temperature.

The towers are the families' own modules (a timm ViT without its classifier, a
transformers base model), so each is saved in its library's layout and loads without
fmctl; what belongs to the pair is small: two linear projections without bias, the log
of the logit scale and, for the sigmoid loss, a logit bias (fmctl.backbones.clip saves
them in projections.safetensors).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

POOLINGS = ("mean", "cls", "last")


def pool_tokens(states: Any, attention_mask: Any, pooling: str) -> Any:
    """One vector per sequence from a text tower's last hidden states: the mean over real
    tokens, the first token, or the last real token (right padding)."""
    if pooling == "cls":
        return states[:, 0]
    mask = attention_mask.to(states.dtype).unsqueeze(-1)
    if pooling == "mean":
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    last = (attention_mask.sum(1) - 1).clamp(min=0)
    return states[torch.arange(states.shape[0], device=states.device), last]


class TwoTowerModel(nn.Module):
    """encode_image / encode_text give L2-normalised embeddings; forward gives both with
    the logit scale (clamped at `logit_scale_max`) and the logit bias (None for CLIP)."""

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, *, image_family: str, text_family: str,
                 embed_dim: int, text_pooling: str, logit_scale_init: float = 1 / 0.07,
                 logit_scale_max: float = 100.0, logit_bias_init: float | None = None):
        super().__init__()
        if text_pooling not in POOLINGS:
            raise ValueError(f"text pooling '{text_pooling}' is not one of {', '.join(POOLINGS)}")
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.image_family, self.text_family = image_family, text_family
        self.text_pooling = text_pooling
        self.logit_scale_max = float(logit_scale_max)
        if text_pooling != "cls" and getattr(text_tower, "pooler", None) is not None:
            # BERT's pooler would get no gradient (an error under DDP) and is not saved.
            text_tower.pooler = None
        self.image_projection = nn.Linear(image_tower.num_features, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_tower.config.hidden_size, embed_dim, bias=False)
        nn.init.normal_(self.image_projection.weight, std=image_tower.num_features ** -0.5)
        nn.init.normal_(self.text_projection.weight, std=text_tower.config.hidden_size ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias_init))) if logit_bias_init is not None else None

    @property
    def embed_dim(self) -> int:
        return self.image_projection.out_features

    def no_weight_decay(self) -> set[str]:
        """The temperature and bias are scalars that decay would pull towards 1 and 0."""
        return {"logit_scale", "logit_bias"}

    def encode_image(self, pixel_values: Any) -> Any:
        features = self.image_tower(pixel_values)
        return nn.functional.normalize(self.image_projection(features), dim=-1)

    def encode_text(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        states = self.text_tower(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        pooled = pool_tokens(states, attention_mask, self.text_pooling)
        return nn.functional.normalize(self.text_projection(pooled), dim=-1)

    def scale(self) -> Any:
        return self.logit_scale.clamp(max=math.log(self.logit_scale_max)).exp()

    def forward(self, pixel_values: Any, input_ids: Any, attention_mask: Any,
                token_type_ids: Any = None) -> tuple[Any, Any, Any, Any]:
        return (self.encode_image(pixel_values), self.encode_text(input_ids, attention_mask, token_type_ids),
                self.scale(), self.logit_bias)


class ImageEncoder(nn.Module):
    """The image half as a module of its own (an export graph): pixels -> embeddings.
    Inputs come as *inputs, as every module fmctl exports takes them (the exporter's
    dynamic shapes are declared for that signature)."""

    def __init__(self, model: TwoTowerModel):
        super().__init__()
        self.model = model

    def forward(self, *inputs: Any) -> Any:
        return self.model.encode_image(inputs[0])


class TextEncoder(nn.Module):
    """The text half as a module of its own (an export graph): token ids -> embeddings."""

    def __init__(self, model: TwoTowerModel, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *inputs: Any) -> Any:
        named = dict(zip(self.input_names, inputs))
        return self.model.encode_text(named["input_ids"], named["attention_mask"], named.get("token_type_ids"))

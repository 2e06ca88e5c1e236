"""A semantic-segmentation model: a backbone family's image encoder and a light decoder.

The decoder is SegFormer's all-MLP head (Xie et al., 2021): each feature map the encoder
gives (CvT's three stages at strides 4, 8 and 16; a ViT's last block, its only scale) is
projected to `decoder_dim` channels, brought to the finest map's grid, concatenated,
fused by a 1x1 convolution with batch norm, and classified per position; the logits are
upsampled bilinearly to the input's size, so outputs and masks are pixel for pixel.

model/ keeps each part in its own library's layout: encoder/ is the family's folder (a
CvT's save_pretrained, a ViT's timm save_for_hf), decode_head.safetensors the decoder,
config.json what rebuilds the whole (backbone, classes, decoder width, preprocessing).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmctl import backbones

ENCODER, HEAD_WEIGHTS = "encoder", "decode_head.safetensors"


class DecodeHead(nn.Module):
    def __init__(self, channels: list[int], width: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, width, kernel_size=1) for c in channels)
        self.fuse = nn.Sequential(nn.Conv2d(width * len(channels), width, kernel_size=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.dropout = nn.Dropout2d(dropout)
        self.classify = nn.Conv2d(width, num_classes, kernel_size=1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        projected = [nn.functional.interpolate(p(m), size=size, mode="bilinear", align_corners=False)
                     if m.shape[-2:] != size else p(m) for p, m in zip(self.project, maps)]
        return self.classify(self.dropout(self.fuse(torch.cat(projected, dim=1))))


class SegmentationModel(nn.Module):
    """pixels (batch, channels, H, W) -> logits (batch, classes, H, W)."""

    def __init__(self, encoder: nn.Module, backbone: str, num_classes: int, decoder_dim: int):
        super().__init__()
        self.encoder = encoder
        self.backbone = backbone
        # How fmctl.backbones reads this model: the encoder is a tower of the family, the
        # decoder the model's own head (freezing, LoRA, layer-wise learning rates follow).
        self.fmctl_towers = {"image": (backbone, ENCODER)}
        self.channels = backbones.family(backbone).feature_channels(encoder)
        self.decode_head = DecodeHead(self.channels, decoder_dim, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        maps = backbones.family(self.backbone).feature_maps(self.encoder, pixel_values)
        logits = self.decode_head(maps)
        return nn.functional.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)


def save(model: SegmentationModel, folder: Path, prep: dict[str, Any], label_names: list[str],
         ignore_index: int) -> None:
    """encoder/ in its family's layout, the decoder's weights, and config.json."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbones.family(model.backbone).save(model.encoder, folder / ENCODER, prep)
    save_model(model.decode_head, str(folder / HEAD_WEIGHTS))
    config = {"fmctl_model": "semantic_segmentation", "backbone": model.backbone, "encoder": ENCODER,
              "decode_head": HEAD_WEIGHTS, "decoder_dim": model.decode_head.fuse[0].out_channels,
              "feature_channels": list(model.channels), "label_names": list(label_names),
              "ignore_index": ignore_index, "image_preprocessing": prep}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def load(folder: Path) -> SegmentationModel:
    from safetensors.torch import load_model

    config = read_config(folder)
    encoder, _ = backbones.family(config["backbone"]).load(Path(folder) / config["encoder"], "features")
    model = SegmentationModel(encoder, config["backbone"], len(config["label_names"]), int(config["decoder_dim"]))
    load_model(model.decode_head, str(Path(folder) / config["decode_head"]))
    return model


def read_config(folder: Path) -> dict[str, Any]:
    from fmctl.errors import RunFolderError

    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    if config.get("fmctl_model") != "semantic_segmentation":
        raise RunFolderError(f"{folder}: not a segmentation model/ (its config.json has no fmctl_model: "
                             f"semantic_segmentation)")
    return config

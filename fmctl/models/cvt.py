"""CvT models from transformers: built from a config at fmctl's sizes or the published
CvT-13/21 shapes, or loaded from a save_pretrained folder; saved with save_pretrained and
an image processor, so `AutoModelForImageClassification` and `AutoImageProcessor` reload
model/ without fmctl.

The image preprocessing is fmctl's dict (image_size, in_chans, mean, std, crop_pct,
crop_mode, interpolation), the one ViT's timm config gives, so training transforms,
export manifests and predict's encoders read a CvT as they read a ViT. It is saved as a
ConvNextImageProcessor, the processor Microsoft's CvT checkpoints ship with: resize the
short side to size / crop_pct and centre-crop `size` below 384 pixels, resize both sides
to `size` from 384 up (crop_mode 'squash').
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmctl.errors import ModelError
from fmctl.models import pretrained

# A model built from scratch without backbone.image_size.
FRESH_IMAGE_SIZE = 32
# ConvNextImageProcessor resizes without cropping from this size up.
_SQUASH_FROM = 384
_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class CvtShape:
    embed_dims: tuple[int, int, int]
    num_heads: tuple[int, int, int]
    depths: tuple[int, int, int]


# Wu et al. (2021), Table 2; CvtConfig's defaults are CvT-13.
PUBLISHED = {"cvt-13": CvtShape((64, 192, 384), (1, 3, 6), (1, 2, 10)),
             "cvt-21": CvtShape((64, 192, 384), (1, 3, 6), (1, 4, 16))}


def fmctl_shape(size: str) -> CvtShape:
    """fmctl's size of that name in CvT's three stages: the last stage at the size table's
    width, heads and depth (at least 3, the fewest transformers builds there), the first
    two at a quarter and half the width, one and two blocks deep, as in CvT-13."""
    from fmctl.models.sizes import SIZES

    shape = SIZES[size]
    width, heads = shape.hidden_size, shape.num_heads
    return CvtShape((width // 4, width // 2, width), (max(1, heads // 4), max(1, heads // 2), heads),
                    (1, 2, max(3, shape.num_layers)))


def shape_of(cfg: Any) -> CvtShape:
    """The size's shape with the config's per-stage overrides."""
    base = PUBLISHED[cfg.size] if cfg.size in PUBLISHED else fmctl_shape(cfg.size)
    return CvtShape(tuple(cfg.embed_dims or base.embed_dims), tuple(cfg.num_heads or base.num_heads),
                    tuple(cfg.depths or base.depths))


def fresh_config(cfg: Any, **updates: Any) -> Any:
    from transformers import CvtConfig

    shape = shape_of(cfg)
    return CvtConfig(num_channels=cfg.in_chans, embed_dim=list(shape.embed_dims), num_heads=list(shape.num_heads),
                     depth=list(shape.depths), drop_rate=[cfg.dropout] * 3,
                     attention_drop_rate=[cfg.attention_dropout] * 3, drop_path_rate=[0.0, 0.0, cfg.drop_path],
                     **updates)


def build_classifier(cfg: Any, label_names: list[str]) -> Any:
    """CvtForImageClassification with one output per label (id2label in its config)."""
    from transformers import CvtForImageClassification

    from fmctl.models.text import label_metadata

    labels = label_metadata(label_names)
    if cfg.pretrained:
        return _pretrained(cfg, CvtForImageClassification, **labels)
    return CvtForImageClassification(fresh_config(cfg, **labels))


def build_encoder(cfg: Any) -> Any:
    """The bare CvtModel (no class-token norm, no classifier)."""
    from transformers import CvtModel

    if cfg.pretrained:
        return _pretrained(cfg, CvtModel)
    return CvtModel(fresh_config(cfg), add_pooling_layer=False)


def _pretrained(cfg: Any, cls: Any, **updates: Any) -> Any:
    """`cls` from a local CvT folder: the rates of this run applied, a new classifier where
    the labels differ (ignore_mismatched_sizes)."""
    import torch

    from fmctl.models.text import _quiet_transformers

    _quiet_transformers()
    where = _cvt_folder(cfg.pretrained)
    config = json.loads((where / "config.json").read_text(encoding="utf-8"))
    stages = len(config.get("depth", ()))
    rates = {"drop_rate": [cfg.dropout] * stages, "attention_drop_rate": [cfg.attention_dropout] * stages,
             "drop_path_rate": [0.0] * (stages - 1) + [cfg.drop_path]}
    try:
        model = cls.from_pretrained(str(where), **rates, **updates, ignore_mismatched_sizes=True, dtype=torch.float32)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"backbone.pretrained: cannot load a CvT from '{where}' "
                         f"({' '.join(str(exc).split())[:200]})") from None
    spec = getattr(model.config, "fmctl_head", None)
    if spec:  # an MLP head from `fmctl customize`: kept when the labels still fit, else a fresh linear head
        if spec["out_features"] == getattr(model.config, "num_labels", None) and hasattr(model, "classifier"):
            from fmctl.customize.head import restore_head

            restore_head(model, spec, where)
        else:
            del model.config.fmctl_head
    if model.config.num_channels != cfg.in_chans:
        raise ModelError(f"backbone.in_chans: {cfg.in_chans}, but the pretrained '{where}' reads "
                         f"{model.config.num_channels} channels; set backbone.in_chans={model.config.num_channels}")
    return model


def _cvt_folder(spec: str) -> Path:
    """The local folder of backbone.pretrained, refused unless it is a CvT."""
    where = pretrained.resolve(spec)
    if not isinstance(where, Path) or not where.is_dir():
        raise ModelError(f"backbone.pretrained: '{spec}' is not a local folder; save the CvT with save_pretrained "
                         f"(and its image processor) and pass the folder")
    config = json.loads((where / "config.json").read_text(encoding="utf-8"))
    kind = config.get("model_type")
    if kind != "cvt":
        from fmctl.backbones import family, names

        other = next((n for n in names() if family(n).owns(config)), None)
        use = f"; use backbone={other}" if other else ""
        raise ModelError(f"backbone.pretrained: '{where}' is not a CvT (model_type {kind or 'missing'}){use}")
    return where


def preprocessing_from_cfg(cfg: Any) -> dict[str, Any]:
    """What a model built from this config reads: a pretrained folder's processor (at
    backbone.image_size when given: nothing in CvT is tied to one size), else fmctl's
    from-scratch defaults, as for ViT (mean and std 0.5, no crop)."""
    if cfg.pretrained:
        prep = preprocessing_from_folder(_cvt_folder(cfg.pretrained), "backbone.pretrained")
        if cfg.image_size:
            prep.update(image_size=cfg.image_size, crop_mode="squash" if cfg.image_size >= _SQUASH_FROM else "center")
        return prep
    channels = cfg.in_chans
    return {"image_size": cfg.image_size or FRESH_IMAGE_SIZE, "in_chans": channels, "mean": [0.5] * channels,
            "std": [0.5] * channels, "crop_pct": 1.0, "crop_mode": "center", "interpolation": "bilinear"}


def preprocessing_from_folder(folder: Path, key: str = "model") -> dict[str, Any]:
    """The preprocessing dict from a folder's preprocessor_config.json (a ConvNext-style
    shortest edge with crop_pct, or a fixed height and width) and config.json's channels."""
    folder = Path(folder)
    source = folder / "preprocessor_config.json"
    if not source.is_file():
        raise ModelError(f"{key}: '{folder}' has no preprocessor_config.json; save the CvT's image processor "
                         f"beside it (AutoImageProcessor.from_pretrained(...).save_pretrained(folder))")
    proc = json.loads(source.read_text(encoding="utf-8"))
    channels = int(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("num_channels", 3))
    size = proc.get("size") or {}
    common = {"in_chans": channels, "mean": [float(v) for v in proc.get("image_mean", [0.5] * channels)],
              "std": [float(v) for v in proc.get("image_std", [0.5] * channels)],
              "interpolation": _FILTERS.get(int(proc.get("resample", 2)), "bilinear")}
    if "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        squash = edge >= _SQUASH_FROM
        return {"image_size": edge, **common, "crop_pct": 1.0 if squash else float(proc.get("crop_pct") or 1.0),
                "crop_mode": "squash" if squash else "center"}
    if size.get("height") and size.get("height") == size.get("width"):
        return {"image_size": int(size["height"]), **common, "crop_pct": 1.0, "crop_mode": "squash"}
    raise ModelError(f"{key}: '{source}' gives size {size}; fmctl reads a square input (shortest_edge, or equal "
                     f"height and width)")


def image_processor(prep: dict[str, Any]) -> Any:
    """The preprocessing dict as the ConvNextImageProcessor that CvT checkpoints ship with."""
    from transformers import ConvNextImageProcessor

    resample = {name: code for code, name in _FILTERS.items()}.get(prep["interpolation"], 2)
    crop_pct = 1.0 if prep.get("crop_mode") == "squash" else float(prep["crop_pct"])
    return ConvNextImageProcessor(do_resize=True, size={"shortest_edge": int(prep["image_size"])}, crop_pct=crop_pct,
                                  resample=resample, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                  image_mean=list(prep["mean"]), image_std=list(prep["std"]))


def save(model: Any, folder: Path, prep: dict[str, Any] | None, label_names: list[str]) -> None:
    """save_pretrained (labels in id2label) plus the image processor."""
    from fmctl.models.text import _quiet_transformers

    if prep is None:
        raise ValueError("a CvT is saved with its image preprocessing (pass preprocessor=...)")
    _quiet_transformers()
    if label_names and hasattr(model.config, "id2label"):
        from fmctl.models.text import label_metadata

        for key, value in label_metadata(label_names).items():
            setattr(model.config, key, value)
    model.save_pretrained(str(folder), safe_serialization=True)
    image_processor(prep).save_pretrained(str(folder))


def load(folder: Path, head: str = "image_classification") -> Any:
    """model/ as AutoModelForImageClassification (or the bare CvtModel) reloads it, with an
    MLP head from `fmctl customize` put back."""
    import torch
    import transformers

    from fmctl.models.text import _quiet_transformers

    _quiet_transformers()
    cls = transformers.AutoModelForImageClassification if head == "image_classification" else transformers.CvtModel
    model = cls.from_pretrained(str(folder), dtype=torch.float32)
    spec = getattr(model.config, "fmctl_head", None)
    if spec:
        from fmctl.customize.head import restore_head

        restore_head(model, spec, Path(folder))
    return model

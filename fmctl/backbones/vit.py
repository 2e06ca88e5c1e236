"""ViT from timm: image classification, and the encoder of SimMIM pretraining
(fmctl.models.simmim, which holds the ViT as `encoder`)."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from fmctl.backbones._locate import existing, uniform_stack, unwrap
from fmctl.backbones.base import BackboneFamily
from fmctl.backbones.structure import FfnLayout, HeadLayout, Structure, declared
from fmctl.config.schema import VisionBackboneConfig

HEADS = ("image_classification", "pretraining", "features")


class Vit(BackboneFamily):
    name = "vit"
    config = VisionBackboneConfig
    modalities = ("image",)
    image_tower = True                 # "pretraining" head: pooled num_features, as CLIP reads it
    kind = "an image model"
    # timm's classifier, the norm before it under average pooling, and its dropout.
    head_markers = ("head.", "fc_norm.", "head_drop")
    head_attrs = ("head",)
    lora_targets = ("qkv", "attn.proj")
    attention_dropout = ("attn.attn_drop",)
    head_layout = HeadLayout(count="attn.num_heads", projections=(("attn.qkv", 0, (0, 1, 2)), ("attn.proj", 1, (0,))))
    # timm builds every block's MLP int(embed_dim * mlp_ratio) wide.
    ffn_layout = FfnLayout(expand="mlp.fc1", reduce="mlp.fc2", width_key="mlp_ratio", ratio=True)

    def build(self, cfg: Any, head: str, preprocessor: Any = None, **options: Any) -> Any:
        """'image_classification' with num_classes in `options`, or 'pretraining' /
        'features': the head-less encoder (SimMIM wraps it; a segmentation decoder reads
        its last block)."""
        from fmctl.models import vision

        if head not in HEADS:
            raise ValueError(f"unknown head '{head}' for backbone 'vit'; heads: {', '.join(HEADS)}")
        return vision.build_vit_classifier(cfg, options["num_classes"] if head == HEADS[0] else 0)

    def load(self, folder: Path, head: str = HEADS[0]) -> tuple[Any, Any]:
        from fmctl.models import vision

        model = vision.load_for_inference(folder)
        return model, vision.preprocessing(model)

    def save(self, model: Any, folder: Path, preprocessor: Any = None, label_names: Sequence[str] = ()) -> None:
        from fmctl.models import vision

        vision.save(model, folder, list(label_names))

    def preprocessor(self, cfg: Any, *, model: Any = None, folder: Path | None = None,
                     training_texts: Callable[[], Iterable[str]] | None = None, split_words: bool = False) -> Any:
        """Input size and normalisation: from a built model, or from model/config.json."""
        from fmctl.models import vision

        if model is not None:
            return vision.preprocessing(model)
        if folder is None:
            raise ValueError("the vit preprocessor is read from a model or a model/ folder")
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        return vision.preprocessing_from_cfg(config["pretrained_cfg"])

    def encoder(self, folder: Path, modality: str = "image", random_init: bool = False, seed: int = 0) -> Any:
        """The timm model's pooled features before its head (a MIM encoder's too)."""
        from fmctl.errors import ModelError
        from fmctl.models.features import ImageEncoder

        if modality != "image":
            raise ModelError(f"{folder}: an image model has no {modality} features")
        return ImageEncoder(folder, random_init, seed)

    def structure(self, model: Any) -> Structure:
        """timm's `blocks` (under `encoder.` in SimMIM). Another timm architecture loaded
        as a ViT falls back to its largest stack of identical modules."""
        from fmctl.models.simmim import SimMIM

        inner, root = unwrap(model)
        base, at = (inner.encoder, "encoder.") if isinstance(inner, SimMIM) else (inner, "")
        found = existing(base, ("blocks",)) or [s for s in (uniform_stack(base),) if s]
        return declared(self, model, [root + at + s for s in found], root)

    def position_table(self, model: Any) -> int | None:
        """Positions follow the image size, which the preprocessing fixes."""
        return None

    def feature_maps(self, encoder: Any, pixel_values: Any) -> list[Any]:
        """The last block's patch tokens (after the final norm) as a grid: one scale, at
        the patch stride; timm's forward_intermediates drops the class token."""
        return list(encoder.forward_intermediates(pixel_values, indices=1, norm=True, output_fmt="NCHW",
                                                  intermediates_only=True))

    def feature_channels(self, encoder: Any) -> list[int]:
        return [int(encoder.embed_dim)]

    def owns(self, config: Any) -> bool:
        """timm's save_for_hf layout: an architecture and no transformers model_type."""
        return "architecture" in config and not config.get("model_type")


FAMILY = Vit()

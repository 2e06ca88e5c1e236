"""CvT, the Convolutional vision Transformer (Wu et al., 2021), from transformers
(`CvtForImageClassification`, `CvtModel`): image classification, and the multi-scale
encoder of semantic segmentation.

CvT is staged: three stages, each a strided convolution into a narrower grid and a stack
of blocks whose query/key/value come through depth-wise convolutions. Its config holds one
value per stage (depths, widths, heads), so it has a config dataclass of its own, and the
family declares three stacks. Built models delegate to fmctl.models.cvt; nothing here
imports torch or transformers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from fmctl.backbones.base import BackboneFamily
from fmctl.backbones.structure import Structure, declared
from fmctl.config.schema import bounded

HEADS = ("image_classification", "features")
STAGES = 3


@dataclass
class CvtBackboneConfig:
    name: str = "cvt"
    # fmctl's sizes (the last stage at the compact-BERT width, heads and depth of that
    # name; fmctl.models.cvt.SHAPES) or the published CvT-13 / CvT-21 shapes.
    size: Literal["tiny", "mini", "small", "base", "cvt-13", "cvt-21"] = "tiny"
    # A save_pretrained folder of a CvT (config.json with model_type "cvt" and, for its
    # input size and normalisation, preprocessor_config.json), or an fmctl run folder.
    pretrained: Optional[str] = None
    # Pixels per side. null: the pretrained processor's, 32 from scratch. Convolutional
    # embeddings take any size, so a pretrained CvT may be given another one as it is.
    image_size: Optional[int] = bounded(None, ge=16)
    in_chans: int = bounded(3, ge=1)
    # Per-stage overrides of the size's shape, three numbers each (null keeps the size's).
    depths: Optional[list[int]] = None
    embed_dims: Optional[list[int]] = None
    num_heads: Optional[list[int]] = None
    # Dropout after every embedding and projection, and on attention probabilities.
    dropout: float = bounded(0.0, ge=0.0, lt=1.0)
    attention_dropout: float = bounded(0.0, ge=0.0, lt=1.0)
    # Stochastic depth of the last stage (the earlier two get none), as CvT-13 was trained.
    drop_path: float = bounded(0.1, ge=0.0, lt=1.0)


def depth_problems(depths: Sequence[int], key: str = "backbone.depths",
                   advice: str = "use depths like [1, 2, 3]") -> list[str]:
    """transformers' CvtStage draws a stage's drop-path rates with linspace over the stage's
    own depth and then reads the rate at the stage's index (modeling_cvt.py:
    `drop_path_rates[self.stage]`), so stage i with 1..i blocks fails with an IndexError
    while being built (and a saved model of that shape never reloads). Said here in one
    line instead."""
    problems = []
    for stage, depth in enumerate(depths):
        if 0 < depth <= stage:
            problems.append(f"{key}: stage {stage} has {depth} block{'s' if depth > 1 else ''}, but transformers' "
                            f"CvT reads stage i's drop-path rate at position i of that stage's own rates "
                            f"(modeling_cvt.py), so stage {stage} needs at least {stage + 1}; {advice}")
    return problems


def shape_problems(cfg: CvtBackboneConfig) -> list[str]:
    """Per-stage lists of the wrong length or value, a width its heads do not divide, and
    depths transformers cannot build; each with its key."""
    problems = []
    for key in ("depths", "embed_dims", "num_heads"):
        value = getattr(cfg, key)
        if value is None:
            continue
        if len(value) != STAGES:
            problems.append(f"backbone.{key}: CvT has {STAGES} stages; give {STAGES} numbers, got {list(value)}")
        elif min(value) < 1:
            problems.append(f"backbone.{key}: every stage needs at least 1, got {list(value)}")
    if problems:
        return problems
    if cfg.pretrained and any(getattr(cfg, k) is not None for k in ("depths", "embed_dims", "num_heads")):
        return ["backbone.depths: a pretrained CvT keeps its own shape; leave depths, embed_dims and num_heads "
                "unset (null) with backbone.pretrained"]
    from fmctl.models.cvt import shape_of

    shape = shape_of(cfg)
    for stage, (width, heads) in enumerate(zip(shape.embed_dims, shape.num_heads)):
        if width % heads:
            problems.append(f"backbone.embed_dims: stage {stage} is {width} wide, which its {heads} heads "
                            f"(backbone.num_heads) do not divide")
    return problems + depth_problems(shape.depths)


class Cvt(BackboneFamily):
    name = "cvt"
    config = CvtBackboneConfig
    modalities = ("image",)
    kind = "an image model"
    model_types = frozenset({"cvt"})
    # The classifier, and the norm before it on the class token (CvtForImageClassification).
    head_markers = ("classifier", "layernorm.")
    head_attrs = ("classifier",)
    # The linear query/key/value projections after CvT's convolutional ones, and the
    # projection after attention.
    lora_targets = ("projection_query", "projection_key", "projection_value", "attention.output.dense")
    attention_dropout = ("attention.attention.dropout",)
    # Per-stage lists in CvtConfig; customize's dropout sets every stage.
    dropout_keys = {"hidden": ("drop_rate",), "attention": ("attention_drop_rate",)}
    depth_keys = ("depth",)

    def build(self, cfg: Any, head: str, preprocessor: Any = None, **options: Any) -> Any:
        """'image_classification' with label_names (or num_classes) in `options`, or
        'features': the bare CvtModel whose stage outputs a segmentation decoder reads."""
        from fmctl.models import cvt

        if head not in HEADS:
            raise ValueError(f"unknown head '{head}' for backbone 'cvt'; heads: {', '.join(HEADS)}")
        if head == "features":
            return cvt.build_encoder(cfg)
        names = options.get("label_names") or [str(i) for i in range(options["num_classes"])]
        return cvt.build_classifier(cfg, list(names))

    def load(self, folder: Path, head: str = HEADS[0]) -> tuple[Any, Any]:
        from fmctl.models import cvt

        return cvt.load(folder, head), cvt.preprocessing_from_folder(folder)

    def save(self, model: Any, folder: Path, preprocessor: Any = None, label_names: Sequence[str] = ()) -> None:
        from fmctl.models import cvt

        cvt.save(model, folder, preprocessor, list(label_names))

    def preprocessor(self, cfg: Any, *, model: Any = None, folder: Path | None = None,
                     training_texts: Callable[[], Iterable[str]] | None = None, split_words: bool = False) -> Any:
        """From a model/ folder (its preprocessor_config.json), else from the config: a
        pretrained folder's processor (at backbone.image_size when given), or fmctl's
        from-scratch defaults."""
        from fmctl.models import cvt

        if folder is not None:
            return cvt.preprocessing_from_folder(folder)
        return cvt.preprocessing_from_cfg(cfg)

    def structure(self, model: Any) -> Structure:
        """The three stages' block stacks under the CvtModel (`cvt.` under the
        classification head); each later stage's downsampling embedding and class token
        go with its first block."""
        from fmctl.backbones._locate import existing, hf_base, unwrap

        inner, root = unwrap(model)
        base, at = hf_base(inner)
        stages = [f"encoder.stages.{i}" for i in range(len(getattr(getattr(base, "encoder", None), "stages", [])))]
        stacks = existing(base, [f"{s}.layers" for s in stages])
        paths = [root + at + s for s in stacks]
        return declared(self, model, paths, root, stages=[p.rpartition(".")[0] for p in paths])

    def position_table(self, model: Any) -> int | None:
        """Convolutional embeddings: no position table limits the input size."""
        return None

    def no_weight_decay(self, model: Any) -> set[str]:
        """Biases and norms, and the class token (as timm exempts ViT's)."""
        exempt = BackboneFamily.no_weight_decay(self, model)
        return exempt | {n for n, _ in model.named_parameters() if n.endswith("cls_token")}

    def checks(self, run: Any) -> list[str]:
        problems = shape_problems(run.backbone)
        if getattr(run.trainer, "gradient_checkpointing", False):
            problems.append("trainer.gradient_checkpointing: transformers' CvT has no activation checkpointing; "
                            "set trainer.gradient_checkpointing=false")
        return problems

    def depth_problem(self, depths: Sequence[int]) -> str | None:
        found = depth_problems(depths, "customize.drop_layers", "keep more of that stage's blocks "
                               "(customize.drop_layers.keep=[...], numbered across the stages)")
        return found[0] if found else None

    def feature_maps(self, encoder: Any, pixel_values: Any) -> list[Any]:
        """Each stage's output grid (strides 4, 8 and 16 at CvT's published patch strides)."""
        return list(encoder(pixel_values, output_hidden_states=True, return_dict=True).hidden_states)

    def feature_channels(self, encoder: Any) -> list[int]:
        return list(encoder.config.embed_dim)


FAMILY = Cvt()

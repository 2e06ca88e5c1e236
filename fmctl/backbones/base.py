"""The backbone-family contract: what a family (BERT, GPT, T5, ViT, ...) declares once so
that nothing else in fmctl keeps a per-family table.

A family is one object with a few plain attributes (its name, config dataclass,
modalities, accepted transformers model types, tokenizer kind and the static facts of its
architecture: head markers, LoRA targets, dropout sites, head and feed-forward layouts,
depth keys) and a few methods: build / load / save / preprocessor delegate to
fmctl.models.text and fmctl.models.vision; `structure(model)` reads the declared
structure off an instance.

Families subclass `BackboneFamily` explicitly to inherit the defaults below; a family
that declares nothing about, say, head pruning simply keeps `head_layout = None` and the
prune operation says so. Nothing here imports torch, transformers or timm.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from fmctl.backbones.structure import FfnLayout, HeadLayout, HeadRemoval

if TYPE_CHECKING:
    from fmctl.backbones.structure import Structure
    from fmctl.backbones.composed import Towers


class BackboneFamily(Protocol):
    """One backbone family. Attributes with values here are defaults a family may keep."""

    name: ClassVar[str]
    # The typed config dataclass of `backbone.*` for this family (fmctl.config.schema).
    config: ClassVar[type]
    modalities: ClassVar[tuple[str, ...]]
    # How the family is described in "use backbone=..." messages ("an encoder").
    kind: ClassVar[str] = "a backbone"
    # transformers model_type values a pretrained folder of this family may have; a folder
    # whose type another family lists is refused (fmctl.models.text.check_pretrained_folder).
    model_types: ClassVar[frozenset[str]] = frozenset()
    # The tokenizer fmctl trains for a from-scratch text backbone (wordpiece, bpe, t5).
    tokenizer_kind: ClassVar[str | None] = None
    # Parameter-name markers of the task head, matched on the first two name parts below
    # any wrapper: "pooler." matches a part equal to "pooler", "classifier" also a part
    # starting with it.
    head_markers: ClassVar[tuple[str, ...]] = ()
    # Attributes of the model that may hold a linear (or MLP) task head, in search order.
    head_attrs: ClassVar[tuple[str, ...]] = ()
    # LoRA's default target-module suffixes (peft's matching rule); fan_in_fan_out for
    # weights stored (in, out) as GPT-2's Conv1D does.
    lora_targets: ClassVar[tuple[str, ...]] = ()
    fan_in_fan_out: ClassVar[bool] = False
    # Dropout modules acting on attention probabilities (name suffixes); every other
    # dropout module is a hidden one. Config keys holding the hidden / attention rates.
    attention_dropout: ClassVar[tuple[str, ...]] = ()
    dropout_keys: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # Where a block keeps its attention heads (None: head pruning is not supported).
    head_layout: ClassVar[HeadLayout | None] = None
    # Where the config records the head count apart from the head width, so heads can be
    # removed, not only zeroed (None: heads are zeroed through head_layout, if declared).
    head_removal: ClassVar[HeadRemoval | None] = None
    # Where a block keeps its feed-forward channels and which saved-config key records
    # their count (None: feed-forward channel removal is not supported).
    ffn_layout: ClassVar[FfnLayout | None] = None
    # transformers config keys holding the number of blocks (drop_layers rewrites them).
    depth_keys: ClassVar[tuple[str, ...]] = ()
    # How a text family's token states become one vector when a composed model (CLIP) reads
    # it as a tower: "mean" over the real tokens (encoders), "last" real token (decoders);
    # None: the family cannot serve as a text tower.
    sequence_pooling: ClassVar[str | None] = None
    # Whether an image family can be a composed model's image tower: built with the head
    # "pretraining" it returns one pooled vector per image, `num_features` wide (timm's
    # contract). A family whose encoder gives only feature maps (CvT here) cannot.
    image_tower: ClassVar[bool] = False
    # Whether a text family can be the encoder of an encoder_decoder (its bare model reads a
    # source), and the transformers model types whose causal LM takes cross-attention, so it
    # can be the decoder (empty: it cannot; Llama-likes and T5 do not).
    seq2seq_encoder: ClassVar[bool] = False
    cross_attention_types: ClassVar[frozenset[str]] = frozenset()

    def build(self, cfg: Any, head: str, preprocessor: Any = None, **options: Any) -> Any:
        """A model of this family with the task head `head`, random or pretrained."""
        ...

    def load(self, folder: Path, head: str) -> tuple[Any, Any]:
        """(model, preprocessor) as fmctl saved them in a model/ folder."""
        ...

    def save(self, model: Any, folder: Path, preprocessor: Any = None, label_names: Sequence[str] = ()) -> None:
        """Write model/ in the library's own layout (reloadable without fmctl)."""
        ...

    def preprocessor(self, cfg: Any, *, model: Any = None, folder: Path | None = None,
                     training_texts: Callable[[], Iterable[str]] | None = None, split_words: bool = False) -> Any:
        """The tokenizer or image preprocessing: from a model/ folder, from a built model,
        or from the backbone config (training a tokenizer when none is given)."""
        ...

    def target_preprocessor(self, cfg: Any, *, folder: Path | None = None,
                            training_targets: Callable[[], Iterable[str]] | None = None) -> Any:
        """A generator's own output tokenizer when it differs from the one its inputs are
        read with (an encoder_decoder whose decoder writes another vocabulary; trained on
        `training_targets` where the config asks for that); None: the same one."""
        return None

    def fresh_config(self, cfg: Any, tokenizer: Any) -> Any:
        """A transformers text family's config for a model built from scratch at cfg's size;
        a family that builds otherwise (timm) is not asked, and says so if it is."""
        from fmctl.errors import ModelError

        raise ModelError(f"backbone '{self.name}' does not build a transformers text config")

    def describe(self, cfg: Any) -> str:
        """Where the weights come from, for the line that announces the model."""
        return cfg.pretrained or f"random init, size {cfg.size}"

    def encoder(self, folder: Path, modality: str, random_init: bool = False, seed: int = 0) -> Any:
        """The backbone saved in `folder` as a frozen feature extractor for `modality`
        (fmctl.models.features: pooled vectors per batch, and the preprocessor that feeds
        it), which `fmctl probe` embeds labelled data with; `random_init`: the same
        architecture with fresh weights (seeded). A two-tower family answers with the
        tower of that modality. A family without one says so."""
        from fmctl.errors import ModelError

        raise ModelError(f"{folder}: backbone '{self.name}' gives no features to probe (families that do: "
                         f"those whose module defines encoder())")

    def checks(self, run: Any) -> list[str]:
        """Config problems only this family has, each "<dotted.key>: <what is wrong>", found
        with every other config problem before anything is built (a per-stage list of the
        wrong length, a shape the library cannot build). Default: none."""
        return []

    def depth_problem(self, depths: Sequence[int]) -> str | None:
        """Why a model with these block counts (one per stack) could not be built, so that
        drop_layers refuses a model/ that would not reload; None: any counts build."""
        return None

    def feature_maps(self, encoder: Any, pixel_values: Any) -> list[Any]:
        """The dense features of an encoder built with the head 'features', each (batch,
        channels, height, width), finest first: what a segmentation decoder reads. An
        image family that gives none says so."""
        from fmctl.errors import ModelError

        raise ModelError(f"backbone '{self.name}' gives no feature maps for a dense-prediction head")

    def feature_channels(self, encoder: Any) -> list[int]:
        """Channels of each map `feature_maps` returns, in the same order."""
        from fmctl.errors import ModelError

        raise ModelError(f"backbone '{self.name}' gives no feature maps for a dense-prediction head")

    def owns(self, config: Mapping[str, Any]) -> bool:
        """Whether a saved model/ folder's config.json is this family's (its model_type is
        one the family lists); a family saved by another library overrides this."""
        return config.get("model_type") in self.model_types

    def structure(self, model: Any) -> Structure | Towers:
        """The model's declared structure, read off this instance (wrappers included)."""
        ...

    def position_table(self, model: Any) -> int | None:
        """How many positions the model's learned position table holds, or None when it has
        none that limits the length (relative positions, images). Default: the transformers
        config's max_position_embeddings, except for encoder-decoders."""
        config = getattr(model, "config", None)
        table = getattr(config, "max_position_embeddings", None) if config is not None else None
        if not isinstance(table, int) or getattr(config, "is_encoder_decoder", False):
            return None
        return table

    def no_weight_decay(self, model: Any) -> set[str]:
        """Parameter names kept out of weight decay: every bias and norm weight (each tensor
        of at most one dimension) and what the model itself exempts (timm's
        no_weight_decay(): position embeddings, class token), by full or last name."""
        exempt = set()
        declared = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
        for name, param in model.named_parameters():
            if param.ndim <= 1 or name in declared or name.split(".")[-1] in declared:
                exempt.add(name)
        return exempt

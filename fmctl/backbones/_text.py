"""What the transformers text families (bert, gpt, t5) do alike: building, loading and
saving go to fmctl.models.text unchanged; only the family's own facts differ (which
language model it pretrains as, where its blocks are)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from fmctl.backbones.base import BackboneFamily

PRETRAINING = "pretraining"


class TextFamily(BackboneFamily):
    """A transformers text family: building, loading, saving and the tokenizer are the
    same for all; a family adds its facts, `pretrains`, `fresh_config` and `structure`."""

    modalities = ("text",)
    # The language model `build(..., "pretraining")` makes: "masked", "causal", or None.
    pretrains: ClassVar[str | None] = None
    # The vectors `fmctl probe` pools from the base model's token states, the default first
    # (fmctl.models.features.TextEncoder); empty: the family gives no probe features.
    poolings: ClassVar[tuple[str, ...]] = ()

    def build(self, cfg: Any, head: str, preprocessor: Any = None, **options: Any) -> Any:
        return build(cfg, head, preprocessor, self.pretrains, **options)

    def load(self, folder: Path, head: str) -> tuple[Any, Any]:
        return load(folder, head)

    def save(self, model: Any, folder: Path, preprocessor: Any = None, label_names: Sequence[str] = ()) -> None:
        save(model, folder, preprocessor)

    def preprocessor(self, cfg: Any, *, model: Any = None, folder: Path | None = None,
                     training_texts: Callable[[], Iterable[str]] | None = None, split_words: bool = False) -> Any:
        return preprocessor(cfg, folder, training_texts, split_words)

    def encoder(self, folder: Path, modality: str = "text", random_init: bool = False, seed: int = 0) -> Any:
        """The base model under any head, pooled as `poolings` says."""
        if not self.poolings:
            return BackboneFamily.encoder(self, folder, modality, random_init, seed)
        return encoder(folder, modality, self.poolings, random_init, seed)


def build(cfg: Any, head: str, tokenizer: Any, pretrains: str | None, **options: Any) -> Any:
    """`head` is one of transformers' task heads (fmctl.models.text.HEADS) or
    'pretraining' (the family's language model: 'masked' or 'causal', as `pretrains`
    says). Sequence classification takes label_names and problem_type in `options`; the
    other heads take config updates and grow_vocab as fmctl.models.text.build_model does."""
    from fmctl.models import text

    if head == PRETRAINING:
        if pretrains is None:
            raise ValueError(f"backbone '{cfg.name}' has no pretraining objective")
        return text.build_language_model(cfg, tokenizer, causal=pretrains == "causal")
    if head == "sequence_classification":
        return text.build_sequence_classifier(cfg, tokenizer, list(options["label_names"]), options.get("problem_type"))
    if head not in text.HEADS:
        heads = ", ".join([*text.HEADS, PRETRAINING])
        raise ValueError(f"unknown head '{head}' for backbone '{cfg.name}'; heads: {heads}")
    return text.build_model(cfg, tokenizer, head, **options)


def load(folder: Path, head: str) -> tuple[Any, Any]:
    from fmctl.models import text

    return text.load_for_inference(folder, head)


def save(model: Any, folder: Path, tokenizer: Any) -> None:
    from fmctl.models import text

    text.save(model, tokenizer, folder)


def preprocessor(cfg: Any, folder: Path | None, training_texts: Callable[[], Iterable[str]] | None,
                 split_words: bool) -> Any:
    """model/'s tokenizer, or the backbone's (trained on the texts when it names none)."""
    from fmctl.models import text

    if folder is not None:
        return text.load_tokenizer_only(folder)
    return text.load_tokenizer(cfg, training_texts or _no_texts, split_words=split_words)


def encoder(folder: Path, modality: str, poolings: tuple[str, ...], random_init: bool, seed: int) -> Any:
    """A text family's frozen base model (fmctl.models.features.TextEncoder)."""
    from fmctl.models.features import TextEncoder

    _text_only(folder, modality)
    return TextEncoder(folder, poolings, random_init, seed)


def _text_only(folder: Path, modality: str) -> None:
    if modality != "text":
        from fmctl.errors import ModelError

        raise ModelError(f"{folder}: a text model has no {modality} features")


def _no_texts() -> Iterable[str]:
    raise ValueError("a tokenizer must be trained here (no backbone.pretrained or backbone.tokenizer): "
                     "pass training_texts")


def locate(model: Any) -> tuple[str, Any, str]:
    """(wrapper prefix, transformers' base model, its path with a trailing dot) of a text
    model as fmctl meets it."""
    from fmctl.backbones._locate import hf_base, unwrap

    inner, root = unwrap(model)
    base, at = hf_base(inner)
    return root, base, at


def stacks_at(root: str, at: str, found: Sequence[str]) -> list[str]:
    return [root + at + path for path in found]

"""The tokenizers of an encoder_decoder: the one the encoder reads (shared with the
decoder unless `backbone.target_tokenizer` gives the decoder its own), and the check that
every pretrained half was trained with the tokenizer it is given.

Why the check: the encoder's input embeddings and the decoder's input and output
embeddings are indexed by token ids; a pretrained half whose own tokenizer numbers words
differently would read and write nonsense. So the source tokenizer is chosen once
(backbone.tokenizer, else the encoder's folder's, else the decoder's when it shares it,
else trained on the training pairs), the target tokenizer is backbone.target_tokenizer or
the same one, and a pretrained half with another vocabulary than its own side's is
refused with the key that names it. Why a second tokenizer at all: MiniLM's English
vocabulary is uncased and strips accents, so a decoder sharing it cannot write `Öffnen`;
a cased target vocabulary (prepared by `fmctl data prepare` on target-language text, an
fmctl CLM run's, or `auto`: trained on the training targets) can.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fmctl.errors import ConfigError, ModelError

AUTO = "auto"   # backbone.target_tokenizer=auto: trained on the training targets


def shared_tokenizer(cfg: Any, training_texts: Callable[[], Iterable[str]] | None) -> Any:
    from fmctl.backbones.composed import keyed
    from fmctl.models.text import load_tokenizer

    if cfg.tokenizer:
        folder, note = tokenizer_folder(cfg.tokenizer)
        source = dataclasses.replace(cfg.encoder, pretrained=None, tokenizer=str(folder))
        tokenizer = load_tokenizer(source, _unused)
        origin = ("backbone.tokenizer", cfg.tokenizer, note)
    else:
        sides = ("encoder",) if cfg.target_tokenizer else ("encoder", "decoder")
        half = next((h for h in sides if getattr(cfg, h).pretrained), None)
        if half is None:  # nothing pretrained: trained on both sides of the pairs, as T5 and GPT are
            source = dataclasses.replace(cfg.encoder, vocab_size=cfg.vocab_size)
            return load_tokenizer(source, training_texts or _unused)
        sub = getattr(cfg, half)
        tokenizer = keyed(half, lambda: load_tokenizer(dataclasses.replace(sub, tokenizer=None), _unused))
        origin = (f"backbone.{half}.pretrained", sub.pretrained, "")
    for half in ("encoder",) if cfg.target_tokenizer else ("encoder", "decoder"):
        sub = getattr(cfg, half)
        if sub.pretrained and f"backbone.{half}.pretrained" != origin[0]:
            _require_same(tokenizer, sub.pretrained, f"backbone.{half}.pretrained", origin)
    return tokenizer


def target_tokenizer(cfg: Any, training_targets: Callable[[], Iterable[str]] | None = None) -> Any | None:
    """The decoder's own tokenizer (backbone.target_tokenizer), checked against a pretrained
    decoder; `auto`: a cased byte-level BPE trained on `training_targets` (byte-level, so
    any character of the target language survives, unlike a lowercasing WordPiece);
    None when the decoder shares the encoder's."""
    from fmctl.models.text import load_tokenizer

    if not cfg.target_tokenizer:
        return None
    if cfg.target_tokenizer == AUTO:
        from fmctl.data.tokenizer_training import train_tokenizer

        if training_targets is None:
            raise ConfigError("backbone.target_tokenizer: auto trains on the training targets, and none were given")
        return train_tokenizer(training_targets(), "bpe", cfg.target_vocab_size, cfg.decoder.max_positions)
    folder, note = tokenizer_folder(cfg.target_tokenizer, "backbone.target_tokenizer")
    source = dataclasses.replace(cfg.decoder, pretrained=None, tokenizer=str(folder))
    tokenizer = load_tokenizer(source, _unused)
    if cfg.decoder.pretrained:
        _require_same(tokenizer, cfg.decoder.pretrained, "backbone.decoder.pretrained",
                      ("backbone.target_tokenizer", cfg.target_tokenizer, note))
    return tokenizer


def tokenizer_folder(spec: str, key: str = "backbone.tokenizer") -> tuple[Path, str]:
    """(the folder holding the tokenizer, a note for messages): a `fmctl data prepare`
    corpus keeps it in tokenizer/, a run folder in model/."""
    from fmctl.models import pretrained

    path = Path(spec).expanduser()
    if (path / "prepared.json").is_file() and (path / "tokenizer").is_dir():
        return path / "tokenizer", "prepared by fmctl data prepare, "
    return Path(pretrained.resolve(spec, key, weights=())), ""


def _require_same(tokenizer: Any, spec: str, key: str, origin: tuple[str, str, str]) -> None:
    """Refuse a pretrained half trained with another vocabulary than the shared tokenizer."""
    from fmctl.models import pretrained
    from fmctl.models.text import has_tokenizer_files, load_tokenizer_only

    where = pretrained.resolve(spec, key)
    if not isinstance(where, Path) or not has_tokenizer_files(where):
        return  # a folder without its tokenizer: its embedding size is checked when it is built
    own = load_tokenizer_only(where)
    if origin[0] == "backbone.tokenizer":
        advice = f"drop backbone.tokenizer, or prepare the data with tokenizer.path={where}"
    elif origin[0] == "backbone.target_tokenizer":
        advice = f"set backbone.target_tokenizer={spec} (the decoder's own)"
    elif key == "backbone.decoder.pretrained":
        advice = f"give the decoder its own vocabulary with backbone.target_tokenizer={spec}"
    else:
        advice = "give both halves models trained with one tokenizer"
    if own.get_vocab() != tokenizer.get_vocab():
        raise ModelError(f"{key}: '{spec}' was trained with another tokenizer ({len(own)} tokens) than the one the "
                         f"data is encoded with, {origin[0]}='{origin[1]}' ({origin[2]}{len(tokenizer)} tokens); "
                         f"its embeddings index its own tokenizer: {advice}")


def _unused() -> Iterable[str]:
    raise ModelError("backbone.tokenizer: no tokenizer to train here")

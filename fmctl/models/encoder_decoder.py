"""Warm-started encoder-decoders: transformers' `EncoderDecoderModel` made of an encoder
and a decoder that shipped text families build (Rothe et al. 2020, "Leveraging
Pre-trained Checkpoints for Sequence Generation Tasks").

The encoder is the family's bare model (`AutoModel`: a BERT, a MiniLM, an fmctl MLM run);
the decoder is the family's causal LM with `is_decoder=True, add_cross_attention=True`
(BERT's `BertLMHeadModel`, GPT-2's `GPT2LMHeadModel`): its self-attention, feed-forward
blocks, embeddings and LM head keep their pretrained weights, and only the
cross-attention layers start random. With `tie`, the decoder's blocks and embeddings
are the encoder's own parameters (BERT2BERT-share): one set of weights, about 40% fewer
parameters.

model/ is EncoderDecoderModel.save_pretrained's layout, so
`EncoderDecoderModel.from_pretrained(model/)` (or AutoModelForSeq2SeqLM) loads it alone;
the generation ids (decoder start, bos, eos, pad) are in config.json and
generation_config.json. transformers 5 no longer ties encoder and decoder weights itself,
so a tied model is saved with both copies (equal values: a plain reload generates the same
text) and `fmctl_tie` in config.json tells fmctl to share them again when training
continues from it (`backbone.pretrained=RUN`); eval, predict and export read the copies.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fmctl.errors import ModelError

TIE_KEY = "fmctl_tie"


def compose(encoder: Any, decoder: Any, ids: dict[str, int], tie: bool) -> Any:
    """EncoderDecoderModel over the two built halves, with the generation ids set
    explicitly (a reload must not guess them) and, with `tie`, shared weights."""
    from transformers import EncoderDecoderModel

    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    for key, value in ids.items():
        setattr(model.config, key, value)
    model.generation_config.update(**ids)
    if tie:
        shared = tie_weights(model)
        if not shared:
            raise ModelError("backbone.tie: the encoder and decoder have no parameters of the same name and shape "
                             "to share; tie needs one family and one shape on both sides")
        model.config.task_specific_params = {**(getattr(model.config, "task_specific_params", None) or {}),
                                             TIE_KEY: True}
    return model


def tie_weights(model: Any) -> int:
    """Make the decoder's embeddings and blocks the encoder's parameters, matched by name
    below each half's base model (cross-attention and the LM head stay the decoder's own);
    returns how many tensors are shared now."""
    encoder = model.encoder
    decoder = model.decoder
    base = decoder.base_model
    own = dict(encoder.named_parameters())
    head = decoder.get_output_embeddings()
    lm_tied = head is not None and head.weight is decoder.get_input_embeddings().weight
    shared = 0
    for name, param in list(base.named_parameters()):
        source = own.get(name)
        if source is not None and source.shape == param.shape and source is not param:
            owner, _, leaf = name.rpartition(".")
            setattr(base.get_submodule(owner) if owner else base, leaf, source)
            shared += 1
    if lm_tied:  # the LM head reads the (now shared) word embeddings, as before
        head.weight = decoder.get_input_embeddings().weight
    return shared


def is_tied(model: Any) -> bool:
    return bool((getattr(model.config, "task_specific_params", None) or {}).get(TIE_KEY))


def save(model: Any, tokenizer: Any, folder: Path) -> None:
    """save_pretrained's layout; a tied model's shared tensors written once per half."""
    state = None
    if is_tied(model):
        seen: dict[int, str] = {}
        state = {}
        for name, tensor in model.state_dict().items():
            pointer = tensor.data_ptr()
            state[name] = tensor.clone() if pointer in seen and name.startswith("decoder.") \
                and seen[pointer].startswith("encoder.") else tensor
            seen.setdefault(pointer, name)
    model.save_pretrained(folder, safe_serialization=True, state_dict=state)
    tokenizer.save_pretrained(folder)


def load(folder: Path, tie: bool = False) -> tuple[Any, Any]:
    """(EncoderDecoderModel, tokenizer) from model/ as transformers loads it; with `tie`
    (to continue training) a model trained tied shares its weights again. Untied, its
    equal copies serve eval, predict and export as a plain reload would."""
    from fmctl.models import text

    model, tokenizer = text.load_for_inference(Path(folder), "seq2seq_lm")
    if type(model).__name__ != "EncoderDecoderModel":
        raise ModelError(f"{folder}: holds a {type(model).__name__}, not an EncoderDecoderModel")
    if tie and is_tied(model):
        tie_weights(model)
    return model, tokenizer


def generation_ids(tokenizer: Any) -> dict[str, int]:
    """decoder_start / bos, eos and pad for a shared tokenizer: a BERT-style one starts
    the target with [CLS] and ends it with [SEP] (Rothe et al.), a GPT-style one with its
    end-of-text token on both sides."""
    return {"decoder_start_token_id": int(tokenizer.bos_token_id), "bos_token_id": int(tokenizer.bos_token_id),
            "eos_token_id": int(tokenizer.eos_token_id), "pad_token_id": int(tokenizer.pad_token_id)}


def mark_ends(tokenizer: Any, key: str) -> Any:
    """Give a tokenizer without them an end token ([SEP]) and a start token ([CLS], else
    the end token), saved with it, so targets end and generation starts the same way in
    fmctl and in a plain transformers reload."""
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.cls_token if tokenizer.cls_token is not None else tokenizer.eos_token
    if tokenizer.eos_token is None or tokenizer.bos_token is None:
        raise ModelError(f"{key}: the tokenizer has no end-of-sequence or [SEP] token to end targets with")
    return tokenizer

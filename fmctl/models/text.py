"""BERT, GPT and T5 backbones from transformers, with the head a task asks for.

Each model is transformers' own `AutoModelFor...` class (sequence or token
classification, question answering, causal or seq2seq LM), so model/ reloads with
transformers alone and gives the same predictions as fmctl.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fmctl.config.schema import TextBackboneConfig
from fmctl.errors import ModelError
from fmctl.models import pretrained

# Task heads: transformers' Auto class for each.
HEADS = {
    "sequence_classification": "AutoModelForSequenceClassification",
    "token_classification": "AutoModelForTokenClassification",
    "question_answering": "AutoModelForQuestionAnswering",
    "causal_lm": "AutoModelForCausalLM",
    "masked_lm": "AutoModelForMaskedLM",
    "seq2seq_lm": "AutoModelForSeq2SeqLM",
    "features": "AutoModel",          # the backbone alone: hidden states for a head of the task's own
}


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# Files a tokenizer is built from. Without one of them transformers 5 builds an empty
# tokenizer from config.json alone (every word unknown) instead of failing.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def load_tokenizer(cfg: TextBackboneConfig, training_texts: Callable[[], Iterable[str]],
                   split_words: bool = False) -> Any:
    """The tokenizer named by backbone.tokenizer or the pretrained folder, else one
    trained on the training texts (WordPiece for BERT, byte-level BPE for GPT).

    A pretrained folder of the wrong family or library is refused first, so the user
    hears about the model rather than about a tokenizer it happens to lack. With
    split_words (token classification) byte-level BPE tokenizers mark every word as
    space-preceded, as the words were in pretraining."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    if cfg.pretrained:
        check_pretrained_folder(cfg.name, pretrained.resolve(cfg.pretrained))
    source = cfg.tokenizer or cfg.pretrained
    key = "backbone.tokenizer" if cfg.tokenizer else "backbone.pretrained"
    if source:
        where = pretrained.resolve(source, key, weights=()) if cfg.tokenizer else pretrained.resolve(source, key)
        if isinstance(where, Path) and not has_tokenizer_files(where):
            if cfg.tokenizer:
                raise ModelError(f"{key}: '{where}' holds no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...)")
            raise ModelError(f"{key}: '{where}' has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...); "
                             f"add them or give backbone.tokenizer=")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(where))
        except OSError as exc:
            if isinstance(where, str):
                raise pretrained.hub_error(where, key, exc) from None
            raise ModelError(f"{key}: cannot load a tokenizer from '{where}' ({' '.join(str(exc).split())[:160]})") from None
    else:
        from fmctl.backbones import family
        from fmctl.data.tokenizer_training import train_tokenizer

        tokenizer = train_tokenizer(training_texts(), family(cfg.name).tokenizer_kind, cfg.vocab_size,
                                    model_max_length=cfg.max_positions)
    if split_words:
        prefix_split_words(tokenizer, key)
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise ModelError(f"{key}: the tokenizer has no pad, end-of-text or unknown token to pad batches with")
    if tokenizer.model_max_length > 10**6:  # "no limit" sentinel in many tokenizer configs
        tokenizer.model_max_length = cfg.max_positions
    return tokenizer


def has_tokenizer_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def check_pretrained_folder(name: str, where: Path | str) -> None:
    """Refuse a local folder that another backbone loads (a timm image model, or a
    transformers model of another family), reading only its config.json."""
    if not isinstance(where, Path) or not (where / "config.json").is_file():
        return  # hub ids and single files: checked when loaded
    try:
        config = json.loads((where / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # AutoConfig reports an unreadable config.json
    if not isinstance(config, dict):
        return
    if not config.get("model_type") and "architecture" in config:  # timm's save_for_hf layout
        raise ModelError(f"backbone.pretrained: '{where}' is a timm image model; use backbone=vit "
                         f"(recipe=image_folder)")
    _check_family(name, config.get("model_type"), where)


def prefix_split_words(tokenizer: Any, key: str) -> None:
    """Make a byte-level BPE tokenizer (GPT-2, RoBERTa) put the word-initial space marker
    'Ġ' on every word of pre-split input.

    Saved with add_prefix_space=False (as roberta-base and gpt2 are), each word would be
    encoded as if glued to the previous one: pieces pretraining never saw for words
    inside a sentence. transformers 5 no longer refuses such input, so the pre-tokenizer
    in tokenizer.json is switched here; model/ and ONNX exports (which read that file
    with `tokenizers`) then encode words the same way. Tokenizers where that switch
    cannot be made (byte-level behind another splitter) are refused."""
    from tokenizers import pre_tokenizers, processors

    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = json.loads(backend.to_str()) if backend is not None else {}
    pre = state.get("pre_tokenizer") or {}
    if "ByteLevel" not in json.dumps(pre):
        return  # WordPiece, SentencePiece (Metaspace): each word is marked by the pre-tokenizer itself
    if pre.get("type") == "ByteLevel" and not pre.get("add_prefix_space"):
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True,
                                                         trim_offsets=pre.get("trim_offsets", True),
                                                         use_regex=pre.get("use_regex", True))
        post = state.get("post_processor") or {}
        if post.get("type") == "RobertaProcessing":
            backend.post_processor = processors.RobertaProcessing(
                tuple(post["sep"]), tuple(post["cls"]), trim_offsets=post.get("trim_offsets", True),
                add_prefix_space=True)
        # save_pretrained writes this to tokenizer_config.json; RoBERTa/GPT-2 classes would
        # otherwise rebuild the pre-tokenizer without the space when model/ is reloaded.
        tokenizer.add_prefix_space = True
        tokenizer.init_kwargs["add_prefix_space"] = True
    encoded = tokenizer([["a", "b"]], is_split_into_words=True, add_special_tokens=False)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    words = encoded.word_ids(0)
    second = [p for p, w in zip(pieces, words) if w == 1]
    if not second or not second[0].startswith("Ġ"):
        raise ModelError(f"{key}: this byte-level tokenizer does not mark pre-split words with the leading-space "
                         f"'Ġ' (its pre-tokenizer is {pre.get('type')}), so token classification would feed the "
                         f"model pieces it never saw; use a tokenizer whose pre_tokenizer is ByteLevel "
                         f"(GPT-2/RoBERTa style) or a BERT-family one")


def attention_kernel(name: str) -> str:
    """transformers' attn_implementation for backbone.attention ('auto' chooses by device)."""
    if name != "auto":
        return name
    import torch

    return "sdpa" if torch.cuda.is_available() else "eager"


def build_sequence_classifier(cfg: TextBackboneConfig, tokenizer: Any, label_names: list[str],
                              problem_type: str | None = None) -> Any:
    """AutoModelForSequenceClassification; problem_type 'regression' or
    'multi_label_classification' is saved in config.json so transformers applies the right loss."""
    updates: dict[str, Any] = label_metadata(label_names)
    if problem_type:
        updates["problem_type"] = problem_type
    model = build_model(cfg, tokenizer, "sequence_classification", **updates)
    if cfg.cls_only_last_layer:
        from fmctl.models.cls_only import use_cls_only_last_layer

        use_cls_only_last_layer(model)
    return model


def label_metadata(label_names: list[str]) -> dict[str, Any]:
    """num_labels, id2label and label2id as transformers' configs spell them."""
    id2label = dict(enumerate(label_names))
    return {"num_labels": len(label_names), "id2label": id2label, "label2id": {n: i for i, n in id2label.items()}}


def build_model(cfg: TextBackboneConfig, tokenizer: Any, head: str, grow_vocab: bool = False, **updates: Any) -> Any:
    """The backbone with transformers' `head` class on top, random or pretrained.

    `updates` are config attributes (labels, problem_type, ...). With grow_vocab, tokens the
    task added to the tokenizer (a separator) get new embedding rows; otherwise a tokenizer
    larger than the model's vocabulary is an error."""
    import torch
    import transformers

    _quiet_transformers()
    auto = getattr(transformers, HEADS[head])
    if cfg.pretrained:
        where = pretrained.resolve(cfg.pretrained)
        check_pretrained_folder(cfg.name, where)
        try:
            config = transformers.AutoConfig.from_pretrained(str(where), **updates)
        except OSError as exc:
            if isinstance(where, str):
                raise pretrained.hub_error(where, "backbone.pretrained", exc) from None
            raise ModelError(f"backbone.pretrained: cannot read config.json in '{where}' ({exc})") from None
        _check_family(cfg.name, config.model_type, where)
        if config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id
        config._attn_implementation = attention_kernel(cfg.attention)
        try:
            model = auto.from_pretrained(str(where), config=config, ignore_mismatched_sizes=True, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise ModelError(f"backbone.pretrained: cannot load weights from '{where}' "
                             f"({' '.join(str(exc).split())[:200]})") from None
        spec = getattr(model.config, "fmctl_head", None)
        if spec:  # an MLP head from `fmctl customize`: keep it when the labels still fit, else a fresh linear head
            if spec["out_features"] == getattr(model.config, "num_labels", None) and isinstance(where, Path):
                from fmctl.customize.head import restore_head

                restore_head(model, spec, where)
            else:
                del model.config.fmctl_head
    else:
        config = _fresh_config(cfg, tokenizer)
        for key, value in updates.items():
            setattr(config, key, value)
        model = auto.from_config(config, attn_implementation=attention_kernel(cfg.attention))
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        if not grow_vocab:
            raise ModelError(f"backbone.tokenizer: the tokenizer has {len(tokenizer)} tokens but the model's embedding "
                             f"holds {vocab}; use the tokenizer that came with the model")
        model.resize_token_embeddings(len(tokenizer))
    return model


def _fresh_config(cfg: TextBackboneConfig, tokenizer: Any) -> Any:
    """The transformers config of a from-scratch model: the family's own (fmctl.backbones)."""
    from fmctl.backbones import family

    return family(cfg.name).fresh_config(cfg, tokenizer)


def _check_family(name: str, model_type: str | None, where: Any) -> None:
    """Refuse a model type that another family declares (a decoder for bert, a CvT image
    model for any text family); unknown types are let through."""
    from fmctl.backbones import family, names

    for other in names():
        declared = family(other)
        if other != name and model_type in declared.model_types:
            raise ModelError(f"backbone.pretrained: '{where}' is {declared.kind} ({model_type}); use backbone={other}")


def save(model: Any, tokenizer: Any, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def load_for_inference(folder: Path, head: str = "sequence_classification") -> tuple[Any, Any]:
    """model/ as transformers' `head` class reloads it, and its tokenizer."""
    import torch
    import transformers

    _quiet_transformers()
    model = getattr(transformers, HEADS[head]).from_pretrained(str(folder), dtype=torch.float32)
    spec = getattr(model.config, "fmctl_head", None)
    if spec:  # an MLP head written by `fmctl customize` (customize.head.layers >= 2)
        from fmctl.customize.head import restore_head

        restore_head(model, spec, folder)
    if head == "sequence_classification":  # exact, and faster for eval, export and predict
        from fmctl.models.cls_only import use_cls_only_last_layer

        use_cls_only_last_layer(model)
    return model, transformers.AutoTokenizer.from_pretrained(str(folder))


def load_tokenizer_only(folder: Path) -> Any:
    from transformers import AutoTokenizer

    _quiet_transformers()
    return AutoTokenizer.from_pretrained(str(folder))


def build_language_model(cfg: TextBackboneConfig, tokenizer: Any, causal: bool) -> Any:
    """BertForMaskedLM / GPT2LMHeadModel (or the pretrained folder's family) for pretraining."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    _quiet_transformers()
    auto = AutoModelForCausalLM if causal else AutoModelForMaskedLM
    if cfg.pretrained:
        where = pretrained.resolve(cfg.pretrained)
        check_pretrained_folder(cfg.name, where)
        config = AutoConfig.from_pretrained(str(where))
        _check_family(cfg.name, config.model_type, where)
        if isinstance(where, Path) and any((where / n).is_file() for n in ("tokenizer.json", "vocab.txt", "vocab.json")):
            own = AutoTokenizer.from_pretrained(str(where))
            if own.get_vocab() != tokenizer.get_vocab():
                raise ModelError(f"data.prepared: the corpus was tokenised with a different tokenizer than "
                                 f"backbone.pretrained uses; prepare it with tokenizer.path={where}")
        config._attn_implementation = attention_kernel(cfg.attention)
        model = auto.from_pretrained(str(where), config=config, dtype=torch.float32)
    else:
        config = _fresh_config(cfg, tokenizer)
        model = auto.from_config(config, attn_implementation=attention_kernel(cfg.attention))
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ModelError(f"data.prepared: its tokenizer has {len(tokenizer)} tokens but the model's embedding "
                         f"holds {vocab}")
    return model

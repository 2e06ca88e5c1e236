"""Train a tokenizer on the training texts when a from-scratch backbone has none.

Uses the `tokenizers` library (WordPiece for BERT, byte-level BPE for GPT, SentencePiece-
style BPE for T5) and wraps the result so that the folder saved into model/ loads with
`AutoTokenizer.from_pretrained`.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

BERT_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                 "mask_token": "[MASK]"}
GPT_SPECIALS = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                "pad_token": "<pad>"}
# T5's own ids: pad 0 (also the decoder start token), end of sequence 1, unknown 2.
T5_SPECIALS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_tokenizer(texts: Iterable[str], kind: Literal["wordpiece", "bpe", "t5"], vocab_size: int,
                    model_max_length: int, alphabet: Iterable[str] | None = None):
    """Return a transformers PreTrainedTokenizerFast trained on `texts`.

    WordPiece needs the corpus's characters up front (see below): pass `alphabet` (raw
    characters seen in the texts) to stream `texts` once; otherwise they are held in memory."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "wordpiece":
        specials = list(dict.fromkeys(BERT_SPECIALS.values()))
        normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
        # The trainer numbers '##c' continuation pieces in hash-map order, so ties between
        # equally frequent merges would break differently from run to run. Reserving them
        # up front in sorted order makes the vocabulary a function of the texts alone.
        if alphabet is None:
            texts = list(texts)
            alphabet = {c for t in texts for c in t}
        alphabet = sorted({c for raw in alphabet for c in normalizer.normalize_str(raw)} - {" ", "\t", "\n"})
        reserved = specials + [f"##{c}" for c in alphabet]
        draft = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        draft.normalizer = normalizer
        draft.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size + len(alphabet), special_tokens=reserved,
                                            min_frequency=2, show_progress=False)
        draft.train_from_iterator(texts, trainer=trainer)
        tok = Tokenizer(models.WordPiece(vocab=draft.get_vocab(), unk_token="[UNK]"))
        tok.add_special_tokens(specials)  # only the real specials are special
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                                       model_input_names=["input_ids", "token_type_ids", "attention_mask"],
                                       **BERT_SPECIALS)
    if kind == "bpe":
        specials = list(dict.fromkeys(GPT_SPECIALS.values()))
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, min_frequency=2, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        eos = tok.token_to_id("<|endoftext|>")
        # The end-of-text token closes every input: last-token classifiers read it.
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="$A <|endoftext|>", pair="$A <|endoftext|> $B:1 <|endoftext|>:1",
                                          special_tokens=[("<|endoftext|>", eos)]),
        ])
        return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                                       model_input_names=["input_ids", "attention_mask"], **GPT_SPECIALS)
    if kind == "t5":
        # Words keep their leading-space marker wherever they stand ('▁word' at the start
        # of a text too), as SentencePiece does, so a word is one token in every position.
        specials = list(T5_SPECIALS.values())
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, min_frequency=2,
                                      show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        eos = tok.token_to_id("</s>")
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B:1 </s>:1",
                                                           special_tokens=[("</s>", eos)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                                       model_input_names=["input_ids", "attention_mask"], **T5_SPECIALS)
    raise ValueError(f"unknown tokenizer kind {kind!r}")


def vocab_note(kind: str, requested: int, tokenizer: Any) -> str | None:
    """Why a vocabulary trained by train_tokenizer is not the size asked for (None when
    it is), so a surprising vocab_size in a report explains itself."""
    size = len(tokenizer)
    if size == requested:
        return None
    short = ("the training documents offer no more pieces seen at least twice (min_frequency=2); more text gives a "
             "larger vocabulary")
    if kind == "wordpiece" and size > requested:
        reserved = sum(1 for token in tokenizer.get_vocab() if token.startswith("##") and len(token) == 3)
        why = (f"vocabulary: {size} tokens, not {requested}: WordPiece adds one '##' continuation piece per distinct "
               f"character of the corpus ({reserved} here) to the size asked for, reserved up front so the "
               f"vocabulary is the same on every run")
        if size == requested + reserved:
            return why
        return f"{why}; even so, {short}"
    if kind == "bpe":
        base = 256 + len(set(GPT_SPECIALS.values()))
        if size == base and requested < base:
            return (f"vocabulary: {size} tokens, not {requested}: byte-level BPE starts from 256 byte tokens and "
                    f"{base - 256} special tokens before any merge; ask for more than {base} to get merged pieces")
    if size < requested:
        return f"vocabulary: {size} tokens, fewer than the {requested} asked for: {short}"
    return f"vocabulary: {size} tokens, more than the {requested} asked for"

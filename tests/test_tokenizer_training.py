"""Tokenizers trained by fmctl: deterministic, and loadable by transformers alone."""
import random

import pytest

from fmctl.data.tokenizer_training import train_tokenizer
from tests.helpers import review


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(0)
    return [review(rng, rng.choice(["positive", "negative"])) for _ in range(400)]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_training_is_deterministic(texts, kind):
    vocabs = [train_tokenizer(texts, kind, 500, 64).get_vocab() for _ in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_saved_tokenizer_loads_with_autotokenizer(texts, kind, tmp_path):
    from transformers import AutoTokenizer

    tok = train_tokenizer(texts, kind, 500, 64)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    sample = texts[:5]
    assert loaded(sample)["input_ids"] == tok(sample)["input_ids"]
    assert loaded.pad_token_id is not None and loaded.pad_token_id == tok.pad_token_id


def test_bert_pairs_get_segment_ids_and_specials(texts):
    tok = train_tokenizer(texts, "wordpiece", 500, 64)
    enc = tok("great screen", "awful battery")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2
    second = tokens.index("[SEP]") + 1
    assert set(enc["token_type_ids"][:second]) == {0} and set(enc["token_type_ids"][second:]) == {1}
    assert "great" in tokens  # frequent words become whole tokens


def test_gpt_inputs_end_with_end_of_text(texts):
    tok = train_tokenizer(texts, "bpe", 500, 64)
    ids = tok("great screen")["input_ids"]
    assert ids[-1] == tok.eos_token_id and tok.pad_token_id != tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "great screen"

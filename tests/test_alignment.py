"""Round trips between words or characters and sub-word tokens, on generated inputs
(hypothesis) with a WordPiece tokenizer fmctl trained: word tags survive the trip to
first pieces and back, and answer character spans survive the trip to token spans and
back in every window that holds them."""
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmctl.data.alignment import (
    NO_WORD, char_span_to_tokens, first_pieces, token_labels, tokens_to_char_span, word_predictions,
)
from fmctl.data.collate import IGNORE_INDEX
from fmctl.data.tokenizer_training import train_tokenizer

WORDS = ["river", "stone", "naïve", "café", "x-ray", "don't", "3.14", "éclair", "zebra", "q", "ab", "the", "über",
         "🙂", "co-op", "a.b.c", "mango", "unbelievably", "Ωmega"]

# A soft hyphen alone is removed by BERT's normaliser: a word without any token.
word = st.one_of(st.sampled_from(WORDS + ["\u00ad"]),
                 st.text(alphabet="abcdefghijklmnopqrstuvwxyzé'-.", min_size=1, max_size=12))
sentences = st.lists(word, min_size=1, max_size=25)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(300)]
    return train_tokenizer(texts, "wordpiece", 200, 512)


@SETTINGS
@given(words=sentences, data=st.data())
def test_word_tags_round_trip_through_first_pieces(tokenizer, words, data):
    tags = data.draw(st.lists(st.integers(0, 6), min_size=len(words), max_size=len(words)))
    encoded = tokenizer(words, is_split_into_words=True)
    index = first_pieces(encoded.word_ids())
    labels = token_labels(index, tags)
    # Every word that has tokens has exactly one first piece, and only there a label.
    has_tokens = {w for w in encoded.word_ids() if w is not None}
    assert sorted(w for w in index if w != NO_WORD) == sorted(has_tokens)
    assert all((label == IGNORE_INDEX) == (w == NO_WORD) for label, w in zip(labels, index))
    # A model that predicts each token's training label (anything elsewhere) gives back the tags.
    noise = [label if label != IGNORE_INDEX else 99 for label in labels]
    back, missing = word_predictions(index, noise, len(words), fill=-1)
    assert back == [t if i in has_tokens else -1 for i, t in enumerate(tags)]
    assert missing == len(words) - len(has_tokens)


@SETTINGS
@given(words=sentences, limit=st.integers(4, 20))
def test_words_cut_by_truncation_get_the_fill_value(tokenizer, words, limit):
    encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=limit)
    index = first_pieces(encoded.word_ids())
    back, missing = word_predictions(index, [1] * len(index), len(words), fill=0)
    kept = {w for w in index if w != NO_WORD}
    assert back == [1 if i in kept else 0 for i in range(len(words))] and missing == len(words) - len(kept)


@SETTINGS
@given(words=st.lists(st.sampled_from(WORDS), min_size=3, max_size=60), data=st.data())
def test_answer_spans_round_trip_in_every_window_that_holds_them(tokenizer, words, data):
    spaces = data.draw(st.lists(st.sampled_from([" ", "  ", " \n "]), min_size=len(words), max_size=len(words)))
    context, starts = "", []
    for w, gap in zip(words, spaces):
        context += gap
        starts.append(len(context))
        context += w
    first = data.draw(st.integers(0, len(words) - 1))
    last = data.draw(st.integers(first, min(first + 2, len(words) - 1)))
    start_char, end_char = starts[first], starts[last] + len(words[last])
    stride = 16
    answer_tokens = len(tokenizer(context[start_char:end_char], add_special_tokens=False)["input_ids"])
    encoded = tokenizer("what is it ?", context, truncation="only_second", max_length=48, stride=stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True)
    found = 0
    for f in range(len(encoded["input_ids"])):
        sequence = encoded.sequence_ids(f)
        offsets = [tuple(s) if sequence[k] == 1 else None for k, s in enumerate(encoded["offset_mapping"][f])]
        inside = [s for s in offsets if s is not None]
        holds = inside[0][0] <= start_char and end_char <= inside[-1][1]
        span = char_span_to_tokens(offsets, start_char, end_char)
        assert (span is not None) == holds
        if span is not None:
            found += 1
            assert tokens_to_char_span(offsets, *span) == (start_char, end_char)
    if answer_tokens <= stride:  # windows overlap by `stride` tokens, so a short answer is always whole in one
        assert found >= 1
